package integrity

import (
	"cmp"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/chainwatch/chainwatch/ledgerclient"
	"github.com/chainwatch/chainwatch/ledgerclient/contract"
)

// Anchor is an anchored batch as a verifier reads it: the batch's
// descriptor and, for a batch sealed with its period's others, the seal
// on the ledger that holds it.
type Anchor struct {
	contract.Anchor
	// Seal is the id of the seal holding the batch; empty for a batch
	// anchored on its own (AnchorBatch, AnchorBatches: ledgers written
	// before seals). TxID, AnchoredBy and AnchoredAt are the seal's.
	Seal string
	// Broken, when set, says why the batch cannot be trusted although a
	// seal on the ledger names it: its seal's index record no longer
	// hashes to the seal's root, so what it says of the batch is not
	// what was sealed.
	Broken string
}

// Anchors reads what is anchored: batches sealed by the periods' roots on
// the ledger, listed from the batch index and believed only where the
// index hashes to a seal on the ledger, and batches anchored one by one
// by older chainwatch, listed from the ledger itself. It is safe for
// concurrent use.
type Anchors struct {
	ledger *ledgerclient.Client
	index  *LeafTopic

	mu    sync.Mutex
	seals map[string]contract.Seal // seals read from the ledger; they never change
}

// NewAnchors reads anchors from ledger and the batch index in index.
func NewAnchors(ledger *ledgerclient.Client, index *LeafTopic) *Anchors {
	return &Anchors{ledger: ledger, index: index, seals: map[string]contract.Seal{}}
}

// Index is the leaf topic that holds the batch index and the leaf hashes.
func (x *Anchors) Index() *LeafTopic { return x.index }

// List returns a stream partition's anchored batches overlapping [from,
// to] (to < 0: no upper bound), in offset order. A batch of the index
// whose seal is not on the ledger is not listed: its period's transaction
// failed, or has not committed yet, and its records are anchored again.
// A range anchored twice (a period sealed by two instances during a
// rebalance) is listed once.
func (x *Anchors) List(ctx context.Context, stream string, partition int32, from, to int64) ([]Anchor, error) {
	single, err := listSingle(ctx, x.ledger, stream, partition, from, to)
	if err != nil {
		return nil, err
	}
	out := make([]Anchor, 0, len(single))
	for _, a := range single {
		out = append(out, Anchor{Anchor: a})
	}
	if x.index != nil {
		idx, err := x.index.sealed(ctx, stream, partition, from, to)
		if err != nil {
			return nil, err
		}
		ids := make([]string, 0, len(idx))
		for _, b := range idx {
			ids = append(ids, b.seal)
		}
		seals, err := x.lookup(ctx, ids)
		if err != nil {
			return nil, err
		}
		for _, b := range idx {
			s, ok := seals[b.seal]
			if !ok {
				continue
			}
			a := Anchor{Anchor: b.Anchor, Seal: b.seal}
			a.TxID, a.AnchoredBy, a.AnchoredAt = s.TxID, s.AnchoredBy, s.AnchoredAt
			switch {
			case hex.EncodeToString(b.in.root[:]) != s.Root || b.in.n != s.Batches:
				a.Broken = fmt.Sprintf("the batch index's record of seal %s does not hash to its root on the ledger (%d batches indexed, %d sealed): it was altered",
					b.seal, b.in.n, s.Batches)
			case b.altered:
				a.Broken = fmt.Sprintf("the batch index's descriptor of this batch does not hash to its leaf in seal %s: it was altered", b.seal)
			}
			out = append(out, a)
		}
	}
	slices.SortStableFunc(out, func(a, b Anchor) int {
		if c := cmp.Compare(a.FirstOffset, b.FirstOffset); c != 0 {
			return c
		}
		return cmp.Compare(a.LastOffset, b.LastOffset)
	})
	// One entry per range: a trusted one if there is any.
	kept := out[:0]
	for _, a := range out {
		if n := len(kept); n > 0 && kept[n-1].ID == a.ID {
			if kept[n-1].Broken != "" && a.Broken == "" {
				kept[n-1] = a
			}
			continue
		}
		kept = append(kept, a)
	}
	return kept, nil
}

// Get returns one anchored batch by id (contract.AnchorID).
func (x *Anchors) Get(ctx context.Context, id string) (Anchor, error) {
	stream, partition, first, last, err := splitAnchorID(id)
	if err != nil {
		return Anchor{}, err
	}
	list, err := x.List(ctx, stream, partition, first, last)
	if err != nil {
		return Anchor{}, err
	}
	for _, a := range list {
		if a.ID == id {
			return a, nil
		}
	}
	return Anchor{}, fmt.Errorf("%w: anchor %s", contract.ErrNotFound, id)
}

