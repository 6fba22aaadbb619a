package integrity

import (
	"context"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/chainwatch/chainwatch/ledgerclient"
	"github.com/chainwatch/chainwatch/ledgerclient/contract"
	"github.com/chainwatch/chainwatch/pipeline/kafkaconn"
)

// RecordProof shows that one Kafka record is part of an anchored batch: the
// record as read, its leaf hash, and the RFC 6962 audit path from that leaf
// to the Merkle root the ledger holds. Anyone with the proof and read
// access to the ledger can check it; Check needs neither Kafka nor
// chainwatch's state.
type RecordProof struct {
	Stream      string   `json:"stream"` // the anchored stream (topic name)
	Partition   int32    `json:"partition"`
	Offset      int64    `json:"offset"`
	TimestampMs int64    `json:"timestamp_ms"`
	Key         []byte   `json:"key"`   // base64
	Value       []byte   `json:"value"` // base64
	AnchorID    string   `json:"anchor_id"`
	AnchoredTx  string   `json:"anchored_tx"`
	MerkleRoot  string   `json:"merkle_root"`
	LeafIndex   int      `json:"leaf_index"`
	LeafCount   int      `json:"leaf_count"`
	LeafHash    string   `json:"leaf_hash"`
	AuditPath   []string `json:"audit_path"`
	// Seal, for a batch sealed with its period's others, carries the proof
	// onward from the batch's root to the seal's root on the ledger; nil
	// for a batch anchored on its own, whose root the ledger holds.
	Seal *SealProof `json:"seal,omitempty"`
}

// SealProof shows that a batch is one of a seal's: the batch's descriptor
// as sealed, its index among the seal's batches and the RFC 6962 audit
// path from its BatchLeaf to the seal's root.
type SealProof struct {
	ID         string          `json:"id"`
	Root       string          `json:"root"`
	Batch      contract.Anchor `json:"batch"`
	BatchIndex int             `json:"batch_index"`
	BatchCount int             `json:"batch_count"`
	AuditPath  []string        `json:"audit_path"`
}

// Prove builds the inclusion proof of one record. leafTopic holds the leaf
// hashes and the batch index (empty: DefaultLeafTopic).
func Prove(ctx context.Context, ledger *ledgerclient.Client, cluster *kafkaconn.Cluster, leafTopic, topic, anchoredAs string, partition int32, offset int64) (*RecordProof, error) {
	stream, err := ResolveStream(ctx, cluster, topic, anchoredAs)
	if err != nil {
		return nil, err
	}
	index := NewLeafTopic(cluster, leafTopic)
	defer index.Close()
	x := NewAnchors(ledger, index)
	anchors, err := x.List(ctx, stream, partition, offset, offset)
	if err != nil {
		return nil, err
	}
	if len(anchors) == 0 {
		return nil, fmt.Errorf("offset %d of %s/%d is not anchored (yet)", offset, stream, partition)
	}
	a := anchors[0]
	if a.Broken != "" {
		return nil, fmt.Errorf("offset %d of %s/%d cannot be proven: %s", offset, stream, partition, a.Broken)
	}
	r, err := newPartitionReader(cluster, topic, partition)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	p := &RecordProof{Stream: stream, Partition: partition, Offset: offset, AnchorID: a.ID, AnchoredTx: a.TxID, MerkleRoot: a.MerkleRoot, LeafIndex: -1}
	if a.Seal != "" {
		seal, err := x.Seal(ctx, a.Seal)
		if err != nil {
			return nil, err
		}
		i, n, path, err := x.SealPath(a)
		if err != nil {
			return nil, err
		}
		batch := a.Anchor
		batch.TxID, batch.AnchoredBy, batch.AnchoredAt = "", "", time.Time{}
		p.Seal = &SealProof{ID: a.Seal, Root: seal.Root, Batch: batch, BatchIndex: i, BatchCount: n, AuditPath: hexPath(path)}
	}
	conn, err := cluster.DialLeader(ctx, topic, int(partition))
	if err != nil {
		return nil, err
	}
	firstAvail, err := conn.ReadFirstOffset()
	conn.Close()
	if err != nil {
		return nil, err
	}
	if offset < firstAvail {
		return nil, fmt.Errorf("offset %d of %s/%d has expired: the partition now starts at %d", offset, topic, partition, firstAvail)
	}
	if a.FirstOffset < firstAvail {
		// Retention cut through the range: the path comes from the kept
		// leaf hashes, which must hash to the anchored root.
		return proveFromKeptLeaves(ctx, r, index, a.Anchor, p)
	}
	r.SeekTo(a.FirstOffset)
	var leaves [][32]byte
	for {
		m, err := r.Next(ctx)
		if err != nil {
			return nil, fmt.Errorf("read %s/%d offset %d: %w", topic, partition, a.FirstOffset+int64(len(leaves)), err)
		}
		if m.Offset > a.LastOffset {
			break
		}
		if m.Offset == offset {
			p.LeafIndex, p.TimestampMs, p.Key, p.Value = len(leaves), m.Timestamp.UnixMilli(), m.Key, m.Value
		}
		leaves = append(leaves, LeafHash(m.Offset, m.Timestamp.UnixMilli(), m.Key, m.Value))
		if m.Offset == a.LastOffset {
			break
		}
	}
	if p.LeafIndex < 0 {
		return nil, fmt.Errorf("offset %d is not in the records of anchor %s", offset, a.ID)
	}
	return p.complete(leaves, a.Anchor)
}

