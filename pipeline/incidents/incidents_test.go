package incidents

import (
	"reflect"
	"testing"
)

// run feeds levels for consecutive windows from index 100 (a −1 skips a
// window: the device sent nothing) and returns the events.
func run(t *testing.T, s *State, r Rule, levels ...int) []Event {
	t.Helper()
	var out []Event
	for i, l := range levels {
		if l < 0 {
			continue
		}
		out = s.Observe(r, Window{Index: int64(100 + i), Level: Level(l), Score: float64(l) / 4}, out)
	}
	return out
}

func TestKOfNOpensAndMQuietClose(t *testing.T) {
	var s State
	r := Rule{} // 2 of 3, 5 quiet
	// One anomalous window alone opens nothing; two within three do.
	ev := run(t, &s, r, 0, 1, 0, 0, 1, 0, 1, 1, 0, 0, 0, 0)
	want := []Event{
		{Status: Opened, Seq: 0, First: 104, Last: 106, Windows: 2, PeakScore: 0.25, PeakLevel: Low, OpenedBy: OpenedKOfN},
	}
	if !reflect.DeepEqual(ev, want) {
		t.Fatalf("events %+v, want %+v", ev, want)
	}
	// Four quiet windows (108–111) keep it open; the next window, with
	// 112 quiet as well, comes after five and closes it first.
	ev = s.Observe(r, Window{Index: 113}, nil)
	if len(ev) != 1 || ev[0].Status != Closed || ev[0].Windows != 3 || ev[0].Last != 107 || ev[0].Seq != 1 {
		t.Fatalf("closing %+v", ev)
	}
	if s.Open() {
		t.Fatal("still open")
	}
}

func TestExtremeWindowOpensAloneAndRisingPeakUpdates(t *testing.T) {
	var s State
	ev := run(t, &s, Rule{}, 0, 3, 1, 3)
	if len(ev) != 1 || ev[0].Status != Opened || ev[0].PeakLevel != High || ev[0].OpenedBy != OpenedExtreme {
		t.Fatalf("events %+v", ev)
	}
	s = State{}
	ev = run(t, &s, Rule{}, 1, 1, 2, 2, 3)
	if len(ev) != 3 || ev[1].Status != Updated || ev[1].PeakLevel != Medium || ev[2].PeakLevel != High || ev[2].Seq != 2 {
		t.Fatalf("events %+v", ev)
	}
}

// A device that falls silent has its incident closed by Expire once it has
// sent nothing for Silence windows; minutes without traffic are not quiet
// windows, so a lull in a sparse device's traffic does not split an
// episode into two incidents.
func TestSilenceClosesAndLullsAreNotQuiet(t *testing.T) {
	var s State
	r := Rule{Silence: 20}
	run(t, &s, r, 1, 1)
	if ev := s.Expire(r, 110, nil); len(ev) != 0 {
		t.Fatalf("closed after 9 silent windows: %+v", ev)
	}
	if ev := s.Expire(r, 121, nil); len(ev) != 1 || ev[0].Status != Closed || ev[0].Last != 101 {
		t.Fatalf("not closed after 20 silent windows: %+v", ev)
	}
	// Anomalous, a lull of 8 minutes, anomalous again: one incident.
	s = State{}
	ev := run(t, &s, r, 1, 1, -1, -1, -1, -1, -1, -1, -1, -1, 2, 0, -1, -1, 0, 0, -1, 0)
	want := []Event{
		{Status: Opened, Seq: 0, First: 100, Last: 101, Windows: 2, PeakScore: 0.25, PeakLevel: Low, OpenedBy: OpenedKOfN},
		{Status: Updated, Seq: 1, First: 100, Last: 110, Windows: 3, PeakScore: 0.5, PeakLevel: Medium},
	}
	if !reflect.DeepEqual(ev, want) {
		t.Fatalf("events %+v, want %+v", ev, want)
	}
	// The fifth window judged quiet closes it, whatever the minutes between.
	ev = s.Observe(r, Window{Index: 125}, nil)
	if len(ev) != 1 || ev[0].Status != Closed || ev[0].Last != 110 || ev[0].Windows != 3 {
		t.Fatalf("closing %+v", ev)
	}
	// Two anomalous windows 5 apart are two episodes' worth of nothing.
	s = State{}
	if ev := run(t, &s, Rule{}, 1, -1, -1, -1, -1, 1); len(ev) != 0 {
		t.Fatalf("events %+v", ev)
	}
	if err := (Rule{M: 10, Silence: 5}).Validate(); err == nil {
		t.Fatal("a silence shorter than m accepted")
	}
}

