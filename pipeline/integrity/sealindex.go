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
// in the leaf topic, one record per seal, and every reader holds it in
// memory in compact form — 96 bytes a batch in per-partition arrays whose
// only pointer is to its seal, 135 with the arrays' spare capacity
// (BenchmarkBatchIndexMemory; 566 for the descriptors as decoded) — until
// the audit lets a seal go: once every batch of the seal has expired and
// its leaf hashes were deleted, the seal's record is deleted too (Forget),
// so the index's size follows the retained history, not the ledger's. A
// week of 32 partitions each cutting a batch every 5 s is 3.9 million
// batches, about 500 MiB.

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

// sealInfo is one seal as the index holds it.
type sealInfo struct {
	id string
	// root is the root over the record's leaves (zero if they do not
	// decode or do not match the batches in number); n the batches it
	// holds.
	root [32]byte
	n    int
	// parts are the partitions (indices into LeafTopic.parts) its
	// batches are in; live counts its batches whose leaf hashes are kept.
	parts []int32
	live  int
}

// partIndex is one stream partition's sealed batches, in sealed order.
type partIndex struct {
	key     streamPartition
	batches []compactBatch
}

// compactBatch is one sealed batch in memory: its descriptor without the
// strings its partition and root give, the offset of its leaf hashes in
// the topic (-1: deleted; -2: not read) and its place in its seal.
type compactBatch struct {
	first, last, count int64
	firstMs, lastMs    int64
	leafOff            int64
	root               [32]byte
	seal               *sealInfo
	pos                int32
	altered            bool
}

// anchor rebuilds the batch's descriptor.
func (b *compactBatch) anchor(k streamPartition) contract.Anchor {
	return contract.Anchor{ID: contract.AnchorID(k.stream, k.partition, b.first, b.last), Stream: k.stream, Partition: k.partition,
		FirstOffset: b.first, LastOffset: b.last, Count: b.count, MerkleRoot: hex.EncodeToString(b.root[:]),
		FirstTimestamp: time.UnixMilli(b.firstMs).UTC(), LastTimestamp: time.UnixMilli(b.lastMs).UTC()}
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
		t.dropSeal(old)
	}
	if value == nil {
		return
	}
	var rec sealRecord
	if err := json.Unmarshal(value, &rec); err != nil {
		rec = sealRecord{}
	}
	info := &sealInfo{id: id, n: len(rec.Batches), parts: make([]int32, 0, len(rec.Batches))}
	leaves := make([][32]byte, 0, len(rec.Leaves))
	for _, h := range rec.Leaves {
		leaf, err := decodeHash(h)
		if err != nil {
			leaves = nil
			break
		}
		leaves = append(leaves, leaf)
	}
	matched := len(leaves) > 0 && len(leaves) == len(rec.Batches)
	if matched {
		info.root = MerkleRoot(leaves)
	}
	t.seals[id] = info
	for i, a := range rec.Batches {
		root, rootErr := decodeHash(a.MerkleRoot)
		leaf, err := BatchLeaf(a)
		b := compactBatch{first: a.FirstOffset, last: a.LastOffset, count: a.Count, firstMs: a.FirstTimestamp.UnixMilli(),
			lastMs: a.LastTimestamp.UnixMilli(), leafOff: -2, root: root, seal: info, pos: int32(i),
			altered: !matched || err != nil || rootErr != nil || leaf != leaves[i] ||
				a.ID != contract.AnchorID(a.Stream, a.Partition, a.FirstOffset, a.LastOffset)}
		if off, ok := t.index[a.ID]; ok {
			b.leafOff = off
			delete(t.index, a.ID)
			info.live++
		}
		p := t.partOf(streamPartition{a.Stream, a.Partition})
		t.parts[p].batches = append(t.parts[p].batches, b)
		if !slices.Contains(info.parts, p) {
			info.parts = append(info.parts, p)
		}
	}
}

// dropSeal removes a seal and its batches from the index; the offsets of
// their leaf hashes go back to t.index, for the seal's record read anew or
// another seal of the same batch. t.mu is held.
func (t *LeafTopic) dropSeal(info *sealInfo) {
	for _, p := range info.parts {
		k := t.parts[p].key
		t.parts[p].batches = slices.DeleteFunc(t.parts[p].batches, func(b compactBatch) bool {
			if b.seal != info {
				return false
			}
			id := contract.AnchorID(k.stream, k.partition, b.first, b.last)
			if off, ok := t.index[id]; b.leafOff >= 0 && (!ok || b.leafOff > off) {
				t.index[id] = b.leafOff
			}
			return true
		})
	}
	delete(t.seals, info.id)
}

