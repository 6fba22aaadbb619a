package pipeline

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/segmentio/kafka-go"

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
	// written under; empty means Topic. A copy of a topic (restored from a
	// backup, say) is verified against the original's anchors this way.
	Topic      string
	AnchoredAs string
	Partition  int32
	From, To   int64 // offsets, inclusive; To < 0 means up to the newest record
}

// Replay verifies a partition's offset range and returns one verdict per
// anchored range (and per stretch that no anchor covers), in offset order.
func Replay(ctx context.Context, ledger *ledgerclient.Client, req ReplayRequest) ([]ReplayRange, error) {
	stream := req.AnchoredAs
	if stream == "" {
		stream = req.Topic
	}
	conn, err := req.Kafka.DialLeader(ctx, req.Topic, int(req.Partition))
	if err != nil {
		return nil, fmt.Errorf("replay %s/%d: %w", req.Topic, req.Partition, err)
	}
	firstAvail, err1 := conn.ReadFirstOffset()
	end, err2 := conn.ReadLastOffset() // one past the newest record
	conn.Close()
	if err := errors.Join(err1, err2); err != nil {
		return nil, fmt.Errorf("replay %s/%d: offsets: %w", req.Topic, req.Partition, err)
	}
	from, to := max(req.From, firstAvail), end-1
	if req.To >= 0 {
		to = min(req.To, end-1)
	}
	if from > to {
		return nil, nil
	}
	anchors, err := ledger.ListAnchors(ctx, stream, req.Partition, from, to)
	if err != nil {
		return nil, err
	}

	r := req.Kafka.Reader(kafka.ReaderConfig{Topic: req.Topic, Partition: int(req.Partition), MinBytes: 1, MaxBytes: 8 << 20, MaxWait: 100 * time.Millisecond})
	defer r.Close()
	var out []ReplayRange
	next := from
	for _, a := range anchors {
		// Offsets before this anchor that no anchor covers.
		if a.FirstOffset > next {
			out = append(out, ReplayRange{Partition: req.Partition, FirstOffset: next, LastOffset: min(a.FirstOffset-1, to), Status: RangeUnanchored})
		}
		if a.LastOffset >= end {
			out = append(out, ReplayRange{Partition: req.Partition, FirstOffset: a.FirstOffset, LastOffset: a.LastOffset,
				Status: RangeMismatched, AnchorID: a.ID, AnchoredTx: a.TxID, FirstTime: a.FirstTimestamp, LastTime: a.LastTimestamp,
				Detail: fmt.Sprintf("anchored records up to offset %d, but the topic ends at %d: records were deleted", a.LastOffset, end-1)})
			next = a.LastOffset + 1
			continue
		}
		leaves, err := readLeaves(ctx, r, a.FirstOffset, a.LastOffset)
		if err != nil {
			return nil, err
		}
		root := MerkleRoot(leaves)
		rr := ReplayRange{Partition: req.Partition, FirstOffset: a.FirstOffset, LastOffset: a.LastOffset,
			Records: int64(len(leaves)), AnchorID: a.ID, AnchoredTx: a.TxID, Status: RangeVerified,
			FirstTime: a.FirstTimestamp, LastTime: a.LastTimestamp}
		switch got := hex.EncodeToString(root[:]); {
		case int64(len(leaves)) != a.Count:
			rr.Status, rr.Detail = RangeMismatched, fmt.Sprintf("%d records where %d were anchored", len(leaves), a.Count)
		case got != a.MerkleRoot:
			rr.Status, rr.Detail = RangeMismatched, fmt.Sprintf("Merkle root %s, anchored %s", got, a.MerkleRoot)
		}
		out = append(out, rr)
		next = a.LastOffset + 1
	}
	if next <= to {
		out = append(out, ReplayRange{Partition: req.Partition, FirstOffset: next, LastOffset: to, Status: RangeUnanchored})
	}
	return out, nil
}

// readLeaves reads offsets first..last of the reader's partition and
// returns their leaf hashes.
func readLeaves(ctx context.Context, r *kafka.Reader, first, last int64) ([][32]byte, error) {
	if err := r.SetOffset(first); err != nil {
		return nil, err
	}
	var leaves [][32]byte
	var h leafHasher
	for {
		m, err := r.ReadMessage(ctx)
		if err != nil {
			return nil, fmt.Errorf("read offset %d..%d: %w", first, last, err)
		}
		if m.Offset > last {
			return leaves, nil
		}
		leaves = append(leaves, h.hash(m.Offset, m.Time.UnixMilli(), m.Key, m.Value))
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
