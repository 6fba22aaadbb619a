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
//
// Open episodes outlive a restart and a partition moving to another
// instance: each stage saves, with its state, the episodes it opened or
// closed since its last save (snapshot), once their alerts are in the
// outbox, and a stage taking partitions on restores the episodes found on
// them (restore). Without that, an ongoing episode would open a second
// incident after a restart, and the first would never close.
type trustAlerts struct {
	window time.Duration
	quiet  int // windows without a finding that close an episode

	mu     sync.Mutex
	open   map[string]*trustEpisode
	newest [finders]time.Time
	// closed holds closings found while raising, handed out by expire.
	closed  []*contract.Alert
	metrics *Metrics
	// changed holds, per stage, the episodes (by key) it opened, extended
	// or handed out the closing of since its last saved snapshot; a
	// closed one is saved as a tombstone.
	changed [finders]map[string]*trustEpisode
	// closedEpisodes are the episodes of the closings in closed.
	closedEpisodes []*trustEpisode
}

type trustEpisode struct {
	kind, device, profile string
	first, last           time.Time // window starts
	windows               int
	by                    [finders]bool // stages that found it
	id                    string        // the incident id, fixed at its opening
	evidence              contract.Evidence
	opener                int  // the stage that opened it
	closed                bool // its closing was handed out
	// durable is set once the opener has saved it, after its opening
	// alert reached the outbox: until then no other stage saves it, lest
	// a restart find it open and its opening never sent.
	durable bool
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
	key := trustKey(kind, deviceKey)
	if e := a.open[key]; e != nil {
		if start.Sub(e.last) > a.quietSpan() {
			a.closed = append(a.closed, a.event(e, contract.IncidentClosed, 1))
			a.closedEpisodes = append(a.closedEpisodes, e)
		} else {
			e.by[finder] = true
			if start.After(e.last) {
				e.last = start
				e.windows++
				a.mark(finder, key, e) // saved as it extends, so a restart resumes it
			}
			if start.Before(e.first) { // a slower stage's earlier finding
				e.first = start
			}
			return nil
		}
	}
	e := &trustEpisode{kind: kind, device: deviceKey, profile: profile, first: start, last: start, windows: 1, opener: finder,
		evidence: contract.Evidence{Topic: m.Topic, Partition: int32(m.Partition), Offsets: []int64{m.Offset, m.Offset}, Detail: detail}}
	e.by[finder] = true
	a.open[key] = e
	a.mark(finder, key, e)
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
	for _, e := range a.closedEpisodes {
		e.closed = true
		a.mark(finder, trustKey(e.kind, e.device), e)
	}
	a.closedEpisodes = a.closedEpisodes[:0]
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
			e.closed = true
			a.mark(finder, key, e)
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
	alert := &contract.Alert{
		ID: contract.IncidentEventID(id, status, seq), Kind: e.kind, DeviceID: e.device, Profile: e.profile,
		WindowStart: e.first, WindowEnd: e.last.Add(a.window), Score: 1, Confidence: "high",
		Evidence: e.evidence,
		Incident: &contract.Incident{ID: id, Status: status, Seq: seq, Windows: e.windows},
	}
	if status == contract.IncidentOpened {
		alert.Incident.OpenedBy = "finding"
	}
	return alert
}

func trustKey(kind, device string) string { return kind + "\x00" + device }

// mark notes that stage finder has handed out an event of episode e: its
// next snapshot saves it. A closed episode whose key a newer one holds
// already is not saved as closed: the newer one's record replaces it.
func (a *trustAlerts) mark(finder int, key string, e *trustEpisode) {
	if e.closed {
		if cur := a.open[key]; cur != nil && cur != e {
			return
		}
	}
	if a.changed[finder] == nil {
		a.changed[finder] = map[string]*trustEpisode{}
	}
	a.changed[finder][key] = e
}

// trustRecord is an episode as the state store keeps it (JSON).
type trustRecord struct {
	Kind     string            `json:"kind"`
	Device   string            `json:"device"`
	Profile  string            `json:"profile,omitempty"`
	ID       string            `json:"incident_id"`
	First    time.Time         `json:"first"`
	Last     time.Time         `json:"last"`
	Windows  int               `json:"windows"`
	By       [finders]bool     `json:"by"`
	Opener   int               `json:"opener"`
	Evidence contract.Evidence `json:"evidence"`
	// Clocks are the stages' event-time clocks when it was saved.
	Clocks [finders]time.Time `json:"clocks"`
}

