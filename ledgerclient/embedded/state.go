package embedded

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	bolt "go.etcd.io/bbolt"

	"github.com/chainwatch/chainwatch/ledgerclient/contract"
)

// txState is the contract's view of world state inside one bbolt
// transaction: reads see the transaction's own earlier writes, and the
// writes are collected in order for the block.
type txState struct {
	bucket   *bolt.Bucket
	history  *bolt.Bucket
	pending  map[string][]byte
	writes   []Write
	readOnly bool
}

var errReadOnly = errors.New("evaluate: read-only function attempted a write")

func (s *txState) Get(key string) ([]byte, error) {
	if v, ok := s.pending[key]; ok {
		return bytes.Clone(v), nil
	}
	return bytes.Clone(s.bucket.Get([]byte(key))), nil
}

func (s *txState) Put(key string, value []byte) error {
	if s.readOnly {
		return errReadOnly
	}
	if s.pending == nil {
		s.pending = make(map[string][]byte)
	}
	v := bytes.Clone(value)
	s.pending[key] = v
	for i := range s.writes {
		if s.writes[i].Key == key {
			s.writes[i].Value = v
			return nil
		}
	}
	s.writes = append(s.writes, Write{Key: key, Value: v})
	return nil
}

func (s *txState) Range(start, end string, fn func(key string, value []byte) bool) error {
	type kv struct {
		k string
		v []byte
	}
	var merged []kv
	c := s.bucket.Cursor()
	for k, v := c.Seek([]byte(start)); k != nil && string(k) < end; k, v = c.Next() {
		if _, overridden := s.pending[string(k)]; !overridden {
			merged = append(merged, kv{string(k), v})
		}
	}
	for k, v := range s.pending {
		if k >= start && k < end {
			merged = append(merged, kv{k, v})
		}
	}
	slices.SortFunc(merged, func(a, b kv) int { return bytes.Compare([]byte(a.k), []byte(b.k)) })
	for _, e := range merged {
		if !fn(e.k, bytes.Clone(e.v)) {
			break
		}
	}
	return nil
}

// History reads a key's committed versions from the history bucket.
func (s *txState) History(key string) ([]contract.HistoryEntry, error) {
	prefix := append([]byte(key), 0)
	var out []contract.HistoryEntry
	c := s.history.Cursor()
	for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix) && len(k) == len(prefix)+8; k, v = c.Next() {
		var r historyRecord
		if err := json.Unmarshal(v, &r); err != nil {
			return nil, fmt.Errorf("history of %s: %w", key, err)
		}
		out = append(out, contract.HistoryEntry{TxID: r.TxID, Time: r.Time, Value: r.Value})
	}
	return out, nil
}
