package embedded

import (
	"encoding/json"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Usage is what the transactions committed in a span of time added to a
// ledger.
type Usage struct {
	// Transactions counts the committed transactions (blocks), in all and
	// by contract function.
	Transactions int            `json:"transactions"`
	ByFunction   map[string]int `json:"by_function"`
	// Bytes is what they store: each block as encoded, and for each key it
	// wrote the world-state value and the history record. It is the
	// ledger's growth less the storage engine's page slack, which makes the
	// file grow in steps (bbolt doubles it up to 1 GiB).
	Bytes int64 `json:"bytes"`
	// BytesByFunction splits Bytes by contract function.
	BytesByFunction map[string]int64 `json:"bytes_by_function"`
}

// UsageBetween reads the ledger in dir offline (it must not be open) and
// sums the blocks committed in [from, to).
func UsageBetween(dir string, from, to time.Time) (Usage, error) {
	db, err := openReadOnly(dir, "ledger usage")
	if err != nil {
		return Usage{}, err
	}
	defer db.Close()
	u := Usage{ByFunction: map[string]int{}, BytesByFunction: map[string]int64{}}
	err = db.View(func(tx *bolt.Tx) error {
		blocks := tx.Bucket(bucketBlocks)
		if blocks == nil {
			return fmt.Errorf("ledger usage: %s has no blocks", dir)
		}
		c := blocks.Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			var b Block
			if err := json.Unmarshal(v, &b); err != nil {
				return fmt.Errorf("ledger usage: block %x: %w", k, err)
			}
			if b.Time.Before(from) || !b.Time.Before(to) {
				continue
			}
			u.Transactions++
			u.ByFunction[b.Function]++
			n := int64(len(k) + len(v))
			for _, w := range b.Writes {
				rec, err := json.Marshal(historyRecord{TxID: b.TxID, Time: b.Time, Value: w.Value})
				if err != nil {
					return err
				}
				n += int64(len(w.Key)+len(w.Value)) + int64(len(historyKey(w.Key, b.Number))+len(rec))
			}
			u.Bytes += n
			u.BytesByFunction[b.Function] += n
		}
		return nil
	})
	return u, err
}
