package pipeline

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/chainwatch/chainwatch/models/features"
)

// assemblyStage is a detection stage's windowing, without Kafka or a
// detector: records are added to partitions as the stage does, and the
// windows it would score are collected.
type assemblyStage struct {
	t      *testing.T
	s      *DetectStage
	scored []ClosedWindow
	flows  map[int64]uint64 // window index → flows scored, of device "a"
}

func newAssemblyStage(t *testing.T, parts int, restored map[int]partitionCheckpoint) *assemblyStage {
	s := &DetectStage{metrics: NewMetrics(prometheus.NewRegistry()), log: slog.New(slog.DiscardHandler),
		partitions: map[int]*partitionWindows{}, models: map[string]*deviceModel{}, restored: map[int]partitionCheckpoint{}}
	s.cfg = s.cfg.withDefaults()
	for part := range parts {
		if cp, ok := restored[part]; ok {
			s.restored[part] = cp
		}
	}
	return &assemblyStage{t: t, s: s, flows: map[int64]uint64{}}
}

// add puts one record of device id on a partition, as DetectStage.process
// does, and collects the windows handed on to scoring, before the barrier
// (barrier_test.go).
func (a *assemblyStage) add(part int, offset int64, id string, at time.Time) {
	a.collect(a.s.route(a.record(part, offset, id, at), nil))
}

// record puts one record of device id on a partition and returns the
// windows it closed.
func (a *assemblyStage) record(part int, offset int64, id string, at time.Time) []ClosedWindow {
	s := a.s
	p := s.partitions[part]
	if p == nil {
		p = newPartitionWindows(s.cfg.Window, int32(part))
		p.model, p.deferVector = s.deviceModel, true
		if cp, ok := s.restored[part]; ok {
			p.resume(cp)
			delete(s.restored, part)
		}
		s.partitions[part] = p
	}
	s.closed, _ = p.Add(id, "meter", at, offset, features.Flow{Dst: 7, DstPort: 443, BytesOut: 100, PacketsOut: 1}, s.closed[:0])
	return s.closed
}

func (a *assemblyStage) drain(now time.Time) { a.collect(a.s.drainAssembled(now, nil)) }

func (a *assemblyStage) collect(ws []ClosedWindow) {
	for _, cw := range ws {
		if cw.DeviceID == "a" {
			if _, again := a.flows[cw.Index]; again {
				a.t.Fatalf("window %d of a scored twice", cw.Index)
			}
			a.flows[cw.Index] = cw.window.Flows()
		}
		cw.observe(nil) // as the detector does before judging it
		if cw.Vector[features.Flows] != float64(cw.window.Flows()) {
			a.t.Fatalf("window %d: vector counts %v flows, window %d", cw.Index, cw.Vector[features.Flows], cw.window.Flows())
		}
		a.scored = append(a.scored, cw)
		a.s.release(&cw, true)
	}
}

