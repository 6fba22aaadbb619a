package integrity

import (
	"context"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/segmentio/kafka-go"

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
}

// Prove builds the inclusion proof of one record.
func Prove(ctx context.Context, ledger *ledgerclient.Client, cluster *kafkaconn.Cluster, topic, anchoredAs string, partition int32, offset int64) (*RecordProof, error) {
	stream, err := ResolveStream(ctx, cluster, topic, anchoredAs)
	if err != nil {
		return nil, err
	}
	anchors, err := ListAnchors(ctx, ledger, stream, partition, offset, offset)
	if err != nil {
		return nil, err
	}
	if len(anchors) == 0 {
		return nil, fmt.Errorf("offset %d of %s/%d is not anchored (yet)", offset, stream, partition)
	}
	a := anchors[0]
	r := cluster.Reader(kafka.ReaderConfig{Topic: topic, Partition: int(partition), MinBytes: 1, MaxBytes: ReadMaxBytes, MaxWait: 100 * time.Millisecond})
	defer r.Close()
	p := &RecordProof{Stream: stream, Partition: partition, Offset: offset, AnchorID: a.ID, AnchoredTx: a.TxID, MerkleRoot: a.MerkleRoot, LeafIndex: -1}
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
		return proveFromKeptLeaves(ctx, r, cluster, a, p)
	}
	if err := r.SetOffset(a.FirstOffset); err != nil {
		return nil, err
	}
	var leaves [][32]byte
	for {
		m, err := r.ReadMessage(ctx)
		if err != nil {
			return nil, fmt.Errorf("read %s/%d offset %d: %w", topic, partition, a.FirstOffset+int64(len(leaves)), err)
		}
		if m.Offset > a.LastOffset {
			break
		}
		if m.Offset == offset {
			p.LeafIndex, p.TimestampMs, p.Key, p.Value = len(leaves), m.Time.UnixMilli(), m.Key, m.Value
		}
		leaves = append(leaves, LeafHash(m.Offset, m.Time.UnixMilli(), m.Key, m.Value))
		if m.Offset == a.LastOffset {
			break
		}
	}
	if p.LeafIndex < 0 {
		return nil, fmt.Errorf("offset %d is not in the records of anchor %s", offset, a.ID)
	}
	return p.complete(leaves, a)
}

// complete fills the proof's leaf and audit path from the range's leaves
// and checks it.
func (p *RecordProof) complete(leaves [][32]byte, a contract.Anchor) (*RecordProof, error) {
	p.LeafCount = len(leaves)
	leaf := leaves[p.LeafIndex]
	p.LeafHash = hex.EncodeToString(leaf[:])
	for _, h := range InclusionProof(leaves, p.LeafIndex) {
		p.AuditPath = append(p.AuditPath, hex.EncodeToString(h[:]))
	}
	if err := p.Check(); err != nil {
		return nil, fmt.Errorf("the record at offset %d no longer matches anchor %s: %w", p.Offset, a.ID, err)
	}
	return p, nil
}

// proveFromKeptLeaves proves a surviving record of an anchored range whose
// first records were deleted, with the range's kept leaf hashes.
func proveFromKeptLeaves(ctx context.Context, r *kafka.Reader, cluster *kafkaconn.Cluster, a contract.Anchor, p *RecordProof) (*RecordProof, error) {
	lt := NewLeafTopic(cluster, DefaultLeafTopic)
	defer lt.Close()
	leaves, err := lt.Leaves(ctx, a.ID)
	if err != nil {
		return nil, fmt.Errorf("the first records of anchor %s were deleted: %w", a.ID, err)
	}
	if root := MerkleRoot(leaves); int64(len(leaves)) != a.Count || hex.EncodeToString(root[:]) != a.MerkleRoot {
		return nil, fmt.Errorf("the kept leaf hashes of anchor %s do not hash to its root", a.ID)
	}
	if err := r.SetOffset(p.Offset); err != nil {
		return nil, err
	}
	m, err := r.ReadMessage(ctx)
	if err != nil || m.Offset != p.Offset {
		return nil, fmt.Errorf("read %s/%d offset %d: %v", a.Stream, a.Partition, p.Offset, err)
	}
	p.LeafIndex, p.TimestampMs, p.Key, p.Value = int(p.Offset-a.FirstOffset), m.Time.UnixMilli(), m.Key, m.Value
	return p.complete(leaves, a)
}

// Check recomputes the leaf hash from the record and follows the audit path
// to the proof's Merkle root. Compare MerkleRoot with the ledger's anchor
// (AnchorID) to finish the check.
func (p *RecordProof) Check() error {
	leaf := LeafHash(p.Offset, p.TimestampMs, p.Key, p.Value)
	if hex.EncodeToString(leaf[:]) != p.LeafHash {
		return fmt.Errorf("the record does not hash to the proof's leaf hash")
	}
	root, err := decodeHash(p.MerkleRoot)
	if err != nil {
		return fmt.Errorf("merkle_root: %w", err)
	}
	path := make([][32]byte, len(p.AuditPath))
	for i, h := range p.AuditPath {
		if path[i], err = decodeHash(h); err != nil {
			return fmt.Errorf("audit_path[%d]: %w", i, err)
		}
	}
	if !VerifyInclusion(leaf, p.LeafIndex, p.LeafCount, path, root) {
		return fmt.Errorf("the audit path does not lead from leaf %d of %d to root %s", p.LeafIndex, p.LeafCount, p.MerkleRoot)
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