// trustSnapshot is what a stage saves of the episodes it handed out events
// of: a record for each open one, nil for each closed one, keyed by
// trustKey.
type trustSnapshot struct {
	records  map[string]*trustRecord
	episodes map[string]*trustEpisode
}

// snapshot returns the episodes stage finder opened or closed since its
// last saved snapshot. Call it once the alerts the stage was handed are in
// the outbox, and saved once the snapshot is in the state store.
func (a *trustAlerts) snapshot(finder int) trustSnapshot {
	a.mu.Lock()
	defer a.mu.Unlock()
	var snap trustSnapshot
	if len(a.changed[finder]) == 0 {
		return snap
	}
	snap.records = make(map[string]*trustRecord, len(a.changed[finder]))
	snap.episodes = make(map[string]*trustEpisode, len(a.changed[finder]))
	for key, e := range a.changed[finder] {
		if !e.closed && !e.durable && e.opener != finder {
			continue // the opener saves it first
		}
		snap.episodes[key] = e
		if e.closed {
			snap.records[key] = nil
			continue
		}
		snap.records[key] = &trustRecord{Kind: e.kind, Device: e.device, Profile: e.profile, ID: e.id, First: e.first, Last: e.last,
			Windows: e.windows, By: e.by, Opener: e.opener, Evidence: e.evidence, Clocks: a.newest}
	}
	return snap
}

// saved forgets the changes a snapshot saved; those made since stay for
// the next one.
func (a *trustAlerts) saved(finder int, snap trustSnapshot) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for key, e := range snap.episodes {
		if e.opener == finder {
			e.durable = true
		}
		if a.changed[finder][key] == e {
			delete(a.changed[finder], key)
		}
	}
}

// restore opens again the saved episodes whose evidence lies on a partition
// the calling stage takes on (mine), unless an episode of their device and
// kind is open already, and advances the stages' clocks to where they were
// when the episodes were saved.
func (a *trustAlerts) restore(recs map[string]*trustRecord, mine func(topic string, partition int32) bool) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	n := 0
	for key, r := range recs {
		if r == nil || !mine(r.Evidence.Topic, r.Evidence.Partition) || a.open[key] != nil {
			continue
		}
		a.open[key] = &trustEpisode{kind: r.Kind, device: r.Device, profile: r.Profile, first: r.First, last: r.Last,
			windows: r.Windows, by: r.By, id: r.ID, evidence: r.Evidence, opener: r.Opener, durable: true}
		for f := range finders {
			if r.Clocks[f].After(a.newest[f]) {
				a.newest[f] = r.Clocks[f]
			}
		}
		n++
	}
	return n
}

// assigned is called by a stage taking partitions of topic on: it restores
// the saved episodes found on them, and returns how many it restored. At
// the stage's first assignment (first), which is this instance's whole
// share, it also drops the episodes restored at start that lie on the
// topic's other partitions: another instance's.
func (a *trustAlerts) assigned(recs map[string]*trustRecord, topic string, parts []topicPartition, first bool) int {
	mine := map[int32]bool{}
	for _, tp := range parts {
		mine[int32(tp.partition)] = true
	}
	if first {
		a.drop(topic, func(p int32) bool { return !mine[p] })
	}
	return a.restore(recs, func(t string, p int32) bool { return t == topic && mine[p] })
}

// forget drops the open episodes whose evidence lies on a partition leaving
// this instance, without closing them: the partition's next owner restores
// them and closes them in their time.
func (a *trustAlerts) forget(topic string, partition int32) {
	a.drop(topic, func(p int32) bool { return p == partition })
}

// drop forgets, without closing them, the open episodes found on topic's
// partitions that match.
func (a *trustAlerts) drop(topic string, match func(partition int32) bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for key, e := range a.open {
		if e.evidence.Topic == topic && match(e.evidence.Partition) {
			delete(a.open, key)
		}
	}
}