func TestStateCheckpointRoundTrip(t *testing.T) {
	var s State
	run(t, &s, Rule{}, 1, 2, 0, 3)
	b, _ := s.MarshalBinary()
	var g State
	if err := g.UnmarshalBinary(b); err != nil || g != s {
		t.Fatalf("round trip changed the state (%v): %+v vs %+v", err, g, s)
	}
	if err := g.UnmarshalBinary(b[:5]); err == nil {
		t.Fatal("damaged checkpoint accepted")
	}
	if err := (Rule{K: 4, N: 3}).Validate(); err == nil {
		t.Fatal("k > n accepted")
	}
}

// TestSustainedElevatedWindowsOpen: windows elevated but below the
// anomalous level open an incident once SK of the last SN are elevated
// (6 of 10 by default), not before; the incident then lasts while they
// do; a checkpoint of the earlier encoding still reads.
func TestSustainedElevatedWindowsOpen(t *testing.T) {
	var s State
	r := Rule{SK: 6, SN: 10} // what the detector sets from the model
	var ev []Event
	// Without the sustained rule, elevated windows open nothing.
	var off State
	for i := range 12 {
		if got := off.Observe(Rule{}, Window{Index: int64(200 + i), Score: 0.7, Elevated: true}, nil); len(got) != 0 {
			t.Fatalf("the sustained rule opened %+v while off", got)
		}
	}
	// Elevated every other window: 5 of 10 never opens…
	for i := range 12 {
		ev = s.Observe(r, Window{Index: int64(200 + i), Score: 0.7, Elevated: i%2 == 0}, ev)
	}
	if len(ev) != 0 {
		t.Fatalf("5 elevated of 10 opened %+v", ev)
	}
	// …two in a row more make 6 of the last 10.
	ev = s.Observe(r, Window{Index: 212, Score: 0.72, Elevated: true}, ev)
	ev = s.Observe(r, Window{Index: 213, Score: 0.75, Elevated: true}, ev)
	if len(ev) != 1 || ev[0].Status != Opened || ev[0].First != 204 || ev[0].Windows != 6 || ev[0].PeakLevel != Low || ev[0].OpenedBy != OpenedSustained {
		t.Fatalf("events %+v, want one opening from window 204 with 6 windows", ev)
	}
	// Still elevated: the incident goes on; then 5 quiet windows close it.
	ev = s.Observe(r, Window{Index: 214, Score: 0.7, Elevated: true}, nil)
	for i := range 5 {
		ev = s.Observe(r, Window{Index: int64(216 + i)}, ev)
	}
	if len(ev) != 1 || ev[0].Status != Closed || ev[0].Last != 214 || ev[0].Windows != 7 {
		t.Fatalf("closing %+v", ev)
	}
	// The encodings before elevated and persistent windows and the quiet
	// count were kept (6, 4 and 2 bytes shorter) restore with no such
	// history.
	s.elevated, s.persist, s.quiet = 0x3ff, 0x7, 3
	s.evidence = [EvidenceSlots]float32{0.25, 0.5}
	b, _ := s.MarshalBinary()
	var old State
	if err := old.UnmarshalBinary(b[:EncodingSizeV1]); err != nil || old.elevated != 0 || old.persist != 0 || old.lastIndex != s.lastIndex {
		t.Fatalf("v1 checkpoint: %v, %+v", err, old)
	}
	var v2 State
	if err := v2.UnmarshalBinary(b[:EncodingSizeV2]); err != nil || v2.elevated != 0x3ff || v2.persist != 0 {
		t.Fatalf("v2 checkpoint: %v, %+v", err, v2)
	}
	var v3 State
	if err := v3.UnmarshalBinary(b[:EncodingSizeV3]); err != nil || v3.persist != 0x7 || v3.quiet != 0 {
		t.Fatalf("v3 checkpoint: %v, %+v", err, v3)
	}
	var v4 State
	if err := v4.UnmarshalBinary(b[:EncodingSizeV4]); err != nil || v4.quiet != 3 || v4.evidence != ([EvidenceSlots]float32{}) {
		t.Fatalf("v4 checkpoint: %v, %+v", err, v4)
	}
	var back State
	if err := back.UnmarshalBinary(b); err != nil || back != s {
		t.Fatalf("round trip: %v, %+v != %+v", err, back, s)
	}
}

