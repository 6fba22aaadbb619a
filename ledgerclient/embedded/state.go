package embedded

import (
	"bytes"
	"errors"
	"slices"

	bolt "go.etcd.io/bbolt"
)

// txState is the contract's view of world state inside one bbolt
// transaction: reads see the transaction's own earlier writes, and the
// writes are collected in order for the block.
type txState struct {
	bucket   *bolt.Bucket
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