// Records not keyed by device spread a device's minute over every
// partition. The stage scores one window per minute, holding all of the
// minute's flows, once no partition can add to it; until then the parts'
// records are not committed, and the checkpoint names them so that a
// restart from the committed offsets scores the same window once.
func TestPartsOfADeviceOnSeveralPartitionsAreScoredAsOneWindow(t *testing.T) {
	t0 := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	type rec struct {
		part   int
		offset int64
		at     time.Time
	}
	// Device "a", round-robin over four partitions: 12 flows a minute,
	// three on each partition, for three minutes.
	var recs []rec
	next := map[int]int64{}
	for i := range 36 {
		part := i % 4
		recs = append(recs, rec{part, next[part], t0.Add(time.Duration(i) * 5 * time.Second)})
		next[part]++
	}
	a := newAssemblyStage(t, 4, nil)
	// The first minute, and records of the second on partitions 0–2 up
	// to 90 s (partition 3's at 75 s still to come): their watermarks pass
	// minute 0's end and lateness, and their parts of it close;
	// partition 3's is still open.
	first15 := append(recs[:15:15], recs[16:19]...)
	for _, r := range first15 {
		a.add(r.part, r.offset, "a", r.at)
	}
	a.drain(t0.Add(time.Hour))
	if len(a.scored) != 0 {
		t.Fatalf("a window scored while partition 3 still had its part open: %+v", a.flows)
	}
	if a.s.asm.parts != 3 {
		t.Fatalf("%d parts waiting, want 3", a.s.asm.parts)
	}
	// The waiting parts' records are not committable, and the checkpoint
	// says which window they wait in.
	first, held := a.s.waitingFrom()
	for part := range 3 {
		if off := first[int32(part)]; off != 0 {
			t.Fatalf("partition %d: oldest waiting offset %d, want 0", part, off)
		}
		if h := held[int32(part)]["a"]; h != t0.UnixNano() {
			t.Fatalf("partition %d: held window %d, want %d", part, h, t0.UnixNano())
		}
	}
	checkpoints := map[int]partitionCheckpoint{}
	committed := map[int]int64{}
	for part, p := range a.s.partitions {
		off := p.committable()
		if f, ok := first[int32(part)]; ok && f-1 < off {
			off = f - 1
		}
		committed[part] = off
		checkpoints[part] = p.checkpoint(held[int32(part)])
	}
	for part, off := range committed {
		if off != -1 {
			t.Fatalf("partition %d committable through %d with its minute-0 part unscored", part, off)
		}
	}

	// The rest: every minute is scored once, with all its 12 flows.
	for _, r := range append([]rec{recs[15]}, recs[19:]...) {
		a.add(r.part, r.offset, "a", r.at)
	}
	a.drain(t0.Add(time.Hour))
	if got := a.flows[t0.Unix()/60]; got != 12 {
		t.Fatalf("minute 0 scored with %d flows, want 12 (scored %v)", got, a.flows)
	}
	if got := a.flows[t0.Unix()/60+1]; got != 12 {
		t.Fatalf("minute 1 scored with %d flows, want 12 (scored %v)", got, a.flows)
	}
	if n := len(a.scored[0].Others); n != 3 {
		t.Fatalf("joined window names %d other partitions, want 3", n)
	}
	// A restart from the checkpoint taken while minute 0 waited: the
	// partitions are read again from the committed offsets, and minute 0
	// is rebuilt and scored once, whole, though the restored watermarks
	// have passed it.
	b := newAssemblyStage(t, 4, checkpoints)
	for _, r := range recs {
		if r.offset > committed[r.part] {
			b.add(r.part, r.offset, "a", r.at)
		}
	}
	b.drain(t0.Add(time.Hour))
	if got := b.flows[t0.Unix()/60]; got != 12 {
		t.Fatalf("after the restart minute 0 scored with %d flows, want 12 (scored %v)", got, b.flows)
	}
}

// A device seen on one partition only — records keyed by device — has each
// window handed on as its partition closes it, without waiting for parts
// (it may still wait for the other partitions to be done with its window
// index: barrier_test.go).
func TestKeyedDeviceWindowsAreScoredWithoutWaiting(t *testing.T) {
	t0 := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	a := newAssemblyStage(t, 2, nil)
	a.add(1, 0, "b", t0) // another device keeps partition 1 busy
	a.add(0, 0, "a", t0)
	a.add(0, 1, "a", t0.Add(30*time.Second))
	a.add(0, 2, "a", t0.Add(70*time.Second))
	if got := a.flows[t0.Unix()/60]; got != 2 || a.s.asm.parts != 0 {
		t.Fatalf("keyed window: %d flows scored at once, %d parts waiting", got, a.s.asm.parts)
	}
}

