package ledgerclient

import (
	"context"
)

// Backend runs contract transactions on one ledger as one identity.
type Backend interface {
	// Submit orders and commits a transaction calling fn with JSON args and
	// returns its JSON result and transaction id. A transaction that
	// changed nothing (an idempotent repeat) may return an empty id.
	Submit(ctx context.Context, fn string, args []byte) (result []byte, txID string, err error)
	// Evaluate runs a read-only function without ordering a transaction.
	Evaluate(ctx context.Context, fn string, args []byte) ([]byte, error)
	// Subscribe delivers the events of transactions committed after it was
	// called, until ctx ends.
	Subscribe(ctx context.Context) (<-chan Event, error)
	Close() error
}

// Event is emitted by a committed transaction (see contract.EventFor).
type Event struct {
	Name    string `json:"name"`
	TxID    string `json:"tx_id"`
	Payload []byte `json:"payload"`
}
