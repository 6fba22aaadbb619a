package incidents

import (
	"reflect"
	"testing"
)

// tally feeds one window of n devices, raised of them raised and spread
// evenly among them, and returns the fleet's events.
func tally(f *Fleet, r Rule, index int64, n, raised int) []Event {
	var out []Event
	for i := range n {
		out = f.Observe(r, index, (i+1)*raised/n > i*raised/n, out)
	}
	return out
}

// TestFleetOpensOnAMajorityAndClosesAfterMQuarterWindows: a majority of
// at least FleetMin devices raised in one window opens an episode; it
// stays open while more than a quarter are raised and closes after M
// windows in a row at a quarter or fewer, each counted once two windows
// behind the newest.
func TestFleetOpensOnAMajorityAndClosesAfterMQuarterWindows(t *testing.T) {
	var f Fleet
	r := Rule{} // FleetMin 8, M 5
	for i, c := range [][2]int{{20, 2}, {20, 10}, {7, 7}} {
		// 2 of 20 is ordinary; 10 of 20 is not a majority; 7 of 7 are too few.
		if ev := tally(&f, r, int64(100+i), c[0], c[1]); len(ev) > 0 || f.Open() {
			t.Fatalf("window %d: %d of %d opened %+v", 100+i, c[1], c[0], ev)
		}
	}
	// 11 of 20: it opens as soon as the devices judged so far (at least
	// 8) are a majority raised: 6 of the first 11.
	ev := tally(&f, r, 103, 20, 11)
	want := Event{Status: Opened, First: 103, Last: 103}
	if len(ev) != 0 || !f.Open() || f.Opening() != want || f.Raised != 6 || f.Judged != 11 {
		t.Fatalf("11 of 20: %+v, opening %+v (raised %d of %d), want %+v", ev, f.Opening(), f.Raised, f.Judged, want)
	}
	// Three device incidents join it (the first reports its opening).
	for i := range 3 {
		var st State
		opened := run(t, &st, r, 1, 1)
		if rep, joined, opening := f.Reported(&st, false, true, opened[:1]); len(rep) != 0 || !joined || opening != (i == 0) || !st.Absorbed() {
			t.Fatalf("incident %d: reported %+v, joined %v, opening %v", i, rep, joined, opening)
		}
	}
	// 6 of 20 (more than a quarter) keeps it open; 5 of 20 is quiet.
	shares := []int{6, 5, 5, 5, 5, 6, 5, 5, 5, 5, 5}
	var got []Event
	for i, raised := range shares {
		got = append(got, tally(&f, r, int64(104+i), 20, raised)...)
	}
	// Window 109 (6 raised) restarted the quiet count, so 110…114 close
	// it; 114 is counted when window 116 arrives, which this run does
	// not reach.
	if len(got) != 0 || !f.Open() {
		t.Fatalf("closed too soon: %+v", got)
	}
	got = tally(&f, r, 115, 20, 0)
	got = append(got, tally(&f, r, 116, 20, 0)...)
	wantClosed := []Event{{Status: Closed, Seq: 1, First: 103, Last: 109, Windows: 3}}
	if !reflect.DeepEqual(got, wantClosed) || f.Open() {
		t.Fatalf("closing: %+v, want %+v", got, wantClosed)
	}
}