// observeAll feeds s the windows ws in turn and returns their events.
func observeAll(s *State, r Rule, ws ...Window) []Event {
	var ev []Event
	for _, w := range ws {
		ev = s.Observe(r, w, ev)
	}
	return ev
}

// TestEvidenceAddsUp: the evidence rule opens when the last EN windows'
// shares of its level sum to at least 1 and the newest holds at least
// 1/EN of it — three windows each below every other rule's level, a new
// host and the host again twice — and not when the newest is the weak
// one, nor across a gap that pushes a window out of the span, nor while
// the rule is off. The incident begins at the oldest elevated window of
// the span. Its state survives a checkpoint.
func TestEvidenceAddsUp(t *testing.T) {
	r := Rule{EN: 3}
	var s State
	var ev []Event
	ev = s.Observe(r, Window{Index: 500, Score: 0.7, Evidence: 0.30, Elevated: true}, ev)
	ev = s.Observe(r, Window{Index: 501, Score: 0.7, Evidence: 0.33, Elevated: true}, ev)
	if len(ev) != 0 {
		t.Fatalf("0.63 of the evidence opened %+v", ev)
	}
	ev = s.Observe(r, Window{Index: 502, Score: 0.72, Evidence: 0.38}, ev)
	if len(ev) != 1 || ev[0].Status != Opened || ev[0].OpenedBy != OpenedEvidence || ev[0].First != 500 || ev[0].Windows != 3 || ev[0].PeakLevel != Low {
		t.Fatalf("events %+v, want one evidence opening from window 500 with 3 windows", ev)
	}
	// The newest window must hold its even share: 0.45 + 0.45 then 0.2
	// sums past 1, but the evidence was in the windows before.
	var weak State
	ev = nil
	for i, e := range []float64{0.45, 0.45, 0.2} {
		ev = weak.Observe(r, Window{Index: int64(600 + i), Score: 0.6, Evidence: e}, ev)
	}
	if len(ev) != 0 {
		t.Fatalf("a weak newest window opened %+v", ev)
	}
	// Windows without traffic in between: the span is in windows of
	// time, so 0.5 at 700 has left it by 703.
	var gap State
	ev = observeAll(&gap, r, Window{Index: 700, Score: 0.6, Evidence: 0.5, Elevated: true},
		Window{Index: 702, Score: 0.6, Evidence: 0.3, Elevated: true}, Window{Index: 703, Score: 0.6, Evidence: 0.4})
	if len(ev) != 0 {
		t.Fatalf("evidence from outside the span opened %+v", ev)
	}
	ev = gap.Observe(r, Window{Index: 704, Score: 0.6, Evidence: 0.35}, ev)
	if len(ev) != 1 || ev[0].OpenedBy != OpenedEvidence || ev[0].First != 702 || ev[0].Windows != 2 {
		t.Fatalf("events %+v, want an evidence opening from window 702 with 2 (elevated) windows", ev)
	}
	// A device judged on two partitions has a minute's parts judged apart:
	// the minute's evidence is its largest part's, and an older minute's
	// part adds to its own place.
	var split State
	ev = observeAll(&split, r, Window{Index: 750, Score: 0.6, Evidence: 0.2}, Window{Index: 751, Score: 0.6, Evidence: 0.4, Elevated: true},
		Window{Index: 750, Score: 0.6, Evidence: 0.3, Elevated: true}, Window{Index: 751, Score: 0.6, Evidence: 0.1})
	if len(ev) != 0 {
		t.Fatalf("0.3 + 0.4 opened %+v", ev)
	}
	ev = split.Observe(r, Window{Index: 752, Score: 0.6, Evidence: 0.34}, ev)
	if len(ev) != 1 || ev[0].OpenedBy != OpenedEvidence || ev[0].First != 750 {
		t.Fatalf("events %+v, want an evidence opening from window 750", ev)
	}
	// Off (EN 0), the same windows open nothing.
	var off State
	ev = nil
	for i := range 4 {
		ev = off.Observe(Rule{}, Window{Index: int64(800 + i), Score: 0.6, Evidence: 0.5}, ev)
	}
	if len(ev) != 0 {
		t.Fatalf("the evidence rule opened %+v while off", ev)
	}
	// The last windows' evidence is checkpointed: restored after two
	// windows, the third opens.
	var a State
	a.Observe(r, Window{Index: 900, Score: 0.6, Evidence: 0.4}, nil)
	a.Observe(r, Window{Index: 901, Score: 0.6, Evidence: 0.4}, nil)
	b, _ := a.MarshalBinary()
	var back State
	if err := back.UnmarshalBinary(b); err != nil || back != a {
		t.Fatalf("round trip: %v, %+v != %+v", err, back, a)
	}
	if ev := back.Observe(r, Window{Index: 902, Score: 0.6, Evidence: 0.4}, nil); len(ev) != 1 || ev[0].OpenedBy != OpenedEvidence {
		t.Fatalf("restored state: events %+v, want an evidence opening", ev)
	}
}

