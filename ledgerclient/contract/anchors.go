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
	if err := validName("stream", a.Stream); err != nil {
		return Anchor{}, err
	}
	switch {
	case a.Partition < 0:
		return Anchor{}, fmt.Errorf("%w: partition %d", ErrInvalid, a.Partition)
	case a.FirstOffset < 0 || a.LastOffset < a.FirstOffset:
		return Anchor{}, fmt.Errorf("%w: offsets %d..%d", ErrInvalid, a.FirstOffset, a.LastOffset)
	case a.Count < 1 || a.Count > a.LastOffset-a.FirstOffset+1:
		return Anchor{}, fmt.Errorf("%w: count %d does not fit offsets %d..%d", ErrInvalid, a.Count, a.FirstOffset, a.LastOffset)
	case a.LastTimestamp.Before(a.FirstTimestamp):
		return Anchor{}, fmt.Errorf("%w: last timestamp before first", ErrInvalid)
	}
	if err := validHash("merkle root", a.MerkleRoot); err != nil {
		return Anchor{}, err
	}
	a.ID = AnchorID(a.Stream, a.Partition, a.FirstOffset, a.LastOffset)

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
