package contract

import (
	"errors"
	"time"
)

// State is the key-value world state a contract transaction reads and
// writes. Writes become visible only when the hosting ledger commits the
// transaction.
type State interface {
	Get(key string) ([]byte, error) // nil, nil when absent
	Put(key string, value []byte) error
	// Range calls fn for each key in [start, end) in key order until fn
	// returns false.
	Range(start, end string, fn func(key string, value []byte) bool) error
	// History returns every committed value of key, oldest first, with the
	// transaction that wrote it. Writes of the running transaction are not
	// part of it.
	History(key string) ([]HistoryEntry, error)
}

// HistoryEntry is one committed version of a key.
type HistoryEntry struct {
	TxID  string    `json:"tx_id"`
	Time  time.Time `json:"time"`
	Value []byte    `json:"value"`
}

// Role is what a caller may do. Each identity carries exactly one.
type Role string

const (
	RoleManufacturer Role = "manufacturer" // registers and updates devices
	RoleOperator     Role = "operator"     // approves firmware, revokes devices, promotes models
	RoleService      Role = "service"      // anchors batches, records alerts, registers models
	RoleAnalyst      Role = "analyst"      // sets verdicts on alerts
	RoleAdmin        Role = "admin"        // may do anything; for bootstrapping a network
)

// Valid reports whether r is a known role.
func (r Role) Valid() bool {
	switch r {
	case RoleManufacturer, RoleOperator, RoleService, RoleAnalyst, RoleAdmin:
		return true
	}
	return false
}

// Caller is the authenticated identity behind a transaction.
type Caller struct {
	ID   string `json:"id"`
	Role Role   `json:"role"`
}

// Tx is the context of one transaction.
type Tx struct {
	State  State
	Caller Caller
	ID     string    // the host's transaction id
	Time   time.Time // the host's transaction timestamp, identical on every endorser
}

// Errors callers can test with errors.Is.
var (
	ErrForbidden = errors.New("forbidden for this role")
	ErrNotFound  = errors.New("not found")
	ErrInvalid   = errors.New("invalid argument")
	ErrConflict  = errors.New("conflicts with the ledger")
)
