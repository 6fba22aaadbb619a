package integrity

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/chainwatch/chainwatch/ledgerclient/contract"
)

// The batch index: which batches each seal on the ledger holds. It lives
// in the leaf topic, one record per seal, and is held in memory by every
// reader of it (a few hundred bytes a batch) until the audit lets a seal
// go: once every batch of the seal has expired and its leaf hashes were
// deleted, the seal's record is deleted too (Forget), so the index's size
// follows the retained history, not the ledger's.

// sealKeyPrefix starts the key of a seal's record in the leaf topic.
const sealKeyPrefix = "@seal/"

// sealRecord is a seal's value in the index: the batch descriptors and
// their leaves in the seal's tree (hex). The leaves are what the seal's
// root is checked against, and each descriptor against its own leaf, so
// that a descriptor altered in the index marks that batch alone.
type sealRecord struct {
	Batches []contract.Anchor `json:"batches"`
	Leaves  []string          `json:"leaves"`
}

type streamPartition struct {
	stream    string
	partition int32
}

// batchRef is one batch of a seal in the index.
type batchRef struct {
	seal string
	i    int
}

// PutSeal keeps a seal's batch descriptors; it returns once they are
// acknowledged. The descriptors' ledger fields (TxID and the like) are not
// kept: the seal on the ledger gives them.
func (t *LeafTopic) PutSeal(ctx context.Context, sealID string, batches []contract.Anchor) error {
	rec := sealRecord{Batches: make([]contract.Anchor, len(batches)), Leaves: make([]string, len(batches))}
	for i, a := range batches {
		a.TxID, a.AnchoredBy, a.AnchoredAt = "", "", time.Time{}
		rec.Batches[i] = a
		leaf, err := BatchLeaf(a)
		if err != nil {
			return err
		}
		rec.Leaves[i] = hex.EncodeToString(leaf[:])
	}
	v, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	if err := t.writer.WriteMessages(ctx, kafka.Message{Key: []byte(sealKeyPrefix + sealID), Value: v}); err != nil {
		return fmt.Errorf("batch index %s: %w", t.topic, err)
	}
	return nil
}

// takeSeal takes a seal's record (nil: its tombstone) into the index. A
// record that does not decode is kept as a seal of no batches, which never
// hashes to a root on the ledger, so that a seal whose record was garbled
// is found, not skipped. t.mu is held.
func (t *LeafTopic) takeSeal(id string, value []byte) {
	if old, ok := t.seals[id]; ok {
		for _, a := range old.batches {
			t.holders[a.ID] = slices.DeleteFunc(t.holders[a.ID], func(s string) bool { return s == id })
			if len(t.holders[a.ID]) == 0 {
				delete(t.holders, a.ID)
			}
			k := streamPartition{a.Stream, a.Partition}
			t.parts[k] = slices.DeleteFunc(t.parts[k], func(r batchRef) bool { return r.seal == id })
			if len(t.parts[k]) == 0 {
				delete(t.parts, k)
			}
		}
		delete(t.seals, id)
	}
	if value == nil {
		return
	}
	var rec sealRecord
	if err := json.Unmarshal(value, &rec); err != nil {
		rec = sealRecord{}
	}
	e := &sealEntry{batches: rec.Batches, altered: make([]bool, len(rec.Batches))}
	leaves := make([][32]byte, 0, len(rec.Leaves))
	for _, h := range rec.Leaves {
		leaf, err := decodeHash(h)
		if err != nil {
			leaves = nil
			break
		}
		leaves = append(leaves, leaf)
	}
	if len(leaves) > 0 && len(leaves) == len(rec.Batches) {
		e.root = MerkleRoot(leaves)
		for i, a := range rec.Batches {
			leaf, err := BatchLeaf(a)
			e.altered[i] = err != nil || leaf != leaves[i]
		}
	}
	t.seals[id] = e
	for i, a := range rec.Batches {
		k := streamPartition{a.Stream, a.Partition}
		t.parts[k] = append(t.parts[k], batchRef{seal: id, i: i})
		t.holders[a.ID] = append(t.holders[a.ID], id)
	}
}

// sealEntry is one seal as the index holds it: its batches and the root
// they hash to (zero if they do not decode).
type sealEntry struct {
	batches []contract.Anchor
	// root is the root over the record's leaves (zero if they do not
	// decode or do not match the batches in number); altered marks the
	// batches whose descriptor does not hash to its leaf.
	root    [32]byte
	altered []bool
}

// indexed is one batch as the index holds it, with its seal.
type indexed struct {
	contract.Anchor
	seal    string
	in      *sealEntry
	altered bool
}

// sealed lists the index's batches of a stream partition overlapping
// [from, to] (to < 0: no bound), after reading the topic to its end. They
// are what the index says; Anchors checks them against the ledger.
func (t *LeafTopic) sealed(ctx context.Context, stream string, partition int32, from, to int64) ([]indexed, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, _, err := t.sync(ctx, ""); err != nil {
		return nil, err
	}
	var out []indexed
	for _, r := range t.parts[streamPartition{stream, partition}] {
		e := t.seals[r.seal]
		if a := e.batches[r.i]; a.LastOffset >= from && (to < 0 || a.FirstOffset <= to) {
			out = append(out, indexed{a, r.seal, e, e.altered[r.i]})
		}
	}
	return out, nil
}

// hasSeal reports whether the index holds a seal, after reading the topic
// to its end.
func (t *LeafTopic) hasSeal(ctx context.Context, id string) (bool, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, _, err := t.sync(ctx, ""); err != nil {
		return false, err
	}
	_, ok := t.seals[id]
	return ok, nil
}

// forgetSealsOf deletes the index record of every seal holding the
// anchor whose leaf hashes were just deleted, once none of the seal's
// batches has leaf hashes left: the audit found them all expired.
func (t *LeafTopic) forgetSealsOf(ctx context.Context, anchorID string) error {
	t.mu.Lock()
	if _, _, err := t.sync(ctx, ""); err != nil {
		t.mu.Unlock()
		return err
	}
	var done []string
	for _, id := range t.holders[anchorID] {
		live := false
		for _, a := range t.seals[id].batches {
			if _, ok := t.index[a.ID]; ok && a.ID != anchorID {
				live = true
			}
		}
		if !live {
			done = append(done, id)
		}
	}
	t.mu.Unlock()
	for _, id := range done {
		if err := t.writer.WriteMessages(ctx, kafka.Message{Key: []byte(sealKeyPrefix + id), Value: nil}); err != nil {
			return fmt.Errorf("batch index %s: %w", t.topic, err)
		}
	}
	return nil
}
