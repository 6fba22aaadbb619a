package pipeline

import (
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/chainwatch/chainwatch/ledgerclient/contract"
	"github.com/chainwatch/chainwatch/pipeline/incidents"
)

// trustAlerts groups trust findings — rogue, revoked, bad-signature,
// firmware-mismatch — into incidents, as behaviour windows are grouped: one
// incident per device and kind per episode. The first finding opens it;
// further findings extend it without a word; it closes once QuietWindows
// windows of event time pass without one, and a later finding opens the
// next episode. A rogue device that sends a thousand records a minute is
// one incident, not a thousand alerts.
type trustAlerts struct {
	window time.Duration
	quiet  int // windows without a finding that close an episode
	open   map[string]*trustEpisode
	// closed holds closings found while raising, handed out by expire.
	closed  []*contract.Alert
	metrics *Metrics
}

type trustEpisode struct {
	kind, device, profile string
	first, last           time.Time // window starts
	windows               int
	evidence              contract.Evidence
}

func newTrustAlerts(window time.Duration, rule incidents.Rule, metrics *Metrics) *trustAlerts {
	return &trustAlerts{window: window, quiet: rule.WithDefaults().M, open: map[string]*trustEpisode{}, metrics: metrics}
}

// raise records a finding and returns the alert that opens its incident,
// or nil when the finding belongs to an incident already open.
func (a *trustAlerts) raise(kind, deviceKey, profile string, t time.Time, m kafka.Message, detail string) *contract.Alert {
	start := t.Truncate(a.window)
	key := kind + "\x00" + deviceKey
	if e := a.open[key]; e != nil {
		if a.stale(e, start) {
			a.closed = append(a.closed, a.event(e, contract.IncidentClosed, 1))
		} else {
			if start.After(e.last) {
				e.last = start
				e.windows++
			}
			return nil
		}
	}
	e := &trustEpisode{kind: kind, device: deviceKey, profile: profile, first: start, last: start, windows: 1,
		evidence: contract.Evidence{Topic: m.Topic, Partition: int32(m.Partition), Offsets: []int64{m.Offset, m.Offset}, Detail: detail}}
	a.open[key] = e
	return a.event(e, contract.IncidentOpened, 0)
}

// stale reports whether an episode had QuietWindows quiet windows before
// the window starting at start.
func (a *trustAlerts) stale(e *trustEpisode, start time.Time) bool {
	return start.Sub(e.last) > time.Duration(a.quiet)*a.window
}

// expire closes the episodes that have been quiet for QuietWindows windows
// by event time now, and hands out closings found while raising.
func (a *trustAlerts) expire(now time.Time, out []*contract.Alert) []*contract.Alert {
	out = append(out, a.closed...)
	a.closed = a.closed[:0]
	start := now.Truncate(a.window)
	for key, e := range a.open {
		if a.stale(e, start) {
			out = append(out, a.event(e, contract.IncidentClosed, 1))
			delete(a.open, key)
		}
	}
	return out
}

func (a *trustAlerts) event(e *trustEpisode, status string, seq int) *contract.Alert {
	id := contract.IncidentID(e.kind, e.device, e.first)
	if a.metrics != nil {
		a.metrics.Incidents.WithLabelValues(e.kind, status).Inc()
	}
	return &contract.Alert{
		ID: contract.IncidentEventID(id, status, seq), Kind: e.kind, DeviceID: e.device, Profile: e.profile,
		WindowStart: e.first, WindowEnd: e.last.Add(a.window), Score: 1, Confidence: "high",
		Evidence: e.evidence,
		Incident: &contract.Incident{ID: id, Status: status, Seq: seq, Windows: e.windows},
	}
}
