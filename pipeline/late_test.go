package pipeline

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"testing"
	"time"
)

// A record refused as too late for its window is logged at once, naming
// the setting to change; those refused in the next minute are counted into
// one line, with the furthest behind.
func TestLateRecordsAreLoggedAtMostOnceAMinute(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&buf, nil))
	ctx := context.Background()
	t0 := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	var l lateRecords
	l.add(ctx, log, t0, 62*time.Second)
	l.add(ctx, log, t0.Add(10*time.Second), 15*time.Second)
	l.add(ctx, log, t0.Add(30*time.Second), 90*time.Second)
	l.add(ctx, log, t0.Add(61*time.Second), 20*time.Second)
	l.add(ctx, log, t0.Add(62*time.Second), 30*time.Second)
	type line struct {
		Level   string        `json:"level"`
		Records int64         `json:"records"`
		Behind  time.Duration `json:"most_behind_newest"`
		Setting string        `json:"setting"`
	}
	var got []line
	for _, raw := range bytes.Split(bytes.TrimSpace(buf.Bytes()), []byte("\n")) {
		var ln line
		if err := json.Unmarshal(raw, &ln); err != nil {
			t.Fatalf("%s: %v", raw, err)
		}
		got = append(got, ln)
	}
	want := []line{
		{"WARN", 1, 62 * time.Second, "window.allowed_lateness"},
		{"WARN", 3, 90 * time.Second, "window.allowed_lateness"},
	}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("logged %+v, want %+v", got, want)
	}
}