// complete fills the proof's leaf and audit path from the range's leaves
// and checks it.
func (p *RecordProof) complete(leaves [][32]byte, a contract.Anchor) (*RecordProof, error) {
	p.LeafCount = len(leaves)
	leaf := leaves[p.LeafIndex]
	p.LeafHash = hex.EncodeToString(leaf[:])
	p.AuditPath = hexPath(InclusionProof(leaves, p.LeafIndex))
	if err := p.Check(); err != nil {
		return nil, fmt.Errorf("the record at offset %d no longer matches anchor %s: %w", p.Offset, a.ID, err)
	}
	return p, nil
}

// proveFromKeptLeaves proves a surviving record of an anchored range whose
// first records were deleted, with the range's kept leaf hashes.
func proveFromKeptLeaves(ctx context.Context, r *partitionReader, lt *LeafTopic, a contract.Anchor, p *RecordProof) (*RecordProof, error) {
	leaves, err := lt.Leaves(ctx, a.ID)
	if err != nil {
		return nil, fmt.Errorf("the first records of anchor %s were deleted: %w", a.ID, err)
	}
	if root := MerkleRoot(leaves); int64(len(leaves)) != a.Count || hex.EncodeToString(root[:]) != a.MerkleRoot {
		return nil, fmt.Errorf("the kept leaf hashes of anchor %s do not hash to its root", a.ID)
	}
	// The record's place among the anchor's leaves is counted from the
	// end — the records from it to the anchor's last — since retention
	// deleted the front and offsets need not all hold records (a
	// transactional producer's markers take some).
	r.SeekTo(p.Offset)
	m, err := r.Next(ctx)
	if err != nil || m.Offset != p.Offset {
		return nil, fmt.Errorf("read %s/%d offset %d: %v", a.Stream, a.Partition, p.Offset, err)
	}
	p.TimestampMs, p.Key, p.Value = m.Timestamp.UnixMilli(), m.Key, m.Value
	after := 1
	for o := m.Offset; o < a.LastOffset; after++ {
		n, err := r.Next(ctx)
		if err != nil {
			return nil, fmt.Errorf("read %s/%d after offset %d: %w", a.Stream, a.Partition, o, err)
		}
		if n.Offset > a.LastOffset {
			break
		}
		o = n.Offset
	}
	if after > len(leaves) {
		return nil, fmt.Errorf("anchor %s holds %d records, and %d follow offset %d in it", a.ID, len(leaves), after, p.Offset)
	}
	p.LeafIndex = len(leaves) - after
	return p.complete(leaves, a)
}

// Check recomputes the leaf hash from the record and follows the audit path
// to the proof's Merkle root and, for a sealed batch, the batch's
// descriptor on to the seal's root. Compare the last root with the
// ledger's (the seal's, Seal.ID; else the anchor's, AnchorID) to finish the
// check.
func (p *RecordProof) Check() error {
	if err := p.checkRecord(); err != nil {
		return err
	}
	if p.Seal == nil {
		return nil
	}
	b := p.Seal.Batch
	if b.ID != p.AnchorID || b.MerkleRoot != p.MerkleRoot || b.Count != int64(p.LeafCount) || b.Stream != p.Stream || b.Partition != p.Partition {
		return fmt.Errorf("the sealed batch %s (root %s over %d records) is not the proof's %s (root %s over %d)",
			b.ID, b.MerkleRoot, b.Count, p.AnchorID, p.MerkleRoot, p.LeafCount)
	}
	leaf, err := BatchLeaf(b)
	if err != nil {
		return err
	}
	if err := verifyHexPath(leaf, p.Seal.BatchIndex, p.Seal.BatchCount, p.Seal.AuditPath, p.Seal.Root); err != nil {
		return fmt.Errorf("seal: %w", err)
	}
	return nil
}

// checkRecord is the record-to-batch half of Check.
func (p *RecordProof) checkRecord() error {
	leaf := LeafHash(p.Offset, p.TimestampMs, p.Key, p.Value)
	if hex.EncodeToString(leaf[:]) != p.LeafHash {
		return fmt.Errorf("the record does not hash to the proof's leaf hash")
	}
	return verifyHexPath(leaf, p.LeafIndex, p.LeafCount, p.AuditPath, p.MerkleRoot)
}

// hexPath is an audit path as a proof carries it.
func hexPath(path [][32]byte) []string {
	out := make([]string, len(path))
	for i, h := range path {
		out[i] = hex.EncodeToString(h[:])
	}
	return out
}

// verifyHexPath checks that leaf sits at index i of a tree of n leaves
// with the given root, path and root as a proof carries them (hex).
func verifyHexPath(leaf [32]byte, i, n int, hexPath []string, hexRoot string) error {
	root, err := decodeHash(hexRoot)
	if err != nil {
		return fmt.Errorf("root: %w", err)
	}
	path := make([][32]byte, len(hexPath))
	for k, h := range hexPath {
		if path[k], err = decodeHash(h); err != nil {
			return fmt.Errorf("audit_path[%d]: %w", k, err)
		}
	}
	if !VerifyInclusion(leaf, i, n, path, root) {
		return fmt.Errorf("the audit path does not lead from leaf %d of %d to root %s", i, n, hexRoot)
	}
	return nil
}

func decodeHash(s string) ([32]byte, error) {
	var h [32]byte
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != 32 {
		return h, fmt.Errorf("%q is not a hex SHA-256", s)
	}
	copy(h[:], b)
	return h, nil
}
