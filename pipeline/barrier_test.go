package pipeline

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// hold puts one record on a partition as DetectStage.process does: the
// windows it closes wait in the barrier.
func (a *assemblyStage) hold(part int, offset int64, id string, at time.Time) {
	a.s.bar.waiting = a.s.route(a.record(part, offset, id, at), a.s.bar.waiting)
}

// release collects what DetectStage.scoreAssembled would judge at now, and
// returns the devices of the windows handed over, in order.
func (a *assemblyStage) release(now time.Time) []string {
	ws := a.s.complete(now, nil)
	var got []string
	for _, cw := range ws {
		got = append(got, cw.DeviceID)
	}
	a.collect(ws)
	return got
}

// The windows of one window index reach the detector together, whatever
// order their partitions closed them in: a window closed by its
// partition's watermark waits until every partition is done with its
// index, and a release is in device order. Until then its records are not
// committed and the checkpoint names it.
func TestWindowsOfOneIndexAreJudgedTogether(t *testing.T) {
	t0 := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	a := newAssemblyStage(t, 2, nil)
	// Devices b and c on partition 0, a on partition 1, in minute 0.
	a.hold(0, 0, "c", t0.Add(5*time.Second))
	a.hold(0, 1, "b", t0.Add(6*time.Second))
	a.hold(1, 0, "a", t0.Add(7*time.Second))
	now := t0.Add(time.Hour)

	a.hold(0, 2, "c", t0.Add(61*time.Second)) // c moves on; its minute 0 is still open
	if got := a.release(now); len(got) != 0 {
		t.Fatalf("%v handed over while partition 0's minute 0 was open", got)
	}
	a.hold(0, 3, "b", t0.Add(71*time.Second)) // partition 0's watermark closes minute 0 there
	if got := a.release(now); len(got) != 0 {
		t.Fatalf("%v handed over while a's minute 0 was open on partition 1", got)
	}
	first, held := a.s.waitingFrom()
	if first[0] != 0 || held[0]["b"] != t0.UnixNano() || held[0]["c"] != t0.UnixNano() {
		t.Fatalf("waiting windows: oldest offset %v, held %v; want partition 0 from offset 0, b and c at minute 0", first, held)
	}
	if off := min(a.s.partitions[0].committable(), first[0]-1); off != -1 {
		t.Fatalf("partition 0 committable through %d with its minute-0 windows unjudged", off)
	}

	a.hold(1, 1, "a", t0.Add(73*time.Second)) // every partition is done with minute 0
	if got := a.release(now); !slices.Equal(got, []string{"a", "b", "c"}) {
		t.Fatalf("handed over %v, want minute 0 of a, b and c together, in device order", got)
	}
	if got := a.flows[t0.Unix()/60]; got != 1 {
		t.Fatalf("a's minute 0 judged with %d flows, want 1", got)
	}
	if n := len(a.s.bar.waiting); n != 0 {
		t.Fatalf("%d windows still waiting", n)
	}
	if first, _ := a.s.waitingFrom(); len(first) != 0 {
		t.Fatalf("offsets still held back after the release: %v", first)
	}
}

// A window is held until the watermark closes it — the allowed lateness
// after the window's end — whether its device has sent a record of the
// next window or nothing since: flow records are stamped with their end,
// and a record of the minute may still come after one of the next.
func TestAWindowIsHeldUntilTheWatermark(t *testing.T) {
	t0 := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	a := newAssemblyStage(t, 2, nil)
	a.hold(0, 0, "b", t0.Add(5*time.Second))
	a.hold(1, 0, "s", t0.Add(6*time.Second)) // s sends one record a few minutes
	a.hold(1, 1, "a", t0.Add(7*time.Second))
	a.hold(0, 1, "b", t0.Add(62*time.Second))
	a.hold(1, 2, "a", t0.Add(65*time.Second))
	now := t0.Add(time.Hour)
	if got := a.release(now); len(got) != 0 {
		t.Fatalf("%v handed over while minute 0 could still take a record", got)
	}
	a.hold(1, 3, "a", t0.Add(58*time.Second)) // after a's record of minute 1, within the lateness
	a.hold(1, 4, "a", t0.Add(71*time.Second)) // partition 1's watermark passes minute 0's end and lateness
	if got := a.release(now); len(got) != 0 {
		t.Fatalf("%v handed over while partition 0's minute 0 was open", got)
	}
	a.hold(0, 2, "b", t0.Add(72*time.Second))
	if got := a.release(now); !slices.Equal(got, []string{"a", "b", "s"}) {
		t.Fatalf("handed over %v, want minute 0 of a, b and s", got)
	}
	if got := a.flows[t0.Unix()/60]; got != 2 {
		t.Fatalf("a's minute 0 judged with %d flows, want 2 (its record that came after one of minute 1 included)", got)
	}
}

// A partition that stays silent does not hold back the other partitions'
// windows: after idleAfter, a window behind them, it no longer counts —
// whether it had read to the end of its log or was left behind by a broker
// that stopped serving it.
func TestASilentPartitionHoldsNoIndexBack(t *testing.T) {
	for _, caughtUp := range []bool{true, false} {
		t0 := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
		a := newAssemblyStage(t, 2, nil)
		a.hold(1, 0, "s", t0.Add(5*time.Second)) // partition 1 then falls silent
		for i := range 4 {
			a.hold(0, int64(i), "a", t0.Add(time.Duration(60*i+15)*time.Second)) // each closes the minute before
		}
		quiet := time.Date(2026, 11, 26, 15, 0, 0, 0, time.UTC)
		for _, p := range a.s.partitions {
			p.caughtUp, p.lastRecord = caughtUp, quiet
		}
		if got := a.release(quiet.Add(idleAfter / 2)); len(got) != 0 {
			t.Fatalf("caught up %v: %v handed over before partition 1 had been silent for idleAfter", caughtUp, got)
		}
		if got := a.release(quiet.Add(idleAfter)); !slices.Equal(got, []string{"a", "a", "a"}) {
			t.Fatalf("caught up %v: handed over %v after partition 1 fell silent, want a's minutes 0–2", caughtUp, got)
		}
	}
}

