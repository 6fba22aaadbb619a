package integrity

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/chainwatch/chainwatch/ledgerclient"
	"github.com/chainwatch/chainwatch/ledgerclient/contract"
	"github.com/chainwatch/chainwatch/pipeline/kafkaconn"
)

// A replay re-reads a partition's records from Kafka and checks every
// anchored range against its root on the ledger. It is how history is
// proven untampered: a range whose recomputed root differs was changed
// after it was anchored.

// RangeStatus is the verdict on one stretch of offsets.
type RangeStatus string

const (
	RangeVerified   RangeStatus = "verified"   // recomputed root equals the anchored one
	RangeMismatched RangeStatus = "mismatched" // the records differ from what was anchored
	RangeUnanchored RangeStatus = "unanchored" // no anchor covers these offsets (yet)
	// RangeExpired is anchored history that retention (or a DeleteRecords
	// request) removed from the front of the partition: gone, not changed.
	// The surviving records of a range it cut through are verified against
	// the anchored root with the deleted records' leaf hashes (LeafTopic);
	// without them they cannot be proven and are reported expired too, with
	// a detail saying so.
	RangeExpired RangeStatus = "expired"
)

// ReplayRange is one verdict of a replay.
type ReplayRange struct {
	Partition   int32       `json:"partition"`
	FirstOffset int64       `json:"first_offset"`
	LastOffset  int64       `json:"last_offset"`
	Records     int64       `json:"records"`
	Status      RangeStatus `json:"status"`
	AnchorID    string      `json:"anchor_id,omitempty"`
	AnchoredTx  string      `json:"anchored_tx,omitempty"`
	// Seal is the seal on the ledger holding the anchored batch; empty
	// for a batch anchored on its own.
	Seal string `json:"seal,omitempty"`
	// FirstTime and LastTime are the anchored records' first and last
	// timestamps, as the anchor recorded them.
	FirstTime time.Time `json:"first_time,omitzero"`
	LastTime  time.Time `json:"last_time,omitzero"`
	Detail    string    `json:"detail,omitempty"`
}

// ReplayRequest selects what to replay.
type ReplayRequest struct {
	Kafka *kafkaconn.Cluster
	// Topic is read from Kafka. AnchoredAs is the stream its anchors were
	// written under; empty means the topic's own stream (StreamOf its name
	// and id). A copy of a topic (restored from a backup, say) is verified
	// against the original's anchors this way.
	Topic      string
	AnchoredAs string
	Partition  int32
	From, To   int64 // offsets, inclusive; To < 0 means up to the newest record
	// Anchors lists the anchored ranges and gives the leaf hashes of one
	// whose first records were deleted; nil means the ledger's, with
	// LeafTopic (empty: DefaultLeafTopic) as the batch index.
	Anchors   *Anchors
	LeafTopic string
}

// Replay verifies a partition's offset range and returns one verdict per
// anchored range (and per stretch that no anchor covers), in offset order.
//
// Retention may delete the front of the partition while the replay reads
// it; a range found mismatched is then judged again once, against the new
// start, so that a deletion racing the read is never taken for tampering.
func Replay(ctx context.Context, ledger *ledgerclient.Client, req ReplayRequest) ([]ReplayRange, error) {
	out, firstAvail, err := replayOnce(ctx, ledger, req)
	if err != nil {
		return nil, err
	}
	for _, r := range out {
		if r.Status != RangeMismatched {
			continue
		}
		conn, err := req.Kafka.DialLeader(ctx, req.Topic, int(req.Partition))
		if err != nil {
			return nil, fmt.Errorf("replay %s/%d: %w", req.Topic, req.Partition, err)
		}
		now, err := conn.ReadFirstOffset()
		conn.Close()
		if err != nil {
			return nil, fmt.Errorf("replay %s/%d: offsets: %w", req.Topic, req.Partition, err)
		}
		if now != firstAvail {
			out, _, err = replayOnce(ctx, ledger, req)
			return out, err
		}
		break
	}
	return out, nil
}

