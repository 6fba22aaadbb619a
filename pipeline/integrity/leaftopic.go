package integrity

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/chainwatch/chainwatch/pipeline/kafkaconn"
)

// Retention deletes a partition's oldest records in whole segments, whose
// boundaries never line up with anchored batches: the first anchored range
// that survives has lost its first records. Its root on the ledger can
// still prove the records that survive, given the deleted records' leaf
// hashes: the anchoring stage keeps every batch's leaf hashes in a
// compacted topic, keyed by anchor id. They are not trusted for what they
// say — a replay accepts them only if they hash to the anchored root — so
// the topic needs no protection beyond the ledger's.
//
// (A batch's Merkle tree could be summarised for any deleted prefix by
// RFC 6962 compact ranges, log₂ n hashes instead of n; but which prefix
// retention will cut is not known when the batch is anchored, and the
// leaves are what any prefix's summary is computed from. At 32 bytes a
// record they cost an eighth or less of the records they prove, and the
// audit deletes them with their anchor's last record.)

// ErrLeavesMissing is an anchor whose leaf hashes were never kept (anchored
// by an older chainwatch) or were deleted.
var ErrLeavesMissing = errors.New("leaf hashes of the anchor are not kept")

// LeafSource gives an anchor's leaf hashes.
type LeafSource interface {
	Leaves(ctx context.Context, anchorID string) ([][32]byte, error)
}

// LeafTopic keeps anchors' leaf hashes in a compacted topic of one
// partition: key the anchor id, value the leaf hashes concatenated (a
// tombstone once the anchor's records are all deleted). The same topic is
// the batch index: key "@seal/" and a seal's id (no topic name holds '@'),
// value the seal's batch descriptors (seal.go), which a seal on the ledger
// proves.
type LeafTopic struct {
	kafka  *kafkaconn.Cluster
	topic  string
	writer *kafka.Writer

	mu      sync.Mutex
	index   map[string]int64 // anchor id → offset of its newest record
	scanned int64            // offsets below this are indexed
	// index holds the offsets of leaf hashes read before their seal (or
	// of anchors anchored before seals); seals, parts and partIdx are the
	// batch index read so far (sealindex.go), where a sealed batch keeps
	// its leaf hashes' offset.
	seals   map[string]*sealInfo
	parts   []partIndex
	partIdx map[streamPartition]int32
}

// NewLeafTopic reads and writes topic (empty: DefaultLeafTopic), which
// EnsureStateTopic creates compacted.
func NewLeafTopic(cluster *kafkaconn.Cluster, topic string) *LeafTopic {
	if topic == "" {
		topic = DefaultLeafTopic
	}
	return &LeafTopic{kafka: cluster, topic: topic, index: map[string]int64{},
		seals: map[string]*sealInfo{}, partIdx: map[streamPartition]int32{}, writer: &kafka.Writer{
			Addr: cluster.Addr(), Topic: topic, Balancer: &kafka.Hash{}, Transport: cluster.Transport(),
			RequiredAcks: kafka.RequireAll, BatchSize: 16, BatchBytes: kafkaconn.MaxBatchBytes, BatchTimeout: time.Millisecond,
		}}
}

// AnchorLeaves is one anchor's leaf hashes, to keep (PutAll).
type AnchorLeaves struct {
	AnchorID string
	Leaves   [][32]byte
}

// Put keeps an anchor's leaf hashes; it returns once they are acknowledged.
func (t *LeafTopic) Put(ctx context.Context, anchorID string, leaves [][32]byte) error {
	return t.PutAll(ctx, []AnchorLeaves{{anchorID, leaves}})
}

// PutAll keeps several anchors' leaf hashes in one write; it returns once
// they are all acknowledged.
func (t *LeafTopic) PutAll(ctx context.Context, all []AnchorLeaves) error {
	msgs := make([]kafka.Message, len(all))
	for i, a := range all {
		v := make([]byte, 0, 32*len(a.Leaves))
		for j := range a.Leaves {
			v = append(v, a.Leaves[j][:]...)
		}
		msgs[i] = kafka.Message{Key: []byte(a.AnchorID), Value: v}
	}
	if err := t.writer.WriteMessages(ctx, msgs...); err != nil {
		return fmt.Errorf("leaf topic %s: %w", t.topic, err)
	}
	return nil
}