// partOf is the index of a stream partition in t.parts, added if new.
// t.mu is held.
func (t *LeafTopic) partOf(k streamPartition) int32 {
	p, ok := t.partIdx[k]
	if !ok {
		p = int32(len(t.parts))
		t.parts = append(t.parts, partIndex{key: k})
		t.partIdx[k] = p
	}
	return p
}

// batchesOf calls fn for each sealed batch with the given anchor id, from
// the oldest (where retention looks). t.mu is held.
func (t *LeafTopic) batchesOf(anchorID string, fn func(*compactBatch)) {
	stream, partition, first, last, err := splitAnchorID(anchorID)
	if err != nil {
		return
	}
	p, ok := t.partIdx[streamPartition{stream, partition}]
	if !ok {
		return
	}
	bs := t.parts[p].batches
	for i := range bs {
		if bs[i].first == first && bs[i].last == last {
			fn(&bs[i])
		}
	}
}

// leafOffset is where an anchor's newest leaf hashes are in the topic:
// pending (read before its seal, or put again since) or held by its
// sealed batch. t.mu is held.
func (t *LeafTopic) leafOffset(anchorID string) (int64, bool) {
	if off, ok := t.index[anchorID]; ok {
		return off, true
	}
	off, found := int64(-1), false
	t.batchesOf(anchorID, func(b *compactBatch) {
		if b.leafOff >= 0 {
			off, found = max(off, b.leafOff), true
		}
	})
	return off, found
}

// forgetLeaves takes the tombstone of an anchor's leaf hashes. t.mu is held.
func (t *LeafTopic) forgetLeaves(anchorID string) {
	delete(t.index, anchorID)
	t.batchesOf(anchorID, func(b *compactBatch) {
		if b.leafOff >= 0 {
			b.seal.live--
		}
		b.leafOff = -1
	})
}

// indexed is one batch as the index holds it, with its seal.
type indexed struct {
	contract.Anchor
	seal    string
	in      *sealInfo
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
	k := streamPartition{stream, partition}
	p, ok := t.partIdx[k]
	if !ok {
		return nil, nil
	}
	var out []indexed
	for i := range t.parts[p].batches {
		b := &t.parts[p].batches[i]
		if b.last >= from && (to < 0 || b.first <= to) {
			out = append(out, indexed{b.anchor(k), b.seal.id, b.seal, b.altered})
		}
	}
	return out, nil
}

// sealDescriptors returns a seal's batch descriptors in sealed order, as
// the index holds them.
func (t *LeafTopic) sealDescriptors(id string) ([]contract.Anchor, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	info, ok := t.seals[id]
	if !ok {
		return nil, false
	}
	out := make([]contract.Anchor, info.n)
	for _, p := range info.parts {
		for i := range t.parts[p].batches {
			if b := &t.parts[p].batches[i]; b.seal == info {
				out[b.pos] = b.anchor(t.parts[p].key)
			}
		}
	}
	return out, true
}

// missingSeals returns those of ids the index does not hold, after
// reading the topic to its end once.
func (t *LeafTopic) missingSeals(ctx context.Context, ids []string) ([]string, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, _, err := t.sync(ctx, ""); err != nil {
		return nil, err
	}
	var out []string
	for _, id := range ids {
		if _, ok := t.seals[id]; !ok {
			out = append(out, id)
		}
	}
	return out, nil
}

// forgetSealsOf deletes the index record of every seal holding the anchor
// whose leaf hashes were just deleted, once none of the seal's batches has
// leaf hashes left: the audit found them all expired.
func (t *LeafTopic) forgetSealsOf(ctx context.Context, anchorID string) error {
	t.mu.Lock()
	if _, _, err := t.sync(ctx, ""); err != nil {
		t.mu.Unlock()
		return err
	}
	var done []string
	t.batchesOf(anchorID, func(b *compactBatch) {
		if b.seal.live <= 0 && !slices.Contains(done, b.seal.id) {
			done = append(done, b.seal.id)
		}
	})
	t.mu.Unlock()
	for _, id := range done {
		if err := t.writer.WriteMessages(ctx, kafka.Message{Key: []byte(sealKeyPrefix + id), Value: nil}); err != nil {
			return fmt.Errorf("batch index %s: %w", t.topic, err)
		}
	}
	return nil
}
