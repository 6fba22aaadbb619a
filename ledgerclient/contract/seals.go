package contract

import (
	"fmt"
	"strings"
	"time"
)

// A seal is one anchoring period on the ledger: the RFC 6962 Merkle root
// over the descriptors of every batch an instance cut in that period, of
// all its partitions and topics. The ledger stores the root and the
// batch count, a few hundred bytes whatever the number of partitions; the
// descriptors themselves (stream, partition, offsets, count, the batch's
// own root, timestamps) are kept off the ledger, in the batch index, and
// are trusted only when they hash to a seal's root. A record is then
// proven to its batch's root, and the batch to its seal's.

// Seal commits the batches of one anchoring period to one root.
type Seal struct {
	// ID names the seal: the period's time in Unix milliseconds, 13
	// digits, then "-" and a random suffix (see NewSealID), so that ids
	// sort in time order.
	ID      string `json:"id"`
	Root    string `json:"root"` // hex SHA-256 over the batch descriptors
	Batches int    `json:"batches"`
	Records int64  `json:"records"`
	// FirstTimestamp and LastTimestamp bound the sealed records' own
	// timestamps.
	FirstTimestamp time.Time `json:"first_timestamp"`
	LastTimestamp  time.Time `json:"last_timestamp"`
	TxID           string    `json:"tx_id,omitempty"`
	AnchoredBy     string    `json:"anchored_by,omitempty"`
	AnchoredAt     time.Time `json:"anchored_at"`
}

// ListSealsArgs lists seals whose id sorts after After, in id order, at
// most Limit of them (zero: 1,000).
type ListSealsArgs struct {
	After string `json:"after,omitempty"`
	Limit int    `json:"limit,omitempty"`
}

const keySeal = "seal/"

// maxListSeals bounds one ListSeals answer.
const maxListSeals = 10_000

// SealBatches records a period's seal. A call repeated with the same id and
// root returns the stored seal (a service that lost the answer retries
// safely); the same id with another root is a conflict.
func SealBatches(tx Tx, s Seal) (Seal, error) {
	if err := validName("seal id", s.ID); err != nil {
		return Seal{}, err
	}
	if len(s.ID) < 14 || s.ID[13] != '-' || strings.Trim(s.ID[:13], "0123456789") != "" {
		return Seal{}, fmt.Errorf("%w: seal id %q must start with 13 digits of Unix milliseconds and '-'", ErrInvalid, s.ID)
	}
	if err := validHash("seal root", s.Root); err != nil {
		return Seal{}, err
	}
	switch {
	case s.Batches < 1 || s.Batches > MaxAnchorsPerTx:
		return Seal{}, fmt.Errorf("%w: %d batches in one seal (1 to %d)", ErrInvalid, s.Batches, MaxAnchorsPerTx)
	case s.Records < int64(s.Batches):
		return Seal{}, fmt.Errorf("%w: %d records in %d batches", ErrInvalid, s.Records, s.Batches)
	case s.LastTimestamp.Before(s.FirstTimestamp):
		return Seal{}, fmt.Errorf("%w: last timestamp before first", ErrInvalid)
	}
	stored, err := getJSON[Seal](tx.State, keySeal+s.ID)
	if err != nil {
		return Seal{}, err
	}
	if stored != nil {
		if stored.Root != s.Root || stored.Batches != s.Batches {
			return Seal{}, fmt.Errorf("%w: seal %s is recorded with root %s, not %s", ErrConflict, s.ID, stored.Root, s.Root)
		}
		return *stored, nil
	}
	s.TxID, s.AnchoredBy, s.AnchoredAt = tx.ID, tx.Caller.ID, stamp(tx)
	s.FirstTimestamp, s.LastTimestamp = s.FirstTimestamp.UTC(), s.LastTimestamp.UTC()
	return s, putJSON(tx.State, keySeal+s.ID, s)
}

// GetSeal returns one seal by id.
func GetSeal(tx Tx, a IDArgs) (Seal, error) {
	if err := validName("seal id", a.ID); err != nil {
		return Seal{}, err
	}
	got, err := getJSON[Seal](tx.State, keySeal+a.ID)
	if err != nil {
		return Seal{}, err
	}
	if got == nil {
		return Seal{}, fmt.Errorf("%w: seal %s", ErrNotFound, a.ID)
	}
	return *got, nil
}

// ListSeals returns seals in id (time) order after a.After.
func ListSeals(tx Tx, a ListSealsArgs) ([]Seal, error) {
	limit := a.Limit
	if limit <= 0 {
		limit = 1000
	}
	limit = min(limit, maxListSeals)
	start := keySeal
	if a.After != "" {
		start = keySeal + a.After + "\x00"
	}
	return rangeJSON[Seal](tx.State, start, prefixEnd(keySeal), nil, limit)
}

// NewSealID is the id of a seal made at t with the given random suffix.
func NewSealID(t time.Time, suffix string) string {
	return fmt.Sprintf("%013d-%s", t.UnixMilli(), suffix)
}