// Forget deletes an anchor's leaf hashes (a tombstone compaction removes),
// and the index record of a seal none of whose batches has leaf hashes
// left.
func (t *LeafTopic) Forget(ctx context.Context, anchorID string) error {
	if err := t.writer.WriteMessages(ctx, kafka.Message{Key: []byte(anchorID), Value: nil}); err != nil {
		return fmt.Errorf("leaf topic %s: %w", t.topic, err)
	}
	return t.forgetSealsOf(ctx, anchorID)
}

// Leaves returns an anchor's leaf hashes, or an error wrapping
// ErrLeavesMissing. The topic's keys are indexed on first use and the
// index extended on each later one.
func (t *LeafTopic) Leaves(ctx context.Context, anchorID string) ([][32]byte, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	found, first, err := t.sync(ctx, anchorID)
	if err != nil {
		return nil, err
	}
	if found == nil {
		off, ok := t.leafOffset(anchorID)
		if !ok || off < first {
			return nil, fmt.Errorf("%w: %s", ErrLeavesMissing, anchorID)
		}
		if found, err = t.readAt(ctx, off, anchorID); err != nil {
			return nil, err
		}
	}
	if len(found)%32 != 0 {
		return nil, fmt.Errorf("leaf topic %s: the leaves of %s are %d bytes, not a multiple of 32", t.topic, anchorID, len(found))
	}
	leaves := make([][32]byte, len(found)/32)
	for i := range leaves {
		copy(leaves[i][:], found[32*i:])
	}
	return leaves, nil
}

// sync reads the topic from where the last call stopped to its end,
// indexing leaf keys and taking in seal records; it returns the value of
// key want if it was read, and the topic's first offset. t.mu is held.
func (t *LeafTopic) sync(ctx context.Context, want string) (found []byte, first int64, err error) {
	conn, err := t.kafka.DialLeader(ctx, t.topic, 0)
	if errors.Is(err, kafka.UnknownTopicOrPartition) {
		return nil, 0, nil // nothing kept yet
	}
	if err != nil {
		return nil, 0, fmt.Errorf("leaf topic %s: %w", t.topic, err)
	}
	first, end, err := conn.ReadOffsets()
	conn.Close()
	if err != nil {
		return nil, 0, fmt.Errorf("leaf topic %s: offsets: %w", t.topic, err)
	}
	t.scanned = max(t.scanned, first)
	if t.scanned >= end {
		return nil, first, nil
	}
	r, err := newPartitionReader(t.kafka, t.topic, 0)
	if err != nil {
		return nil, 0, err
	}
	defer r.Close()
	r.SeekTo(t.scanned)
	for t.scanned < end {
		m, err := r.Next(ctx)
		if err != nil {
			return nil, 0, fmt.Errorf("leaf topic %s: read: %w", t.topic, err)
		}
		t.scanned = m.Offset + 1
		key := string(m.Key)
		if id, ok := strings.CutPrefix(key, sealKeyPrefix); ok {
			t.takeSeal(id, m.Value)
			continue
		}
		if m.Value == nil {
			t.forgetLeaves(key)
			continue
		}
		t.index[key] = m.Offset
		if key == want {
			found = m.Value
		}
	}
	return found, first, nil
}

// readAt reads the value of key at offset off.
func (t *LeafTopic) readAt(ctx context.Context, off int64, key string) ([]byte, error) {
	r := t.kafka.Reader(kafka.ReaderConfig{Topic: t.topic, Partition: 0, MinBytes: 1, MaxBytes: 16 << 20, MaxWait: 100 * time.Millisecond})
	defer r.Close()
	if err := r.SetOffset(off); err != nil {
		return nil, err
	}
	m, err := r.ReadMessage(ctx)
	if err != nil {
		return nil, fmt.Errorf("leaf topic %s: read: %w", t.topic, err)
	}
	if string(m.Key) != key || m.Value == nil {
		return nil, fmt.Errorf("%w: %s", ErrLeavesMissing, key)
	}
	return m.Value, nil
}

// Close flushes and closes the writer.
func (t *LeafTopic) Close() error { return t.writer.Close() }

// DefaultLeafTopic is the leaf topic's name unless configured otherwise
// (kafka.topics.leaves).
const DefaultLeafTopic = "chainwatch.anchor-leaves"

// Topic is the name of the topic the leaf hashes are kept in.
func (t *LeafTopic) Topic() string { return t.topic }