// TestPersistentWindowsOpen: windows at the persistent level, below the
// anomalous one, open an incident once PK of the last PN are persistent
// (3 of 4 by default) and only on such a window; a window that is only
// elevated (below the persistent level) counts for the sustained rule,
// not for this one.
func TestPersistentWindowsOpen(t *testing.T) {
	r := Rule{SK: 6, SN: 10, PK: 3, PN: 4}
	var s State
	var ev []Event
	ev = s.Observe(r, Window{Index: 300, Score: 0.7, Persistent: true, Elevated: true}, ev)
	ev = s.Observe(r, Window{Index: 301, Score: 0.6, Elevated: true}, ev)
	ev = s.Observe(r, Window{Index: 302, Score: 0.7, Persistent: true, Elevated: true}, ev)
	if len(ev) != 0 {
		t.Fatalf("2 persistent of 4 opened %+v", ev)
	}
	// A third persistent window within the last four opens, from the
	// oldest of them.
	ev = s.Observe(r, Window{Index: 303, Score: 0.71, Persistent: true, Elevated: true}, ev)
	if len(ev) != 1 || ev[0].Status != Opened || ev[0].First != 300 || ev[0].Windows != 3 || ev[0].PeakLevel != Low || ev[0].OpenedBy != OpenedPersistent {
		t.Fatalf("events %+v, want one opening from window 300 with 3 windows", ev)
	}
	// Off, the same windows open nothing until the sustained rule's six.
	var off State
	ev = nil
	for i := range 5 {
		ev = off.Observe(Rule{SK: 6, SN: 10}, Window{Index: int64(400 + i), Score: 0.7, Persistent: true}, ev)
	}
	if len(ev) != 0 {
		t.Fatalf("the persistent rule opened %+v while off", ev)
	}
	// Three persistent windows followed by an elevated-only one: the
	// persistent rule does not open on a window below its level.
	var p State
	ev = nil
	r2 := Rule{PK: 3, PN: 4}
	ev = p.Observe(r2, Window{Index: 500, Persistent: true}, ev)
	ev = p.Observe(r2, Window{Index: 501, Persistent: true}, ev)
	ev = p.Observe(r2, Window{Index: 502, Elevated: true}, ev)
	ev = p.Observe(r2, Window{Index: 503, Elevated: true}, ev)
	if len(ev) != 0 {
		t.Fatalf("opened on windows below the persistent level: %+v", ev)
	}
}

