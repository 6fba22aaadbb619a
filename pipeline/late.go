package pipeline

import (
	"context"
	"log/slog"
	"time"
)

// lateEvery is how often lateRecords logs, at most.
const lateEvery = time.Minute

// lateRecords reports the flow records refused as too late for their
// window, at most once every lateEvery. Such a record stays in Kafka and
// is anchored, but no window counts it: the exporter or producer sent it
// further behind its partition's newest event time than the partition
// waited (window.allowed_lateness, or as far as its records had lately
// come, up to a window: partitionWindows.wait), and
// chainwatch_records_late_total alone does not say which setting to
// change.
type lateRecords struct {
	last   time.Time     // when it last logged
	n      int64         // records refused since
	behind time.Duration // the furthest of them behind their partition's newest event time
}

// add counts one refused record, behind its partition's newest event time
// by behind, and logs what it has counted when lateEvery has passed since
// it last did (at once, the first time).
func (l *lateRecords) add(ctx context.Context, log *slog.Logger, now time.Time, behind time.Duration) {
	l.n++
	l.behind = max(l.behind, behind)
	if !l.last.IsZero() && now.Sub(l.last) < lateEvery {
		return
	}
	log.LogAttrs(ctx, slog.LevelWarn, "flow records came after their window had closed and were not scored (they are kept in Kafka and anchored): they came further behind their partition's newest event time than it waited, the allowed lateness or, once records have come that far out of order, as far as they came, up to a window",
		slog.Int64("records", l.n), slog.Duration("most_behind_newest", l.behind), slog.String("setting", "window.allowed_lateness"))
	l.last, l.n, l.behind = now, 0, 0
}
