package pipeline

import (
	"cmp"
	"slices"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// A device's records should arrive on one partition — producers key them
// by device — and then each of its windows is closed and scored by that
// partition alone. When they do not (a producer that spreads records
// round-robin, as goflow2 and kafka-go do by default, or the reply legs of
// traffic to a device travelling with the initiator's records), every
// partition this instance reads holds a part of the device's minute, and a
// part judged on its own looks like a quarter of the device's normal: in the
// detection benchmark a round-robin fleet raised 4–12 false incidents per
// 1,000 device-hours against about 1 keyed.
//
// The stage therefore joins a device's parts into one window before it is
// scored. Each partition keeps its own watermark and closes its part as
// before; a part whose device this instance also tracks on another
// partition waits here until every such partition is done with the window,
// that is, until a record of the window arriving there would be late by
// that partition's own rules (partDone): its watermark has passed the
// window, or the device has moved on there. Lateness thus stays a property
// of each partition's order of records, and a replay of the same records
// joins the same parts. Windows are handed on in order per device, their
// parts' windows summed (features.Window.Merge) and only then observed in
// the device's context, so that the device's feature context, baseline and
// incident see one window per window index, as with keyed records.
//
// What this does not do is join a device's parts across instances: with
// several instances in a group, each sees only the partitions it owns.
// Re-keying the records through a repartition topic (as Kafka Streams does)
// would, at the cost of writing every record twice; the service says that
// records are not keyed (checkKeying) rather than doing so.
//
// Exactly once: a waiting part's records are not committed (committable),
// and the partition's checkpoint names the device and window
// (partitionCheckpoint.Held), so that its next owner reads the part again
// and the joined window is scored once.

// assembler holds the parts of windows waiting for the device's other
// partitions.
type assembler struct {
	// pending maps a device to its waiting windows, oldest first.
	pending map[string][]*pendingWindow
	parts   int // parts held, for the gauge
}

// pendingWindow is one window of a device, as parts from partitions.
type pendingWindow struct {
	start int64 // Unix ns
	parts []ClosedWindow
}

// idleAfter is how long a partition that has delivered everything it holds
// may stay silent, its watermark a window behind the newest, before it no
// longer holds back the windows of devices it has seen: a producer that
// stopped writing to it does not stop detection on the others. A pause of
// every producer forces nothing: the partitions stay level, and the
// windows wait for event time to move on, as windows of keyed records do.
const idleAfter = 10 * time.Second

func (a *assembler) add(cw ClosedWindow) {
	if a.pending == nil {
		a.pending = map[string][]*pendingWindow{}
	}
	ws := a.pending[cw.DeviceID]
	start := cw.Start.UnixNano()
	i, found := slices.BinarySearchFunc(ws, start, func(w *pendingWindow, s int64) int { return cmp.Compare(w.start, s) })
	if !found {
		ws = slices.Insert(ws, i, &pendingWindow{start: start})
		a.pending[cw.DeviceID] = ws
	}
	ws[i].parts = append(ws[i].parts, cw)
	a.parts++
}

// waiting reports whether a device has windows waiting for parts.
func (a *assembler) waiting(deviceID string) bool { return len(a.pending[deviceID]) > 0 }

// route hands each closed part on: to ready when its device is tracked on
// no other partition of this instance and has nothing waiting (records
// keyed by device: the window is whole), to the assembler otherwise. A part
// of a window the device has had scored already — its partition was
// behind and had not been counted as holding the device, or went idle — is
// dropped and counted late.
func (s *DetectStage) route(parts []ClosedWindow, ready []ClosedWindow) []ClosedWindow {
	for _, cw := range parts {
		switch {
		case cw.state.scored != 0 && cw.Index <= cw.state.scored:
			s.metrics.RecordsLate.WithLabelValues(s.cfg.Topics.Flows).Add(float64(cw.window.Flows()))
			s.release(&cw, false)
		case !s.asm.waiting(cw.DeviceID) && !s.trackedElsewhere(cw.DeviceID, int(cw.Partition)):
			cw.state.scored = cw.Index
			ready = append(ready, cw)
		default:
			s.asm.add(cw)
		}
	}
	return ready
}

// drainAssembled appends to ready every waiting window whose partitions
// are all done with it, its parts joined, each device's in window order.
// The barrier (barrier.go) orders them with the other windows for judging.
func (s *DetectStage) drainAssembled(now time.Time, ready []ClosedWindow) []ClosedWindow {
	var newest int64 // the newest watermark of this instance's partitions
	for _, p := range s.partitions {
		newest = max(newest, p.watermark)
	}
	for id, ws := range s.asm.pending {
		n := 0
		for n < len(ws) && s.windowComplete(id, ws[n].start, now, newest) {
			ready = append(ready, s.join(ws[n]))
			n++
		}
		if n == len(ws) {
			delete(s.asm.pending, id)
		} else if n > 0 {
			s.asm.pending[id] = slices.Delete(ws, 0, n)
		}
	}
	return ready
}

// windowComplete reports whether every partition this instance reads is
// done with the device's window starting at start.
func (s *DetectStage) windowComplete(id string, start int64, now time.Time, newest int64) bool {
	for _, p := range s.partitions {
		if !partDone(p, id, start, now, newest) {
			return false
		}
	}
	// A partition assigned but not read yet, whose checkpoint says a part
	// of the window waited there.
	for _, cp := range s.restored {
		if h, ok := cp.Held[id]; ok && h <= start {
			return false
		}
	}
	return true
}

// partDone reports whether partition p can add nothing more to the device's
// window starting at start: by p's own rules a record of that window
// arriving now would be late (Add), or p has delivered everything it holds,
// been silent for idleAfter and fallen a window behind the newest watermark
// of this instance's partitions.
func partDone(p *partitionWindows, id string, start int64, now time.Time, newest int64) bool {
	if h, ok := p.resumedHeld[id]; ok && h <= start && p.replaying() {
		return false // its part is being read again
	}
	d := p.devices[id]
	switch {
	case d == nil:
		return true
	case d.window(start) != nil:
		return false // its part is still open
	case p.late(d, start, false):
		return true
	case len(d.wins) > 0:
		return false // the window after its newest open one: its next records
	}
	return p.idle(now, newest)
}

// join sums a waiting window's parts into the first one's window; the
// detector observes it in the device's context as it judges it.
func (s *DetectStage) join(w *pendingWindow) ClosedWindow {
	cw := mergeParts(w.parts, func(o *ClosedWindow) { s.release(o, false) })
	s.asm.parts -= len(w.parts)
	cw.state.scored = cw.Index
	return cw
}

// dropPartition forgets the waiting parts read from a partition this
// instance no longer reads: their records are above its committed offset,
// so its next owner reads them again.
func (s *DetectStage) dropPartition(part int32) {
	s.dropWaiting(part)
	for id, ws := range s.asm.pending {
		kept := ws[:0]
		for _, w := range ws {
			parts := w.parts[:0]
			for _, cw := range w.parts {
				if cw.Partition == part {
					s.asm.parts--
					cw.window = nil
					continue
				}
				parts = append(parts, cw)
			}
			w.parts = parts
			if len(parts) > 0 {
				kept = append(kept, w)
			}
		}
		if len(kept) == 0 {
			delete(s.asm.pending, id)
		} else {
			s.asm.pending[id] = kept
		}
	}
}

// waitingFrom returns, per partition, the oldest offset of a waiting part
// and, per device, the start of its oldest waiting window with a part
// there: the committable offset stays below the first, and the checkpoint
// names the second (partitionCheckpoint.Held).
func (s *DetectStage) waitingFrom() (map[int32]int64, map[int32]map[string]int64) {
	if s.asm.parts == 0 && len(s.bar.waiting) == 0 {
		return nil, nil
	}
	first := map[int32]int64{}
	held := map[int32]map[string]int64{}
	wait := func(id string, start int64, part int32, offset int64) {
		if f, ok := first[part]; !ok || offset < f {
			first[part] = offset
		}
		h := held[part]
		if h == nil {
			h = map[string]int64{}
			held[part] = h
		}
		if st, ok := h[id]; !ok || start < st {
			h[id] = start
		}
	}
	for id, ws := range s.asm.pending {
		for _, w := range ws {
			for _, cw := range w.parts {
				wait(id, w.start, cw.Partition, cw.FirstOffset)
			}
		}
	}
	// Windows whole or joined, waiting for every partition to be done
	// with their index (barrier.go).
	for _, cw := range s.bar.waiting {
		start := cw.Start.UnixNano()
		wait(cw.DeviceID, start, cw.Partition, cw.FirstOffset)
		for _, o := range cw.Others {
			wait(cw.DeviceID, start, o.Partition, o.First)
		}
	}
	return first, held
}

// release finishes with a scored or dropped window through its partition
// (Release), or on its own when the partition has left this instance.
func (s *DetectStage) release(cw *ClosedWindow, learn bool) {
	if p := s.partitions[int(cw.Partition)]; p != nil {
		p.Release(cw, learn)
		return
	}
	if learn && cw.window != nil {
		cw.state.feat.Learn(cw.window)
	}
	cw.window = nil
}

// interleave hands fn the records of a poll's partitions in the order of
// their timestamps, each partition's in its own order: it takes, from the
// partition whose next record is oldest, every record up to the next
// record of the partition after it, so that a poll of partitions read
// level costs a comparison per run of records rather than per record.
// Records of equal timestamps (a producer that sets none) are taken a
// partition at a time.
func interleave(parts []kgo.FetchTopicPartition, fn func(*kgo.Record) error) error {
	if len(parts) == 1 {
		for _, r := range parts[0].Records {
			if err := fn(r); err != nil {
				return err
			}
		}
		return nil
	}
	next := make([]int, len(parts))
	for {
		first, second := -1, -1
		for i, fp := range parts {
			if next[i] == len(fp.Records) {
				continue
			}
			switch t := fp.Records[next[i]].Timestamp; {
			case first < 0 || t.Before(parts[first].Records[next[first]].Timestamp):
				first, second = i, first
			case second < 0 || t.Before(parts[second].Records[next[second]].Timestamp):
				second = i
			}
		}
		if first < 0 {
			return nil
		}
		recs := parts[first].Records
		for {
			if err := fn(recs[next[first]]); err != nil {
				return err
			}
			next[first]++
			if next[first] == len(recs) {
				break
			}
			if second >= 0 && parts[second].Records[next[second]].Timestamp.Before(recs[next[first]].Timestamp) {
				break
			}
		}
	}
}