// MissingSeals returns those of the seals ids whose record the batch index
// does not hold, reading the index once.
func (x *Anchors) MissingSeals(ctx context.Context, ids []string) ([]string, error) {
	return x.index.missingSeals(ctx, ids)
}

// Seal reads one seal from the ledger.
func (x *Anchors) Seal(ctx context.Context, id string) (contract.Seal, error) {
	seals, err := x.lookup(ctx, []string{id})
	if err != nil {
		return contract.Seal{}, err
	}
	s, ok := seals[id]
	if !ok {
		return contract.Seal{}, fmt.Errorf("%w: seal %s", contract.ErrNotFound, id)
	}
	return s, nil
}

// SealPath is the inclusion proof of a sealed batch in its seal: its index
// among the seal's batches, their number and the audit path from its
// BatchLeaf to the seal's root, from the batch index.
func (x *Anchors) SealPath(a Anchor) (index, count int, path [][32]byte, err error) {
	batches, ok := x.index.sealDescriptors(a.Seal)
	if !ok {
		return 0, 0, nil, fmt.Errorf("seal %s is not in the batch index", a.Seal)
	}
	leaves, err := BatchLeaves(batches)
	if err != nil {
		return 0, 0, nil, err
	}
	for i, b := range batches {
		if b.ID == a.ID {
			return i, len(leaves), InclusionProof(leaves, i), nil
		}
	}
	return 0, 0, nil, fmt.Errorf("seal %s does not hold batch %s", a.Seal, a.ID)
}

// maxCachedSeals is how many seals read from the ledger are kept, beyond
// twice those the index holds, before those it let go of are dropped.
const maxCachedSeals = 20_000

// lookup returns the seals among ids that are on the ledger, from the
// cache or the ledger: one by one for a few, else read in id (time)
// order from the first missing.
func (x *Anchors) lookup(ctx context.Context, ids []string) (map[string]contract.Seal, error) {
	x.mu.Lock()
	defer x.mu.Unlock()
	var missing []string
	for _, id := range ids {
		if _, ok := x.seals[id]; !ok {
			missing = append(missing, id)
		}
	}
	// A seal holds many batches: its id comes once per batch.
	slices.Sort(missing)
	missing = slices.Compact(missing)
	if len(missing) > 8 {
		ms, err := strconv.ParseInt(missing[0][:min(13, len(missing[0]))], 10, 64)
		if err == nil {
			// "<ms-1>." sorts after every id of the millisecond before and
			// before every id of the first missing one's.
			after := fmt.Sprintf("%013d.", ms-1)
			for {
				page, err := x.ledger.ListSeals(ctx, after, 1000)
				if err != nil {
					return nil, fmt.Errorf("read seals: %w", err)
				}
				for _, s := range page {
					x.seals[s.ID] = s
				}
				if len(page) < 1000 || page[len(page)-1].ID >= missing[len(missing)-1] {
					break
				}
				after = page[len(page)-1].ID
			}
			missing = slices.DeleteFunc(missing, func(id string) bool { _, ok := x.seals[id]; return ok || id < after })
		}
	}
	for _, id := range missing {
		s, err := x.ledger.GetSeal(ctx, id)
		if errors.Is(err, contract.ErrNotFound) || errors.Is(err, contract.ErrInvalid) {
			continue // not sealed (yet), or no id the ledger could hold: a record no reader believes
		}
		if err != nil {
			return nil, fmt.Errorf("read seal %s: %w", id, err)
		}
		x.seals[id] = s
	}
	if len(x.seals) > maxCachedSeals && x.index != nil {
		// Let go of seals the index no longer holds (expired), when they
		// outnumber those it does.
		x.index.mu.Lock()
		for id := range x.seals {
			if len(x.seals) <= maxCachedSeals+2*len(x.index.seals) {
				break
			}
			if _, ok := x.index.seals[id]; !ok {
				delete(x.seals, id)
			}
		}
		x.index.mu.Unlock()
	}
	out := make(map[string]contract.Seal, len(ids))
	for _, id := range ids {
		if s, ok := x.seals[id]; ok {
			out[id] = s
		}
	}
	return out, nil
}

// splitAnchorID splits a contract.AnchorID: stream/partition/first-last.
func splitAnchorID(id string) (stream string, partition int32, first, last int64, err error) {
	parts := strings.Split(id, "/")
	bad := fmt.Errorf("%w: anchor id %q is not stream/partition/first-last", contract.ErrInvalid, id)
	if len(parts) != 3 {
		return "", 0, 0, 0, bad
	}
	p, err1 := strconv.ParseInt(parts[1], 10, 32)
	f, l, ok := strings.Cut(parts[2], "-")
	first, err2 := strconv.ParseInt(f, 10, 64)
	last, err3 := strconv.ParseInt(l, 10, 64)
	if err1 != nil || err2 != nil || err3 != nil || !ok {
		return "", 0, 0, 0, bad
	}
	return parts[0], int32(p), first, last, nil
}
