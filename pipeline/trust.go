package pipeline

import (
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/chainwatch/chainwatch/ledgerclient/contract"
)

// trustAlerts raises trust findings — rogue, revoked, bad-signature,
// firmware-mismatch — at most once per device, kind and window. The id
// comes from the window, so a repeat would be idempotent anyway; the memo
// spares the sinks a call per record.
type trustAlerts struct {
	window time.Duration
	seen   map[string]time.Time
}

func newTrustAlerts(window time.Duration) *trustAlerts {
	return &trustAlerts{window: window, seen: map[string]time.Time{}}
}

// raise returns the alert for this finding, or nil when its window already
// raised one.
func (a *trustAlerts) raise(kind, deviceKey, profile string, t time.Time, m kafka.Message, detail string) *contract.Alert {
	start := t.Truncate(a.window)
	id := contract.AlertID(kind, deviceKey, start, start.Add(a.window), "")
	if _, ok := a.seen[id]; ok {
		return nil
	}
	a.seen[id] = start
	for k, at := range a.seen {
		if at.Before(start.Add(-2 * a.window)) {
			delete(a.seen, k)
		}
	}
	return &contract.Alert{
		ID: id, Kind: kind, DeviceID: deviceKey, Profile: profile,
		WindowStart: start, WindowEnd: start.Add(a.window), Score: 1, Confidence: "high",
		Evidence: contract.Evidence{Topic: m.Topic, Partition: int32(m.Partition), Offsets: []int64{m.Offset, m.Offset}, Detail: detail},
	}
}
