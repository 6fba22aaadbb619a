package pipeline

import (
	"sync"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/chainwatch/chainwatch/ledgerclient/contract"
	"github.com/chainwatch/chainwatch/pipeline/incidents"
)

// Trust finders: the stages that raise trust findings into one trustAlerts.
const (
	finderFlows = iota
	finderTelemetry
	finders
)

// trustAlerts groups trust findings — rogue, revoked, bad-signature,
// firmware-mismatch — into incidents, as behaviour windows are grouped: one
// incident per device and kind per episode, whichever stage finds it (an
// unknown device shows in its flows and in its telemetry alike). The first
// finding opens the incident; further findings extend it without a word; it
// closes once QuietWindows windows of event time pass without one, and a
// later finding opens the next episode. A rogue device that sends a
// thousand records a minute is one incident, not a thousand alerts.
//
// The stages read their topics at their own pace, so each keeps its own
// event-time clock (the newest time it has seen), and an episode closes
// only once every stage that contributed to it has moved past its quiet
// windows. It is safe for concurrent use.
type trustAlerts struct {
	window time.Duration
	quiet  int // windows without a finding that close an episode

	mu     sync.Mutex
	open   map[string]*trustEpisode
	newest [finders]time.Time
	// closed holds closings found while raising, handed out by expire.
	closed  []*contract.Alert
	metrics *Metrics
}

type trustEpisode struct {
	kind, device, profile string
	first, last           time.Time // window starts
	windows               int
	by                    [finders]bool // stages that found it
	id                    string        // the incident id, fixed at its opening
	evidence              contract.Evidence
}

func newTrustAlerts(window time.Duration, rule incidents.Rule, metrics *Metrics) *trustAlerts {
	return &trustAlerts{window: window, quiet: rule.WithDefaults().M, open: map[string]*trustEpisode{}, metrics: metrics}
}

// raise records a finding of stage finder and returns the alert that opens
// its incident, or nil when the finding belongs to an incident already open.
func (a *trustAlerts) raise(finder int, kind, deviceKey, profile string, t time.Time, m kafka.Message, detail string) *contract.Alert {
	a.mu.Lock()
	defer a.mu.Unlock()
	start := t.Truncate(a.window)
	key := kind + "\x00" + deviceKey
	if e := a.open[key]; e != nil {
		if start.Sub(e.last) > a.quietSpan() {
			a.closed = append(a.closed, a.event(e, contract.IncidentClosed, 1))
		} else {
			e.by[finder] = true
			if start.After(e.last) {
				e.last = start
				e.windows++
			}
			if start.Before(e.first) { // a slower stage's earlier finding
				e.first = start
			}
			return nil
		}
	}
	e := &trustEpisode{kind: kind, device: deviceKey, profile: profile, first: start, last: start, windows: 1,
		evidence: contract.Evidence{Topic: m.Topic, Partition: int32(m.Partition), Offsets: []int64{m.Offset, m.Offset}, Detail: detail}}
	e.by[finder] = true
	a.open[key] = e
	return a.event(e, contract.IncidentOpened, 0)
}

func (a *trustAlerts) quietSpan() time.Duration { return time.Duration(a.quiet) * a.window }

// expire advances stage finder's event-time clock to now, closes the
// episodes every contributing stage has moved QuietWindows windows past,
// and hands out closings found while raising.
func (a *trustAlerts) expire(finder int, now time.Time, out []*contract.Alert) []*contract.Alert {
	a.mu.Lock()
	defer a.mu.Unlock()
	if now.After(a.newest[finder]) {
		a.newest[finder] = now
	}
	out = append(out, a.closed...)
	a.closed = a.closed[:0]
	for key, e := range a.open {
		done := true
		for f := range finders {
			if e.by[f] && a.newest[f].Truncate(a.window).Sub(e.last) <= a.quietSpan() {
				done = false
			}
		}
		if done {
			out = append(out, a.event(e, contract.IncidentClosed, 1))
			delete(a.open, key)
		}
	}
	return out
}

// event is the alert of an incident event. The incident's id comes from
// its kind, device and first window; a finding a slower stage makes
// earlier than the opening one widens the span but keeps the id.
func (a *trustAlerts) event(e *trustEpisode, status string, seq int) *contract.Alert {
	id := contract.IncidentID(e.kind, e.device, e.first)
	if status != contract.IncidentOpened {
		id = e.id
	} else {
		e.id = id
	}
	return &contract.Alert{
		ID: contract.IncidentEventID(id, status, seq), Kind: e.kind, DeviceID: e.device, Profile: e.profile,
		WindowStart: e.first, WindowEnd: e.last.Add(a.window), Score: 1, Confidence: "high",
		Evidence: e.evidence,
		Incident: &contract.Incident{ID: id, Status: status, Seq: seq, Windows: e.windows},
	}
}