// replayOnce is one pass of Replay; it also returns the partition's first
// offset when it started.
func replayOnce(ctx context.Context, ledger *ledgerclient.Client, req ReplayRequest) ([]ReplayRange, int64, error) {
	stream, err := ResolveStream(ctx, req.Kafka, req.Topic, req.AnchoredAs)
	if err != nil {
		return nil, 0, fmt.Errorf("replay %s/%d: %w", req.Topic, req.Partition, err)
	}
	conn, err := req.Kafka.DialLeader(ctx, req.Topic, int(req.Partition))
	if err != nil {
		return nil, 0, fmt.Errorf("replay %s/%d: %w", req.Topic, req.Partition, err)
	}
	firstAvail, err1 := conn.ReadFirstOffset()
	end, err2 := conn.ReadLastOffset() // one past the newest record
	conn.Close()
	if err := errors.Join(err1, err2); err != nil {
		return nil, 0, fmt.Errorf("replay %s/%d: offsets: %w", req.Topic, req.Partition, err)
	}
	to := end - 1
	if req.To >= 0 {
		to = min(req.To, end-1)
	}
	listFrom := max(req.From, 0)
	if listFrom > to && req.To < 0 {
		return nil, firstAvail, nil
	}
	upper := to
	if req.To >= 0 {
		upper = req.To // anchors wholly deleted are still listed, as expired
	}
	if listFrom > upper {
		return nil, firstAvail, nil
	}
	x := req.Anchors
	if x == nil {
		lt := NewLeafTopic(req.Kafka, req.LeafTopic)
		defer lt.Close()
		x = NewAnchors(ledger, lt)
	}
	anchors, err := x.List(ctx, stream, req.Partition, listFrom, upper)
	if err != nil {
		return nil, 0, err
	}

	r, err := newPartitionReader(req.Kafka, req.Topic, req.Partition)
	if err != nil {
		return nil, 0, err
	}
	defer r.Close()
	var out []ReplayRange
	next := max(listFrom, firstAvail)
	for _, a := range anchors {
		base := ReplayRange{Partition: req.Partition, FirstOffset: a.FirstOffset, LastOffset: a.LastOffset, Records: a.Count,
			AnchorID: a.ID, AnchoredTx: a.TxID, Seal: a.Seal, FirstTime: a.FirstTimestamp, LastTime: a.LastTimestamp}
		if a.Broken != "" {
			// The index's word on this range is not the seal's: nothing
			// it says of the range can be checked.
			base.Status, base.Detail = RangeMismatched, a.Broken
			out = append(out, base)
			next = max(next, a.LastOffset+1)
			continue
		}
		if a.LastOffset < firstAvail {
			// Deleted from the front of the partition: expired.
			base.Status = RangeExpired
			base.Detail = fmt.Sprintf("deleted: the partition now starts at offset %d", firstAvail)
			out = append(out, base)
			continue
		}
		// Offsets before this anchor that no anchor covers, if they
		// hold records: a transactional producer's markers take offsets
		// between anchored ranges that hold none.
		if a.FirstOffset > next && next <= to {
			held, err := holdsRecords(ctx, r, next, a.FirstOffset-1)
			if err != nil {
				return nil, 0, err
			}
			if held {
				out = append(out, ReplayRange{Partition: req.Partition, FirstOffset: next, LastOffset: min(a.FirstOffset-1, to), Status: RangeUnanchored})
			}
		}
		next = max(next, a.LastOffset+1)
		if a.LastOffset >= end {
			base.Status = RangeMismatched
			base.Detail = fmt.Sprintf("anchored records up to offset %d, but the topic ends at %d: records were deleted", a.LastOffset, end-1)
			out = append(out, base)
			continue
		}
		if a.FirstOffset < firstAvail {
			cut, err := replayCut(ctx, r, x.Index(), a.Anchor, base, firstAvail)
			if err != nil {
				return nil, 0, err
			}
			out = append(out, cut...)
			continue
		}
		got, err := readLeaves(ctx, r, a.FirstOffset, a.LastOffset)
		if err != nil {
			return nil, 0, err
		}
		root := MerkleRoot(got)
		rr := base
		rr.Records, rr.Status = int64(len(got)), RangeVerified
		switch hexRoot := hex.EncodeToString(root[:]); {
		case int64(len(got)) != a.Count:
			rr.Status, rr.Detail = RangeMismatched, fmt.Sprintf("%d records where %d were anchored", len(got), a.Count)
		case hexRoot != a.MerkleRoot:
			rr.Status, rr.Detail = RangeMismatched, fmt.Sprintf("Merkle root %s, anchored %s", hexRoot, a.MerkleRoot)
		}
		out = append(out, rr)
	}
	if next <= to {
		out = append(out, ReplayRange{Partition: req.Partition, FirstOffset: max(next, firstAvail), LastOffset: to, Status: RangeUnanchored})
	}
	return out, firstAvail, nil
}

