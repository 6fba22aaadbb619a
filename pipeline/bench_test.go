package pipeline

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/chainwatch/chainwatch/models/features"
	"github.com/chainwatch/chainwatch/pipeline/decode"
	"github.com/chainwatch/chainwatch/pipeline/integrity"
)

// Benchmarks of the pipeline's per-record costs; docs/BENCHMARKS.md quotes
// them. Run with: go test ./pipeline -run '^$' -bench . -benchmem

var benchRecord = []byte(`{"device_id":"meter-0007","time_ms":1764000000000,"src_ip":"10.20.0.7","src_mac":"02:00:0a:14:00:07","src_port":50123,"dst_ip":"52.16.0.3","dst_port":443,"proto":"tcp","bytes_out":900,"bytes_in":410,"packets_out":1,"packets_in":1,"tcp_flags":27}`)

// BenchmarkDecodeNativeFlow is the decode step of every flow record of the
// native schema, through decode.Flow as the service calls it (the format
// told from the record).
func BenchmarkDecodeNativeFlow(b *testing.B) {
	var r decode.FlowRecord
	b.ReportAllocs()
	for b.Loop() {
		if err := decode.Flow(benchRecord, &r); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkWindowAdd is the windowing and feature step of every record: 4,000
// devices on one partition, event time advancing one second per 100 records.
func BenchmarkWindowAdd(b *testing.B) {
	p := newPartitionWindows(WindowConfig{}, 0)
	ids := make([]string, 4000)
	for i := range ids {
		ids[i] = fmt.Sprintf("meter-%05d", i)
	}
	t0 := time.Date(2026, 11, 24, 0, 0, 0, 0, time.UTC)
	var closed []ClosedWindow
	i := 0
	b.ReportAllocs()
	for b.Loop() {
		f := features.Flow{Dst: uint64(i % 7), DstPort: 443, BytesOut: 900, BytesIn: 400, PacketsOut: 1, PacketsIn: 1}
		closed, _ = p.Add(ids[i%len(ids)], "meter", t0.Add(time.Duration(i/100)*time.Second), int64(i), f, closed[:0])
		for k := range closed {
			p.Release(&closed[k], true)
		}
		i++
	}
}

// BenchmarkAnchorLeaf is anchoring's per-record cost: the leaf hash plus its
// share of the Merkle tree over a 5,000-record batch.
func BenchmarkAnchorLeaf(b *testing.B) {
	leaves := make([][32]byte, 0, 5000)
	var h integrity.LeafHasher // as the anchoring stage hashes
	i := 0
	b.ReportAllocs()
	for b.Loop() {
		leaves = append(leaves, h.Hash(int64(i), 1764000000000, []byte("meter-0007"), benchRecord))
		if len(leaves) == cap(leaves) {
			_ = integrity.MerkleRoot(leaves)
			leaves = leaves[:0]
		}
		i++
	}
}

// TestMemoryPerTrackedDevice measures the heap a tracked device costs once
// its windows have closed (its history of destinations stays): the state
// every instance keeps per device between windows. It reports, and checks
// only that the measurement is sane; the target is in docs/BENCHMARKS.md.
func TestMemoryPerTrackedDevice(t *testing.T) {
	const n = 50_000
	p := newPartitionWindows(WindowConfig{}, 0)
	stage := &DetectStage{models: map[string]*deviceModel{}} // the models, one per device, as the stage keeps them
	p.model = stage.deviceModel
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("camera-%06d", i)
	}
	t0 := time.Date(2026, 11, 24, 0, 0, 0, 0, time.UTC)
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	var closed []ClosedWindow
	for round := range 2 {
		for i, id := range ids {
			for d := range 6 { // six usual peers per device
				f := features.Flow{Dst: uint64(i*10 + d), DstPort: 443, BytesOut: 900, PacketsOut: 1}
				closed, _ = p.Add(id, "camera", t0.Add(time.Duration(round)*time.Minute), int64(round*n*6+i*6+d), f, closed[:0])
				for k := range closed {
					p.Release(&closed[k], true)
				}
			}
		}
	}
	closed, _ = p.Add("tick", "camera", t0.Add(5*time.Minute), int64(2*n*6), features.Flow{}, closed[:0])
	for k := range closed {
		p.Release(&closed[k], true)
	}
	p.free = nil // pooled windows are shared, not per device
	runtime.GC()
	runtime.ReadMemStats(&after)
	perDevice := float64(after.HeapAlloc-before.HeapAlloc) / n
	t.Logf("heap per tracked device: %.0f bytes (%d devices)", perDevice, len(p.devices))
	if perDevice <= 0 || perDevice > 64<<10 {
		t.Fatalf("implausible measurement: %.0f bytes per device", perDevice)
	}
	runtime.KeepAlive(p)
	runtime.KeepAlive(stage)
}