// A device seen on two partitions has its windows judged as each partition
// closes them: one may come after a newer one, or share its index. It
// counts in its own place.
func TestWindowsOutOfOrderCountInTheirPlace(t *testing.T) {
	var s State
	r := Rule{}
	var ev []Event
	ev = s.Observe(r, Window{Index: 100}, ev)
	ev = s.Observe(r, Window{Index: 102, Level: Low, Score: 0.3}, ev)
	ev = s.Observe(r, Window{Index: 101, Level: Low, Score: 0.4}, ev) // the other partition's, late
	if len(ev) != 0 {
		t.Fatalf("a late window opened %+v in the past", ev)
	}
	ev = s.Observe(r, Window{Index: 102, Level: Low, Score: 0.3}, ev) // the same minute, from the other partition
	if len(ev) != 1 || ev[0].Status != Opened || ev[0].First != 101 || ev[0].Last != 102 || ev[0].Windows != 2 || ev[0].OpenedBy != OpenedKOfN {
		t.Fatalf("events %+v, want an opening spanning 101–102", ev)
	}
	// The same index from both partitions is one window's place.
	s = State{}
	ev = s.Observe(r, Window{Index: 200, Level: Low, Score: 0.3}, nil)
	ev = s.Observe(r, Window{Index: 200, Level: Low, Score: 0.3}, ev)
	if len(ev) != 0 {
		t.Fatalf("one anomalous minute seen twice opened %+v", ev)
	}
	// Far older than the rules look: ignored.
	if ev = s.Observe(r, Window{Index: 150, Level: High, Score: 0.9}, nil); len(ev) != 0 || s.Open() {
		t.Fatalf("a window 50 minutes old opened %+v", ev)
	}
}

// Quiet is counted in windows' places: the same minute's windows from two
// partitions are one quiet window, not two.
func TestQuietCountsPlacesNotWindows(t *testing.T) {
	var s State
	r := Rule{M: 2}
	ev := s.Observe(r, Window{Index: 10, Level: High, Score: 0.9}, nil)
	for _, i := range []int64{11, 11, 11, 10} {
		ev = s.Observe(r, Window{Index: i}, ev)
	}
	if len(ev) != 1 || !s.Open() {
		t.Fatalf("closed after one quiet minute seen thrice: %+v", ev)
	}
	ev = s.Observe(r, Window{Index: 12}, ev)
	if len(ev) != 2 || ev[1].Status != Closed {
		t.Fatalf("events %+v, want a closing after the second quiet minute", ev)
	}
}

// A lingering window (anomalous only by a damped count that an earlier
// window's event left in it) opens nothing however many follow, but
// continues an open incident until M quiet windows close it.
func TestLingeringWindowsContinueButOpenNothing(t *testing.T) {
	r := Rule{K: 2, N: 3, M: 5}
	var s State
	var ev []Event
	for i := range 12 {
		ev = s.Observe(r, Window{Index: int64(400 + i), Score: 0.8, Lingering: true}, ev)
	}
	if len(ev) != 0 {
		t.Fatalf("lingering windows opened %+v", ev)
	}
	// Two anomalous windows open; lingering ones keep it open.
	ev = s.Observe(r, Window{Index: 420, Level: Low, Score: 0.8}, nil)
	ev = s.Observe(r, Window{Index: 421, Level: Low, Score: 0.8}, ev)
	if len(ev) != 1 || ev[0].Status != Opened || ev[0].OpenedBy != OpenedKOfN {
		t.Fatalf("want a k-of-n opening, got %+v", ev)
	}
	for i := range 8 {
		if got := s.Observe(r, Window{Index: int64(422 + i), Score: 0.75, Lingering: true}, nil); len(got) != 0 {
			t.Fatalf("a lingering window %d: %+v", i, got)
		}
	}
	var closed []Event
	for i := range 5 {
		closed = s.Observe(r, Window{Index: int64(430 + i)}, closed)
	}
	if len(closed) != 1 || closed[0].Status != Closed || closed[0].Last != 429 {
		t.Fatalf("want the incident closed after 5 quiet windows, its last window the last lingering one: %+v", closed)
	}
}

