package integrity

import (
	"encoding/hex"
	"strings"
	"testing"
	"time"

	"github.com/chainwatch/chainwatch/ledgerclient/contract"
)

// TestBatchLeafKnownValue pins the seal tree's leaf encoding to a value
// computed independently (Python's hashlib over the documented preimage),
// so that a change to it, which would make every existing seal unprovable,
// cannot pass unnoticed.
func TestBatchLeafKnownValue(t *testing.T) {
	a := contract.Anchor{Stream: "iot.flows@AAAAAAAAAAAAAAAAAAAAAA", Partition: 3, FirstOffset: 100, LastOffset: 199, Count: 100,
		MerkleRoot: strings.Repeat("ab", 32), FirstTimestamp: time.UnixMilli(1795600000000), LastTimestamp: time.UnixMilli(1795600005000)}
	leaf, err := BatchLeaf(a)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := hex.EncodeToString(leaf[:]), "dfef9d5460d0997a0d349cb2f32226c3e50de386ec7ed9bfe6bf712d6c4c8346"; got != want {
		t.Fatalf("BatchLeaf = %s, want %s", got, want)
	}
	a.MerkleRoot = "not hex"
	if _, err := BatchLeaf(a); err == nil {
		t.Error("a batch whose root is not a hex SHA-256 has a leaf")
	}
}

// TestSealProvesEachBatch builds a seal over batches of two partitions and
// checks that each batch's inclusion proof leads to the seal's root, and
// that the seal counts the records and spans their timestamps.
func TestSealProvesEachBatch(t *testing.T) {
	t0 := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	var batches []contract.Anchor
	for i := range 5 {
		root := LeafHash(int64(i), 0, nil, []byte{byte(i)})
		batches = append(batches, contract.Anchor{ID: contract.AnchorID("s", int32(i%2), int64(i*10), int64(i*10+9)), Stream: "s", Partition: int32(i % 2),
			FirstOffset: int64(i * 10), LastOffset: int64(i*10 + 9), Count: 10, MerkleRoot: hex.EncodeToString(root[:]),
			FirstTimestamp: t0.Add(time.Duration(i) * time.Second), LastTimestamp: t0.Add(time.Duration(i+1) * time.Second)})
	}
	seal, err := NewSeal(t0, batches)
	if err != nil {
		t.Fatal(err)
	}
	if seal.Batches != 5 || seal.Records != 50 || !seal.FirstTimestamp.Equal(t0) || !seal.LastTimestamp.Equal(t0.Add(5*time.Second)) {
		t.Fatalf("seal %+v", seal)
	}
	if !strings.HasPrefix(seal.ID, contract.NewSealID(t0, "")) {
		t.Errorf("seal id %s does not start with its time", seal.ID)
	}
	leaves, err := BatchLeaves(batches)
	if err != nil {
		t.Fatal(err)
	}
	root, _ := decodeHash(seal.Root)
	for i := range batches {
		if !VerifyInclusion(leaves[i], i, len(leaves), InclusionProof(leaves, i), root) {
			t.Errorf("batch %d does not prove to the seal's root", i)
		}
	}
	batches[2].Count = 11
	other, err := NewSeal(t0, batches)
	if err != nil {
		t.Fatal(err)
	}
	if other.Root == seal.Root {
		t.Error("a changed batch descriptor leaves the seal's root unchanged")
	}
}