// replayCut verifies an anchored range whose records before firstAvail were
// deleted: the deleted part is expired; the surviving records are checked
// leaf by leaf against the anchor's kept leaf hashes, which must themselves
// hash to the anchored root.
//
// An anchored range's offsets need not all hold records — a transactional
// producer's commit markers take offsets no consumer sees — so the records
// that survive are matched with the last leaves of the anchor, as many as
// there are: retention deletes from the front, and what is left of the
// range is the end of what was anchored. (Counting leaves by offset found
// the wrong ones, or none: an index past the end of the kept leaves.)
func replayCut(ctx context.Context, r *partitionReader, leaves LeafSource, a contract.Anchor, base ReplayRange, firstAvail int64) ([]ReplayRange, error) {
	gone, kept := base, base
	gone.LastOffset, gone.Status = firstAvail-1, RangeExpired
	gone.Detail = fmt.Sprintf("deleted: the partition now starts at offset %d", firstAvail)
	kept.FirstOffset = firstAvail
	stored, err := leaves.Leaves(ctx, a.ID)
	if errors.Is(err, ErrLeavesMissing) {
		kept.Status = RangeExpired
		kept.Detail = "the records before them were deleted and their leaf hashes were not kept: these cannot be proven"
		return []ReplayRange{gone, kept}, nil
	}
	if err != nil {
		return nil, err
	}
	if root := MerkleRoot(stored); int64(len(stored)) != a.Count || hex.EncodeToString(root[:]) != a.MerkleRoot {
		kept.Status = RangeMismatched
		kept.Detail = fmt.Sprintf("the kept leaf hashes (%d) do not hash to the anchored root: they were altered", len(stored))
		return []ReplayRange{gone, kept}, nil
	}
	got, err := readLeaves(ctx, r, firstAvail, a.LastOffset)
	if err != nil {
		return nil, err
	}
	kept.Records, gone.Records = int64(len(got)), max(a.Count-int64(len(got)), 0)
	if len(got) > len(stored) {
		kept.Status, kept.Detail = RangeMismatched, fmt.Sprintf("%d surviving records where %d were anchored in all", len(got), len(stored))
		return []ReplayRange{gone, kept}, nil
	}
	kept.Status = RangeVerified
	kept.Detail = fmt.Sprintf("%d earlier records of the anchored range were deleted; these match its root", gone.Records)
	want := stored[len(stored)-len(got):]
	for i := range got {
		if got[i] != want[i] {
			kept.Status = RangeMismatched
			kept.Detail = fmt.Sprintf("record at offset %d differs from what was anchored", firstAvail+int64(i))
			break
		}
	}
	return []ReplayRange{gone, kept}, nil
}

// holdsRecords reports whether offsets first..last of the reader's
// partition hold a record; a record after last must exist (the caller's
// next anchored range), so the read ends.
func holdsRecords(ctx context.Context, r *partitionReader, first, last int64) (bool, error) {
	r.SeekTo(first)
	m, err := r.Next(ctx)
	if err != nil {
		return false, fmt.Errorf("read offset %d..%d: %w", first, last, err)
	}
	return m.Offset <= last, nil
}

// readLeaves reads offsets first..last of the reader's partition and
// returns their leaf hashes.
func readLeaves(ctx context.Context, r *partitionReader, first, last int64) ([][32]byte, error) {
	r.SeekTo(first)
	var leaves [][32]byte
	var h LeafHasher
	for {
		m, err := r.Next(ctx)
		if err != nil {
			return nil, fmt.Errorf("read offset %d..%d: %w", first, last, err)
		}
		if m.Offset > last {
			return leaves, nil
		}
		leaves = append(leaves, h.Hash(m.Offset, m.Timestamp.UnixMilli(), m.Key, m.Value))
		if m.Offset == last {
			return leaves, nil
		}
	}
}

// IntegrityAlert is the alert a mismatched range raises; its window is the
// event-time span of the anchored records (now, for a range without one).
// Its id depends on the anchor only, so replaying the same tampered range
// again does not raise a second alert.
func IntegrityAlert(topic string, rr ReplayRange, now time.Time) contract.Alert {
	start, end := rr.FirstTime, rr.LastTime
	if start.IsZero() || end.IsZero() {
		start, end = now, now
	}
	return contract.Alert{
		ID:          contract.AlertID(contract.AlertIntegrity, rr.AnchorID, time.Unix(0, 0), time.Unix(0, 0), ""),
		Kind:        contract.AlertIntegrity,
		WindowStart: start.UTC(), WindowEnd: end.UTC(),
		Score: 1, Confidence: "high",
		Evidence: contract.Evidence{
			Topic: topic, Partition: rr.Partition, Offsets: []int64{rr.FirstOffset, rr.LastOffset},
			AnchorIDs: []string{rr.AnchorID}, Detail: rr.Detail,
		},
	}
}

// ReadMaxBytes is the most a verifier's fetch asks for (replay, proofs):
// enough to keep a partition's reading fast, small enough that a forged
// view of the embedded broker's need not be larger.
const ReadMaxBytes = 2 << 20