// TestQuietUntilNothingCountsAnyMore: a state is quiet before any window;
// not once a window counts towards an opening (anomalous or elevated, for
// the 16 windows the rules look back on; holding its even share of the
// evidence rule's, for its EN windows), nor while an incident is open.
func TestQuietUntilNothingCountsAnyMore(t *testing.T) {
	r := Rule{SK: 6, SN: 10, EN: 3}.WithDefaults()
	var s State
	if !s.Quiet(r) {
		t.Fatal("a state that saw no window is not quiet")
	}
	for _, c := range []struct {
		w       Window
		quietAt int64
	}{{Window{Index: 100, Level: Low}, 116}, {Window{Index: 100, Elevated: true}, 116}, {Window{Index: 100, Evidence: 0.4}, 103}} {
		var s State
		s.Observe(r, c.w, nil)
		if s.Quiet(r) {
			t.Fatalf("quiet after %+v", c.w)
		}
		s.Observe(r, Window{Index: c.quietAt - 1}, nil)
		if s.Quiet(r) {
			t.Fatalf("quiet at %d after %+v, which a rule still looks back on", c.quietAt-1, c.w)
		}
		s.Observe(r, Window{Index: c.quietAt}, nil)
		if !s.Quiet(r) {
			t.Fatalf("not quiet at %d after %+v", c.quietAt, c.w)
		}
	}
	var low State
	low.Observe(r, Window{Index: 100, Evidence: 0.3}, nil) // less than its even share (1/3)
	if !low.Quiet(r) {
		t.Fatal("not quiet after a window holding less than its even share of the evidence rule's")
	}
	var open State
	run(t, &open, r, 2, 2)
	if !open.Open() || open.Quiet(r) {
		t.Fatalf("an open incident: open %v, quiet %v", open.Open(), open.Quiet(r))
	}
}

// TestADeviceIsAskedItsOwnCount: a window's SustainedK and PersistentK
// above the rule's (a device more often raised than its profile's usual
// one, models.Model.RuleKFor) ask for that many raised windows; above the
// span, the rule is off for the device; at or below the rule's, the
// rule's count stands.
func TestADeviceIsAskedItsOwnCount(t *testing.T) {
	r := Rule{SK: 6, SN: 10, PK: 3, PN: 4}
	elevated := func(i, k int) Window {
		return Window{Index: int64(300 + i), Score: 0.7, Elevated: true, SustainedK: k}
	}
	persistent := func(i, k int) Window {
		return Window{Index: int64(300 + i), Score: 0.7, Persistent: true, PersistentK: k}
	}
	for _, c := range []struct {
		name   string
		window func(i, k int) Window
		k      int
		opens  int // windows in a row that open an incident; 0: none in 16
	}{
		{"sustained, the rule's count", elevated, 0, 6},
		{"sustained, below the rule's", elevated, 4, 6},
		{"sustained, two more", elevated, 8, 8},
		{"sustained, the whole span", elevated, 10, 10},
		{"sustained, off", elevated, 11, 0},
		{"persistent, the rule's count", persistent, 0, 3},
		{"persistent, one more", persistent, 4, 4},
		{"persistent, off", persistent, 5, 0},
	} {
		var s State
		opened := 0
		for i := range 16 {
			if ev := s.Observe(r, c.window(i, c.k), nil); len(ev) > 0 && ev[0].Status == Opened {
				opened = i + 1
				break
			}
		}
		if opened != c.opens {
			t.Errorf("%s (k=%d): opened on window %d, want %d", c.name, c.k, opened, c.opens)
		}
	}
}