// A restart from a checkpoint taken while a window waited reads its records
// again from the committed offset and judges the window once, whole.
func TestAWaitingWindowIsJudgedOnceAcrossARestart(t *testing.T) {
	t0 := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	type rec struct {
		part   int
		offset int64
		id     string
		secs   int
	}
	recs := []rec{
		{0, 0, "a", 5}, {0, 1, "a", 20}, {1, 0, "b", 6}, {0, 2, "a", 40},
		{0, 3, "a", 61}, // a's minute 0 closes and waits for b's
		{1, 1, "b", 63}, {0, 4, "a", 125}, {1, 2, "b", 126},
	}
	a := newAssemblyStage(t, 2, nil)
	for _, r := range recs[:5] {
		a.hold(r.part, r.offset, r.id, t0.Add(time.Duration(r.secs)*time.Second))
	}
	now := t0.Add(time.Hour)
	if got := a.release(now); len(got) != 0 {
		t.Fatalf("%v handed over while b's minute 0 was open", got)
	}
	first, held := a.s.waitingFrom()
	checkpoints, committed := map[int]partitionCheckpoint{}, map[int]int64{}
	for part, p := range a.s.partitions {
		off := p.committable()
		if f, ok := first[int32(part)]; ok {
			off = min(off, f-1)
		}
		committed[part] = off
		checkpoints[part] = p.checkpoint(held[int32(part)])
	}
	if committed[0] != -1 {
		t.Fatalf("partition 0 committable through %d while a's minute 0 waited", committed[0])
	}
	b := newAssemblyStage(t, 2, checkpoints)
	for _, r := range recs {
		if r.offset > committed[r.part] {
			b.hold(r.part, r.offset, r.id, t0.Add(time.Duration(r.secs)*time.Second))
		}
	}
	b.release(now)
	if got := b.flows[t0.Unix()/60]; got != 3 {
		t.Fatalf("after the restart a's minute 0 judged with %d flows, want 3 (judged %v)", got, b.flows)
	}
}

// However the partitions' records interleave and however often the stage
// releases, every window index reaches the detector whole — all its
// devices in one release, in device order — when each device sends in
// every minute: what is judged together does not depend on polls.
func TestAWindowIndexIsReleasedWholeWhateverThePolls(t *testing.T) {
	t0 := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	type rec struct {
		part int
		id   string
		at   time.Time
	}
	rng := rand.New(rand.NewPCG(7, 9))
	var parts [3][]rec
	for p := range parts {
		for minute := range 8 {
			for d := range 4 {
				id := fmt.Sprintf("d%d%d", p, d)
				for range 1 + rng.IntN(3) {
					parts[p] = append(parts[p], rec{p, id, t0.Add(time.Duration(minute)*time.Minute + time.Duration(rng.IntN(60))*time.Second)})
				}
			}
		}
		slices.SortStableFunc(parts[p], func(a, b rec) int { return a.at.Compare(b.at) })
	}
	now := t0.Add(time.Hour)
	// groups runs one reading: order says which partition's next record
	// comes next, release whether the stage releases after it.
	groups := func(order func() int, release func() bool) map[int64][]string {
		a := newAssemblyStage(t, 3, nil)
		got := map[int64][]string{}
		next, offset := [3]int{}, [3]int64{}
		for left := len(parts[0]) + len(parts[1]) + len(parts[2]); left > 0; left-- {
			p := order()
			for next[p] == len(parts[p]) {
				p = (p + 1) % 3
			}
			r := parts[p][next[p]]
			next[p]++
			a.hold(p, offset[p], r.id, r.at)
			offset[p]++
			a.s.partitions[p].lastRecord = now // delivering: not silent
			if !release() && left > 1 {
				continue
			}
			ws := a.s.complete(now, nil)
			byIndex := map[int64][]string{}
			for _, cw := range ws {
				byIndex[cw.Index] = append(byIndex[cw.Index], cw.DeviceID)
			}
			for index, ids := range byIndex {
				if _, again := got[index]; again {
					t.Fatalf("window index %d released in two parts: %v, then %v", index, got[index], ids)
				}
				got[index] = ids
			}
		}
		return got
	}
	// By timestamp across partitions, released after every record.
	i := 0
	merged := slices.Concat(parts[0], parts[1], parts[2])
	slices.SortStableFunc(merged, func(a, b rec) int { return a.at.Compare(b.at) })
	inOrder := groups(func() int { i++; return merged[i-1].part }, func() bool { return true })
	// A partition at a time in random runs, released now and then.
	random := groups(func() int { return rng.IntN(3) }, func() bool { return rng.IntN(5) == 0 })
	var all []string
	for p := range 3 {
		for d := range 4 {
			all = append(all, fmt.Sprintf("d%d%d", p, d))
		}
	}
	for minute := range 7 { // the eighth never closes
		index := t0.Add(time.Duration(minute)*time.Minute).Unix() / 60
		for name, got := range map[string]map[int64][]string{"in timestamp order": inOrder, "at random": random} {
			if !slices.Equal(got[index], all) {
				t.Fatalf("%s: minute %d released as %v, want all twelve devices together, in order", name, minute, got[index])
			}
		}
	}
}
