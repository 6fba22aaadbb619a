package integrity

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/chainwatch/chainwatch/ledgerclient/contract"
)

// newIndexForTest is a leaf topic's in-memory index with no topic behind.
func newIndexForTest() *LeafTopic {
	return &LeafTopic{index: map[string]int64{}, seals: map[string]*sealInfo{}, partIdx: map[streamPartition]int32{}}
}

// sealValue is the index record of a seal over batches of the given
// partitions, each of 100 records from offset first.
func sealValue(t testing.TB, first int64, partitions ...int32) (string, []contract.Anchor) {
	var rec sealRecord
	for _, p := range partitions {
		root := LeafHash(first, int64(p), nil, nil)
		a := contract.Anchor{Stream: "iot.flows@x", Partition: p, FirstOffset: first, LastOffset: first + 99, Count: 100,
			MerkleRoot: hex.EncodeToString(root[:]), FirstTimestamp: time.UnixMilli(1795600000000).UTC(), LastTimestamp: time.UnixMilli(1795600005000).UTC()}
		a.ID = contract.AnchorID(a.Stream, a.Partition, a.FirstOffset, a.LastOffset)
		leaf, err := BatchLeaf(a)
		if err != nil {
			t.Fatal(err)
		}
		rec.Batches = append(rec.Batches, a)
		rec.Leaves = append(rec.Leaves, hex.EncodeToString(leaf[:]))
	}
	v, err := json.Marshal(rec)
	if err != nil {
		t.Fatal(err)
	}
	return string(v), rec.Batches
}

// TestBatchIndexKeepsLeafOffsets follows one seal through the index: the
// leaf hashes read before it move into its batches, a record read again
// (a retried write, an altered copy) keeps them, descriptors come back as
// sealed, and the seal's count of batches with leaf hashes reaches zero
// only when the last is deleted.
func TestBatchIndexKeepsLeafOffsets(t *testing.T) {
	x := newIndexForTest()
	v, batches := sealValue(t, 0, 0, 1, 0)
	batches[2].FirstOffset, batches[2].LastOffset = 100, 199 // a second batch of partition 0
	batches[2].ID = contract.AnchorID(batches[2].Stream, 0, 100, 199)
	leaf, _ := BatchLeaf(batches[2])
	var rec sealRecord
	_ = json.Unmarshal([]byte(v), &rec)
	rec.Batches[2], rec.Leaves[2] = batches[2], hex.EncodeToString(leaf[:])
	raw, _ := json.Marshal(rec)
	for i, a := range batches {
		x.index[a.ID] = int64(i)
	}
	x.takeSeal("s1", raw)
	x.takeSeal("s1", raw) // read again
	info := x.seals["s1"]
	if info == nil || info.live != 3 || info.n != 3 || len(x.index) != 0 {
		t.Fatalf("seal %+v, pending leaves %v: want 3 batches with their leaf offsets", info, x.index)
	}
	got, ok := x.sealDescriptors("s1")
	if !ok || len(got) != 3 {
		t.Fatalf("descriptors %+v", got)
	}
	for i := range got {
		if got[i] != batches[i] {
			t.Errorf("descriptor %d: %+v, sealed %+v", i, got[i], batches[i])
		}
	}
	if off, ok := x.leafOffset(batches[1].ID); !ok || off != 1 {
		t.Errorf("leaf offset of %s: %d, %v", batches[1].ID, off, ok)
	}
	for i, a := range batches {
		x.forgetLeaves(a.ID)
		if want := 2 - i; info.live != want {
			t.Fatalf("after deleting %d batches' leaves: %d live, want %d", i+1, info.live, want)
		}
	}
	x.takeSeal("s1", nil)
	if len(x.seals) != 0 || len(x.parts[0].batches) != 0 || len(x.parts[1].batches) != 0 {
		t.Errorf("after the seal's tombstone: %d seals, %d and %d batches", len(x.seals), len(x.parts[0].batches), len(x.parts[1].batches))
	}
}

// BenchmarkBatchIndexMemory reports the index's resident bytes per sealed
// batch: 3,000 seals of 32 partitions' batches each.
func BenchmarkBatchIndexMemory(b *testing.B) {
	for range b.N {
		x := newIndexForTest()
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		n := 0
		for s := range 3000 {
			parts := make([]int32, 32)
			for p := range parts {
				parts[p] = int32(p)
			}
			v, batches := sealValue(b, int64(s)*100, parts...)
			for _, a := range batches {
				x.index[a.ID] = int64(n)
				n++
			}
			x.takeSeal(fmt.Sprintf("%013d-%016x", s, s), []byte(v))
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/float64(n), "bytes/batch")
		runtime.KeepAlive(x)
	}
}
