package pipeline

import (
	"cmp"
	"math"
	"slices"
	"time"
)

// A window's verdict should depend on the records, not on how they fell
// into polls. Windows close one device at a time — when the device's own
// next window begins, or when its partition's watermark passes — and were
// judged as they closed, so a minute's windows reached the detector in
// pieces whose make-up changed with every run: a first partition's
// windows, then a few devices at a time. The profile's fleet episode
// (fleet.go) is tallied over what has been judged of a window so far, and
// a device whose window of a profile-wide step happened to come before the
// tally could speak for the profile (before half the profile had been
// judged) opened an incident of its own and was reported, where the same
// window judged a poll later joined the episode. On the simulator-step
// benchmark fleet four of eleven false incidents were such devices; the
// detection benchmark's verdicts had also been seen to move by an attack
// when the machine was loaded, likely this way (docs/DETECTION.md).
//
// The stage therefore judges a profile's windows of one window index
// together, as the offline judgement does (JudgeOffline): a closed window
// waits here until every partition this instance reads is done with its
// index — no window of a device seen there is still open at that start or
// before it (partitionWindows.doneBefore) — or has gone silent (below),
// and the windows released at once are judged in window order, then by
// device. The wait is bounded by the watermark: a
// partition closes every window the watermark has passed by the
// partition's wait (the allowed lateness, or longer while its records come
// further out of order: partitionWindows.wait), and no sooner. A device silent until then that opens a window
// of an index already released is judged after its peers, as before. A
// partition that has delivered nothing for idleAfter and fallen a window
// behind the others holds nothing back, whether or not it had read to the
// end of its log (partitionWindows.silent): one the broker stopped serving
// must not stop detection on every other partition. Its windows, when it
// comes back, are judged after their peers'. (Assembly waits for such a
// partition, since a part judged without it is a part; here only the
// grouping is at stake.)
//
// Exactly once: a waiting window's records are not committed and the
// partition's checkpoint names its device and start (waitingFrom), as for
// a part waiting for the device's other partitions, so that the next owner
// reads the window again and judges it once.
type barrier struct {
	waiting []ClosedWindow
	// order is releaseBarrier's scratch: the released windows' sort keys.
	order []releaseKey
}

// releaseKey is a released window's place in the order it is judged in:
// sorting these rather than the windows (288 bytes each) keeps the sort's
// swaps small.
type releaseKey struct {
	start int64
	id    string
	i     int
}

// bound returns the start before which every partition of the instance is
// done with its windows: the oldest window start still open on a partition
// that is not silent (math.MaxInt64 when there is none).
func (s *DetectStage) bound(now time.Time) int64 {
	var newest int64
	for _, p := range s.partitions {
		newest = max(newest, p.watermark)
	}
	b := int64(math.MaxInt64)
	for _, p := range s.partitions {
		if p.silent(now, newest) {
			continue
		}
		b = min(b, p.doneBefore())
	}
	return b
}

// complete appends to ready, in the order they are to be judged, the
// windows now complete: a device's parts joined (drainAssembled) and every
// partition done with their window index (releaseBarrier).
func (s *DetectStage) complete(now time.Time, ready []ClosedWindow) []ClosedWindow {
	if s.asm.parts > 0 {
		s.bar.waiting = s.drainAssembled(now, s.bar.waiting)
	}
	return s.releaseBarrier(now, ready)
}

// releaseBarrier appends to ready, in window order and then by device, the
// waiting windows that every partition is done with, and keeps the rest.
func (s *DetectStage) releaseBarrier(now time.Time, ready []ClosedWindow) []ClosedWindow {
	if len(s.bar.waiting) == 0 {
		return ready
	}
	b := s.bound(now)
	order := s.bar.order[:0]
	for i := range s.bar.waiting {
		cw := &s.bar.waiting[i]
		if start := cw.Start.UnixNano(); start < b {
			order = append(order, releaseKey{start, cw.DeviceID, i})
		}
	}
	if len(order) == 0 {
		return ready
	}
	slices.SortFunc(order, func(a, b releaseKey) int {
		if c := cmp.Compare(a.start, b.start); c != 0 {
			return c
		}
		return cmp.Compare(a.id, b.id)
	})
	for _, k := range order {
		ready = append(ready, s.bar.waiting[k.i])
	}
	kept := s.bar.waiting[:0]
	for _, cw := range s.bar.waiting {
		if cw.Start.UnixNano() >= b {
			kept = append(kept, cw)
		}
	}
	clear(s.bar.waiting[len(kept):])
	s.bar.waiting = kept
	clear(order) // the ids
	s.bar.order = order[:0]
	return ready
}

// waitingDevices returns a test of whether a device has a window waiting
// here or, by parts, in the assembler (parts): a device with a window yet
// to be judged is not silent, and its incident does not expire first.
func (b *barrier) waitingDevices(parts func(deviceID string) bool) func(deviceID string) bool {
	if len(b.waiting) == 0 {
		return parts
	}
	ids := make(map[string]struct{}, len(b.waiting))
	for _, cw := range b.waiting {
		ids[cw.DeviceID] = struct{}{}
	}
	return func(id string) bool {
		_, ok := ids[id]
		return ok || parts(id)
	}
}

// dropWaiting forgets the waiting windows read from a partition this
// instance no longer reads: their records are above its committed offset,
// so its next owner reads them again. A window joined from parts of
// several partitions is kept: its other parts' partitions are still read
// here, and what is not joined across instances (assembly.go) is not
// joined here either.
func (s *DetectStage) dropWaiting(part int32) {
	kept := s.bar.waiting[:0]
	for _, cw := range s.bar.waiting {
		if cw.Partition == part && len(cw.Others) == 0 {
			continue
		}
		kept = append(kept, cw)
	}
	clear(s.bar.waiting[len(kept):])
	s.bar.waiting = kept
}