// A partition that has delivered everything it holds and stays silent does
// not hold back the windows of a device it once carried: after idleAfter
// they are scored without its part.
func TestAnIdlePartitionHoldsNoWindowBack(t *testing.T) {
	t0 := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	a := newAssemblyStage(t, 2, nil)
	a.add(1, 0, "a", t0.Add(10*time.Second))
	a.add(1, 1, "b", t0.Add(80*time.Second)) // partition 1's watermark closes a's minute 0 there
	for i := range 3 {
		a.add(0, int64(i), "a", t0.Add(time.Duration(60*i+70)*time.Second))
	}
	minute1 := t0.Unix()/60 + 1
	a.drain(t0)
	if _, ok := a.flows[minute1]; ok {
		t.Fatal("minute 1 scored while partition 1 might still bring records of it")
	}
	quiet := time.Date(2026, 11, 26, 15, 0, 0, 0, time.UTC)
	for _, p := range a.s.partitions {
		p.caughtUp, p.lastRecord = true, quiet
	}
	a.drain(quiet.Add(idleAfter / 2))
	if _, ok := a.flows[minute1]; ok {
		t.Fatal("minute 1 scored before partition 1 had been silent for idleAfter")
	}
	a.drain(quiet.Add(idleAfter))
	if got := a.flows[minute1]; got != 1 {
		t.Fatalf("minute 1 scored with %d flows after partition 1 went idle, want 1 (scored %v)", got, a.flows)
	}
}

// When every producer pauses, the partitions stay level and nothing is
// forced: the device's window waits for event time to move on, as a
// window of keyed records does, and so is scored whole when traffic
// resumes.
func TestAPauseOfEveryPartitionForcesNoWindow(t *testing.T) {
	t0 := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	a := newAssemblyStage(t, 2, nil)
	a.add(1, 0, "a", t0.Add(10*time.Second))
	a.add(1, 1, "b", t0.Add(75*time.Second))
	a.add(0, 0, "a", t0.Add(70*time.Second))
	a.add(0, 1, "a", t0.Add(135*time.Second)) // partition 0's watermark closes a's minute 1 there
	quiet := time.Date(2026, 11, 26, 15, 0, 0, 0, time.UTC)
	for _, p := range a.s.partitions {
		p.caughtUp, p.lastRecord = true, quiet
	}
	a.drain(quiet.Add(time.Hour))
	minute1 := t0.Unix()/60 + 1
	if _, ok := a.flows[minute1]; ok {
		t.Fatal("a pause of both partitions forced minute 1 out before partition 1 could add to it")
	}
	a.add(1, 2, "a", t0.Add(100*time.Second))
	a.add(1, 3, "b", t0.Add(200*time.Second))
	a.drain(quiet.Add(time.Hour))
	if got := a.flows[minute1]; got != 2 {
		t.Fatalf("minute 1 scored with %d flows after the pause, want 2 (scored %v)", got, a.flows)
	}
}

// A poll's partitions are taken in timestamp order, each partition's
// records in their own order, and a record older than another partition's
// next one is never held behind it.
func TestInterleaveTakesPartitionsInTimestampOrder(t *testing.T) {
	t0 := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	mk := func(part int32, secs ...int) kgo.FetchTopicPartition {
		fp := kgo.FetchTopicPartition{}
		fp.Partition = part
		for i, s := range secs {
			fp.Records = append(fp.Records, &kgo.Record{Partition: part, Offset: int64(i), Timestamp: t0.Add(time.Duration(s) * time.Second)})
		}
		return fp
	}
	// Partition 2's records are out of order within it: its own order is
	// kept. Equal timestamps go a partition at a time.
	parts := []kgo.FetchTopicPartition{mk(0, 0, 10, 20, 30), mk(1, 5, 6, 25), mk(2, 1, 40, 2)}
	var got []string
	err := interleave(parts, func(r *kgo.Record) error {
		got = append(got, fmt.Sprintf("%d/%d", r.Partition, r.Offset))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	want := "0/0 2/0 1/0 1/1 0/1 0/2 1/2 0/3 2/1 2/2"
	if s := strings.Join(got, " "); s != want {
		t.Fatalf("order %s\nwant  %s", s, want)
	}
	stop := errors.New("stop")
	n := 0
	if err := interleave(parts, func(*kgo.Record) error {
		if n++; n == 3 {
			return stop
		}
		return nil
	}); err != stop || n != 3 {
		t.Fatalf("error after %d records: %v", n, err)
	}
}
