package contract

import (
	"fmt"
)

// AnchorBatch records the Merkle root of a contiguous offset range of one
// stream partition.
//
// Anchors of a partition never overlap: a range starting at or before the
// partition's last anchored offset is refused, unless it is exactly that
// last anchor again with the same root, which returns the stored anchor (so
// a service that crashed after the ledger committed can retry safely). The
// returned anchor carries the transaction id that first recorded it.
func AnchorBatch(tx Tx, a Anchor) (Anchor, error) {
	if err := validAnchor(&a); err != nil {
		return Anchor{}, err
	}
	headKey := anchorHeadKey(a.Stream, a.Partition)
	head, err := getJSON[Anchor](tx.State, headKey)
	if err != nil {
		return Anchor{}, err
	}
	if head != nil {
		if head.ID == a.ID {
			if head.MerkleRoot != a.MerkleRoot {
				return Anchor{}, fmt.Errorf("%w: %s is anchored with root %s, not %s", ErrConflict, a.ID, head.MerkleRoot, a.MerkleRoot)
			}
			return *head, nil
		}
		if a.FirstOffset <= head.LastOffset {
			return Anchor{}, fmt.Errorf("%w: range %s overlaps anchored %s", ErrConflict, a.ID, head.ID)
		}
	}
	a.TxID, a.AnchoredBy, a.AnchoredAt = tx.ID, tx.Caller.ID, stamp(tx)
	if err := putJSON(tx.State, anchorKey(a.Stream, a.Partition, a.FirstOffset), a); err != nil {
		return Anchor{}, err
	}
	return a, putJSON(tx.State, headKey, a)
}

// validAnchor checks an anchor's fields and sets its id.
func validAnchor(a *Anchor) error {
	if err := validName("stream", a.Stream); err != nil {
		return err
	}
	switch {
	case a.Partition < 0:
		return fmt.Errorf("%w: partition %d", ErrInvalid, a.Partition)
	case a.FirstOffset < 0 || a.LastOffset < a.FirstOffset:
		return fmt.Errorf("%w: offsets %d..%d", ErrInvalid, a.FirstOffset, a.LastOffset)
	case a.Count < 1 || a.Count > a.LastOffset-a.FirstOffset+1:
		return fmt.Errorf("%w: count %d does not fit offsets %d..%d", ErrInvalid, a.Count, a.FirstOffset, a.LastOffset)
	case a.LastTimestamp.Before(a.FirstTimestamp):
		return fmt.Errorf("%w: last timestamp before first", ErrInvalid)
	}
	if err := validHash("merkle root", a.MerkleRoot); err != nil {
		return err
	}
	a.ID = AnchorID(a.Stream, a.Partition, a.FirstOffset, a.LastOffset)
	return nil
}

// MaxAnchorsPerTx bounds the batches one AnchorBatches call records.
const MaxAnchorsPerTx = 4096

// AnchorBatches records several batches' roots — every partition's batches
// of one anchoring period — in one transaction, so that the ledger's
// transaction rate does not grow with the partitions anchored. Each batch
// is stored as AnchorBatch stores it (and listed, proven and verified the
// same way), under the same rules: a partition's anchors never overlap,
// within the call as against the ledger. A call repeated after it committed
// returns the stored anchors. It does not read its own writes, which a
// Fabric transaction cannot: each partition's head is read once.
func AnchorBatches(tx Tx, args AnchorsArgs) ([]Anchor, error) {
	if len(args.Anchors) == 0 || len(args.Anchors) > MaxAnchorsPerTx {
		return nil, fmt.Errorf("%w: %d anchors in one call (1 to %d)", ErrInvalid, len(args.Anchors), MaxAnchorsPerTx)
	}
	type stream struct {
		name      string
		partition int32
	}
	heads := map[stream]*Anchor{} // the partition's newest anchor so far
	read := map[stream]bool{}
	out := make([]Anchor, 0, len(args.Anchors))
	for _, a := range args.Anchors {
		if err := validAnchor(&a); err != nil {
			return nil, err
		}
		k := stream{a.Stream, a.Partition}
		if !read[k] {
			read[k] = true
			head, err := getJSON[Anchor](tx.State, anchorHeadKey(a.Stream, a.Partition))
			if err != nil {
				return nil, err
			}
			heads[k] = head
		}
		head := heads[k]
		if head != nil && a.FirstOffset <= head.LastOffset {
			// Recorded already, by an earlier commit of this same call?
			stored, err := getJSON[Anchor](tx.State, anchorKey(a.Stream, a.Partition, a.FirstOffset))
			if err != nil {
				return nil, err
			}
			if stored == nil || stored.ID != a.ID {
				return nil, fmt.Errorf("%w: range %s overlaps anchored %s", ErrConflict, a.ID, head.ID)
			}
			if stored.MerkleRoot != a.MerkleRoot {
				return nil, fmt.Errorf("%w: %s is anchored with root %s, not %s", ErrConflict, a.ID, stored.MerkleRoot, a.MerkleRoot)
			}
			out = append(out, *stored)
			continue
		}
		a.TxID, a.AnchoredBy, a.AnchoredAt = tx.ID, tx.Caller.ID, stamp(tx)
		if err := putJSON(tx.State, anchorKey(a.Stream, a.Partition, a.FirstOffset), a); err != nil {
			return nil, err
		}
		heads[k] = &a
		out = append(out, a)
	}
	for k, head := range heads {
		if head != nil && head.TxID == tx.ID {
			if err := putJSON(tx.State, anchorHeadKey(k.name, k.partition), *head); err != nil {
				return nil, err
			}
		}
	}
	return out, nil
}

// GetAnchor returns one anchor by id.
func GetAnchor(tx Tx, a IDArgs) (Anchor, error) {
	stream, partition, first, last, err := parseAnchorID(a.ID)
	if err != nil {
		return Anchor{}, err
	}
	got, err := getJSON[Anchor](tx.State, anchorKey(stream, partition, first))
	if err != nil {
		return Anchor{}, err
	}
	if got == nil || got.LastOffset != last {
		return Anchor{}, fmt.Errorf("%w: anchor %s", ErrNotFound, a.ID)
	}
	return *got, nil
}

// ListAnchors returns a partition's anchors overlapping an offset range, in
// offset order.
func ListAnchors(tx Tx, a ListAnchorsArgs) ([]Anchor, error) {
	if err := validName("stream", a.Stream); err != nil {
		return nil, err
	}
	prefix := fmt.Sprintf("%s%s/%010d/", keyAnchor, a.Stream, a.Partition)
	return listJSON(tx.State, prefix, func(x *Anchor) bool {
		return x.LastOffset >= a.FromOffset && (a.ToOffset < 0 || x.FirstOffset <= a.ToOffset)
	})
}