// TestFleetOpensOnTheWindowBefore: the devices of a window are judged as
// their partitions close it, so the opening looks at the window before
// the newest as well; a window with no device judged counts neither way
// towards closing; a window older than those still counted is left out.
func TestFleetOpensOnTheWindowBefore(t *testing.T) {
	var f Fleet
	r := Rule{FleetMin: 4, M: 2}
	tally(&f, r, 200, 3, 3) // 3 of 3: too few so far
	ev := tally(&f, r, 201, 1, 0)
	if len(ev) != 0 {
		t.Fatalf("opened early: %+v", ev)
	}
	ev = tally(&f, r, 200, 1, 1) // the fourth device of window 200
	if want := (Event{Status: Opened, First: 200, Last: 200}); len(ev) != 0 || !f.Open() || f.Opening() != want {
		t.Fatalf("late part of window 200: %+v, open %v, opening %+v, want %+v", ev, f.Open(), f.Opening(), want)
	}
	f.Absorbed = 1 // reported
	// 201 (0 of 1) is quiet once 203 arrives; 202 has no device judged
	// and counts neither way; 203 (1 of 4) is the second quiet window,
	// counted once 205 arrives.
	if ev := tally(&f, r, 203, 4, 1); len(ev) != 0 {
		t.Fatalf("203: %+v", ev)
	}
	if ev := f.Observe(r, 190, true, nil); len(ev) != 0 || f.count(190).judged != 0 {
		t.Fatalf("a window older than the tally was counted: %+v", ev)
	}
	ev = tally(&f, r, 205, 4, 0)
	if want := []Event{{Status: Closed, Seq: 1, First: 200, Last: 200, Windows: 1}}; !reflect.DeepEqual(ev, want) {
		t.Fatalf("closing: %+v, want %+v", ev, want)
	}
}

// TestFleetOff: a negative FleetMin never opens an episode, and 1 is
// refused (a majority of one device is no fleet).
func TestFleetOff(t *testing.T) {
	var f Fleet
	if ev := tally(&f, Rule{FleetMin: -1}, 100, 50, 50); len(ev) != 0 || f.Open() {
		t.Fatalf("off, yet opened: %+v", ev)
	}
	if err := (Rule{FleetMin: 1}).Validate(); err == nil {
		t.Fatal("fleet_min_devices 1 accepted")
	}
	if err := (Rule{FleetMin: -1}).Validate(); err != nil {
		t.Fatalf("fleet_min_devices -1 (off) refused: %v", err)
	}
}

// TestAbsorbedIncidentGoesOnAndSurvivesACheckpoint: an absorbed incident
// keeps its state (the device does not open again while it lasts), the
// mark survives a checkpoint at the same size, and closing ends it.
func TestAbsorbedIncidentGoesOnAndSurvivesACheckpoint(t *testing.T) {
	var s State
	r := Rule{}
	s.Absorb() // nothing open: no mark
	if s.Absorbed() {
		t.Fatal("absorbed with no incident open")
	}
	if ev := run(t, &s, r, 1, 1); len(ev) != 1 || ev[0].Status != Opened {
		t.Fatalf("opening: %+v", ev)
	}
	s.Absorb()
	b, _ := s.MarshalBinary()
	if len(b) != EncodingSize {
		t.Fatalf("encoding of %d bytes, want %d", len(b), EncodingSize)
	}
	var g State
	if err := g.UnmarshalBinary(b); err != nil || g != s || !g.Absorbed() || !g.Open() {
		t.Fatalf("round trip: %v, %+v vs %+v", err, g, s)
	}
	// Windows 102…106 quiet: the fifth closes it, and the mark goes.
	var ev []Event
	for i := range 5 {
		ev = g.Observe(r, Window{Index: int64(102 + i)}, ev)
	}
	if len(ev) != 1 || ev[0].Status != Closed || g.Absorbed() {
		t.Fatalf("closing: %+v (absorbed %v)", ev, g.Absorbed())
	}
	// The next incident is its own.
	ev = g.Observe(r, Window{Index: 110, Level: High, Score: 1}, nil)
	if len(ev) != 1 || ev[0].Status != Opened || g.Absorbed() {
		t.Fatalf("next incident: %+v (absorbed %v)", ev, g.Absorbed())
	}
}

