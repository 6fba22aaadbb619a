package integrity

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/chainwatch/chainwatch/ledgerclient/contract"
)

// A seal binds every batch an anchoring stage cut in one period, of all its
// partitions and topics, to one root on the ledger (contract.Seal), so that
// the ledger grows by one small record a period whatever the number of
// partitions. The period's tree has one leaf per batch descriptor, in the
// order the stage sealed them:
//
//	SHA-256(0x00 ‖ "chainwatch/batch/v1" ‖ len(stream) ‖ stream ‖ partition ‖
//	        first_offset ‖ last_offset ‖ count ‖ merkle_root ‖
//	        first_timestamp_ms ‖ last_timestamp_ms)
//
// with len(stream) and partition as 4-byte and the others as 8-byte
// big-endian integers and merkle_root the batch's 32-byte root. The 0x00
// prefix is RFC 6962's leaf prefix; the label keeps a descriptor from ever
// hashing like a record leaf. The tree over the leaves is MerkleRoot's, so a
// batch is proven to its seal by the same inclusion proofs (RFC 6962 §2.1.1)
// as a record to its batch.
//
// The descriptors themselves are kept in the batch index (LeafTopic, one
// record per seal) and are believed only when they hash to the seal's
// root on the ledger: an index that was altered, or that lost a batch,
// no longer does.

// BatchLeaf is the seal-tree leaf of one batch descriptor. The batch's
// MerkleRoot must be hex (as validated by the ledger for single anchors
// and by SealBatches' caller here).
func BatchLeaf(a contract.Anchor) ([32]byte, error) {
	root, err := decodeHash(a.MerkleRoot)
	if err != nil {
		return [32]byte{}, fmt.Errorf("batch %s: merkle root: %w", a.ID, err)
	}
	b := make([]byte, 0, 1+19+4+len(a.Stream)+4+8*5+32)
	b = append(b, 0x00)
	b = append(b, "chainwatch/batch/v1"...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(a.Stream)))
	b = append(b, a.Stream...)
	b = binary.BigEndian.AppendUint32(b, uint32(a.Partition))
	b = binary.BigEndian.AppendUint64(b, uint64(a.FirstOffset))
	b = binary.BigEndian.AppendUint64(b, uint64(a.LastOffset))
	b = binary.BigEndian.AppendUint64(b, uint64(a.Count))
	b = append(b, root[:]...)
	b = binary.BigEndian.AppendUint64(b, uint64(a.FirstTimestamp.UnixMilli()))
	b = binary.BigEndian.AppendUint64(b, uint64(a.LastTimestamp.UnixMilli()))
	return sha256.Sum256(b), nil
}

// BatchLeaves hashes a seal's batch descriptors.
func BatchLeaves(batches []contract.Anchor) ([][32]byte, error) {
	leaves := make([][32]byte, len(batches))
	for i, a := range batches {
		var err error
		if leaves[i], err = BatchLeaf(a); err != nil {
			return nil, err
		}
	}
	return leaves, nil
}

// NewSeal builds the seal of a period's batches (their ids set): its id,
// made at now with a random suffix, its root, batch and record counts and
// the span of the records' timestamps.
func NewSeal(now time.Time, batches []contract.Anchor) (contract.Seal, error) {
	if len(batches) == 0 {
		return contract.Seal{}, fmt.Errorf("a seal needs at least one batch")
	}
	leaves, err := BatchLeaves(batches)
	if err != nil {
		return contract.Seal{}, err
	}
	var suffix [8]byte
	if _, err := rand.Read(suffix[:]); err != nil {
		return contract.Seal{}, err
	}
	root := MerkleRoot(leaves)
	s := contract.Seal{ID: contract.NewSealID(now, hex.EncodeToString(suffix[:])), Root: hex.EncodeToString(root[:]),
		Batches: len(batches), FirstTimestamp: batches[0].FirstTimestamp, LastTimestamp: batches[0].LastTimestamp}
	for _, a := range batches {
		s.Records += a.Count
		if a.FirstTimestamp.Before(s.FirstTimestamp) {
			s.FirstTimestamp = a.FirstTimestamp
		}
		if a.LastTimestamp.After(s.LastTimestamp) {
			s.LastTimestamp = a.LastTimestamp
		}
	}
	return s, nil
}
