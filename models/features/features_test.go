package features

import (
	"math"
	"testing"
)

func TestVectorOfKnownWindow(t *testing.T) {
	w := NewWindow()
	// Four flows: two to port 443 on dst 1, one to 53 on dst 2, one failed to 22 on dst 3.
	w.Add(Flow{Dst: 1, DstPort: 443, BytesOut: 100, BytesIn: 300, PacketsOut: 2, PacketsIn: 2})
	w.Add(Flow{Dst: 1, DstPort: 443, BytesOut: 100, BytesIn: 300, PacketsOut: 2, PacketsIn: 2})
	w.Add(Flow{Dst: 2, DstPort: 53, BytesOut: 60, BytesIn: 120, PacketsOut: 1, PacketsIn: 1})
	w.Add(Flow{Dst: 3, DstPort: 22, BytesOut: 60, PacketsOut: 1, Failed: true})
	var h History
	h.Add(1)
	h.Add(2)
	v := w.Vector(h.Contains)
	want := Vector{
		Flows: 4, BytesOut: 320, BytesIn: 720, Packets: 11,
		DistinctDst: 3, DistinctDstPorts: 3,
		DstPortEntropy: 1.5, // p = ½, ¼, ¼ → ½·1 + 2·¼·2
		NewDstShare:    1.0 / 3,
		FailedShare:    0.25,
		BytesPerPacket: 1040.0 / 11,
	}
	for i := range v {
		if math.Abs(v[i]-want[i]) > 1e-12 {
			t.Errorf("%s = %v, want %v", Names[i], v[i], want[i])
		}
	}
	w.Reset()
	if w.Flows() != 0 || w.Vector(nil) != (Vector{}) {
		t.Error("Reset left state behind")
	}
	// The reply leg of a unidirectional record only adds traffic received.
	w.Add(Flow{Inbound: true, BytesIn: 900, PacketsIn: 3})
	if v := w.Vector(nil); v[Flows] != 0 || v[BytesIn] != 900 || v[Packets] != 3 || v[BytesPerPacket] != 300 || v[DistinctDst] != 0 {
		t.Errorf("inbound-only window %v", v)
	}
}

func TestHistoryEvictsUnusedFirst(t *testing.T) {
	var h History
	for d := uint64(0); d < HistorySize; d++ {
		h.Add(d)
	}
	h.Contains(0) // used again: survives the next eviction
	h.Add(1000)
	if !h.Contains(0) || !h.Contains(1000) || h.Len() != HistorySize {
		t.Fatalf("clock eviction dropped a used destination (len %d)", h.Len())
	}
	if h.Contains(1) {
		t.Fatal("unused destination 1 should have been evicted")
	}
}

func TestHistoryCheckpointRoundTrip(t *testing.T) {
	var h History
	for d := uint64(0); d < HistorySize+5; d++ {
		h.Add(d * 7)
	}
	h.Contains(14)
	b, _ := h.MarshalBinary()
	var g History
	if err := g.UnmarshalBinary(b); err != nil || g != h {
		t.Fatalf("round trip changed the history (%v)", err)
	}
	if err := g.UnmarshalBinary(b[:10]); err == nil {
		t.Fatal("damaged checkpoint accepted")
	}
}