// TestFleetWaitsForHalfTheWindow: the first devices of a window (its
// first partition) do not speak for the profile until at least half as
// many as the window before had are judged.
func TestFleetWaitsForHalfTheWindow(t *testing.T) {
	var f Fleet
	r := Rule{}
	tally(&f, r, 300, 40, 2)
	if ev := tally(&f, r, 301, 10, 8); len(ev) != 0 || f.Open() {
		t.Fatalf("8 of the first 10 of a window of 40 opened: %+v", ev)
	}
	tally(&f, r, 301, 10, 3) // 11 of 20: half the window before, a majority
	if want := (Event{Status: Opened, First: 301, Last: 301}); !f.Open() || f.Opening() != want || f.Judged != 20 {
		t.Fatalf("11 of 20: open %v, opening %+v (judged %d), want %+v", f.Open(), f.Opening(), f.Judged, want)
	}
}

// TestFleetLastsWhileItsDevicesAreRaised: the episode does not close while
// an incident it absorbed has had a raised window within the last M
// windows, however quiet the rest of the profile.
func TestFleetLastsWhileItsDevicesAreRaised(t *testing.T) {
	var f Fleet
	r := Rule{M: 2}
	tally(&f, r, 400, 10, 9)
	if !f.Open() {
		t.Fatal("9 of 10 did not open")
	}
	f.Absorbed = 1 // reported
	var ev []Event
	for i := int64(401); i <= 410; i++ {
		if i <= 405 {
			f.Hold(i) // a straggler raised through window 405
		}
		ev = append(ev, tally(&f, r, i, 10, 0)...)
	}
	// Windows 401… are quiet; 405 is the straggler's last, so the first
	// window that can close it is 407, counted when 409 arrives.
	want := []Event{{Status: Closed, Seq: 1, First: 400, Last: 405, Windows: 1}}
	if !reflect.DeepEqual(ev, want) {
		t.Fatalf("events %+v, want %+v", ev, want)
	}
}

// TestFleetThatAbsorbsNothingIsNotReported: most of a profile raised for a
// minute, with no device incident joining, opens and closes an episode
// without an event.
func TestFleetThatAbsorbsNothingIsNotReported(t *testing.T) {
	var f Fleet
	r := Rule{M: 2}
	var ev []Event
	ev = append(ev, tally(&f, r, 500, 10, 10)...)
	if !f.Open() {
		t.Fatal("10 of 10 did not open")
	}
	for i := int64(501); i <= 506; i++ {
		ev = append(ev, tally(&f, r, i, 10, 0)...)
	}
	if len(ev) != 0 || f.Open() {
		t.Fatalf("an episode that absorbed nothing: events %+v, still open %v", ev, f.Open())
	}
}

// TestFleetSurvivesACheckpoint: an open episode restored from its
// checkpoint goes on as the original does, to the same closing.
func TestFleetSurvivesACheckpoint(t *testing.T) {
	r := Rule{}.WithDefaults()
	var f Fleet
	for w := int64(100); w < 104; w++ {
		for d := range 20 {
			f.Observe(r, w, w >= 102 && d < 15, nil)
		}
	}
	if !f.Open() {
		t.Fatal("no episode opened on 15 of 20 devices raised")
	}
	var st State
	st.Observe(r, Window{Index: 102, Level: High, Score: 0.9}, nil)
	f.Reported(&st, false, true, []Event{{Status: Opened}})
	b, err := f.MarshalBinary()
	if err != nil || len(b) != FleetEncodingSize {
		t.Fatalf("%d bytes, %v", len(b), err)
	}
	var g Fleet
	if err := g.UnmarshalBinary(b); err != nil || g != f {
		t.Fatalf("restored %+v, %v; want %+v", g, err, f)
	}
	var fe, ge []Event
	for w := int64(104); w < 130 && len(fe) == 0; w++ {
		for range 20 {
			fe = f.Observe(r, w, false, fe)
			ge = g.Observe(r, w, false, ge)
		}
	}
	if len(fe) != 1 || fe[0].Status != Closed || len(ge) != 1 || ge[0] != fe[0] {
		t.Fatalf("closings: original %+v, restored %+v", fe, ge)
	}
	if err := g.UnmarshalBinary(b[:len(b)-1]); err == nil {
		t.Error("a truncated checkpoint was read")
	}
}
