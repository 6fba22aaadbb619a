package embedded

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Report is the outcome of Verify.
type Report struct {
	Blocks    uint64 `json:"blocks"`
	StateKeys int    `json:"state_keys"`
	OK        bool   `json:"ok"`
	// FirstBadBlock is the number of the first block that fails a check, or
	// -1 when every block passed (a state mismatch may still fail the run).
	FirstBadBlock int64  `json:"first_bad_block"`
	Problem       string `json:"problem,omitempty"`
}

// Verify rechecks an embedded ledger offline: each block's hash and
// signature against the public key in pubKeyPath (default: the ledger's own
// signer.pub.pem), the chain of previous-block hashes and block numbers, and
// that replaying every block's writes rebuilds the world state exactly.
func Verify(dir, pubKeyPath string) (Report, error) {
	if pubKeyPath == "" {
		pubKeyPath = filepath.Join(dir, pubKeyFile)
	}
	pub, err := readPublicKey(pubKeyPath)
	if err != nil {
		return Report{}, err
	}
	db, err := openReadOnly(dir, "ledger verify")
	if err != nil {
		return Report{}, err
	}
	defer db.Close()

	rep := Report{FirstBadBlock: -1}
	fail := func(n uint64, format string, args ...any) {
		rep.FirstBadBlock = int64(n)
		rep.Problem = fmt.Sprintf(format, args...)
	}
	err = db.View(func(tx *bolt.Tx) error {
		blocks, state := tx.Bucket(bucketBlocks), tx.Bucket(bucketState)
		if blocks == nil || state == nil {
			rep.Problem = "ledger file has no block or state bucket"
			return nil
		}
		rebuilt := map[string][]byte{}
		rebuiltHistory := map[string][]byte{}
		prevHash := ""
		var n uint64
		c := blocks.Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			var b Block
			if err := json.Unmarshal(v, &b); err != nil {
				fail(n, "block %d does not decode: %v", n, err)
				return nil
			}
			if !bytes.Equal(k, blockKey(n)) || b.Number != n {
				fail(n, "block %d is stored as number %d", n, b.Number)
				return nil
			}
			if b.PrevHash != prevHash {
				fail(n, "block %d does not link to block %d's hash", n, int64(n)-1)
				return nil
			}
			if err := b.check(pub); err != nil {
				fail(n, "%v", err)
				return nil
			}
			for _, w := range b.Writes {
				rebuilt[w.Key] = w.Value
				rec, _ := json.Marshal(historyRecord{TxID: b.TxID, Time: b.Time, Value: w.Value})
				rebuiltHistory[string(historyKey(w.Key, b.Number))] = rec
			}
			prevHash = b.Hash
			n++
		}
		rep.Blocks = n
		seen := 0
		sc := state.Cursor()
		for k, v := sc.First(); k != nil; k, v = sc.Next() {
			want, ok := rebuilt[string(k)]
			switch {
			case !ok:
				rep.Problem = fmt.Sprintf("world state holds key %q that no block wrote", k)
				return nil
			case !bytes.Equal(want, v):
				rep.Problem = fmt.Sprintf("world state of key %q differs from the blocks' last write", k)
				return nil
			}
			seen++
		}
		rep.StateKeys = seen
		if seen != len(rebuilt) {
			rep.Problem = fmt.Sprintf("world state lacks %d keys the blocks wrote", len(rebuilt)-seen)
			return nil
		}
		// The key history must be exactly the blocks' writes, version by version.
		hist := tx.Bucket(bucketHistory)
		if hist == nil {
			rep.Problem = "ledger file has no history bucket"
			return nil
		}
		versions := 0
		hc := hist.Cursor()
		for k, v := hc.First(); k != nil; k, v = hc.Next() {
			if want, ok := rebuiltHistory[string(k)]; !ok || !bytes.Equal(want, v) {
				rep.Problem = fmt.Sprintf("key history entry %q does not match the blocks", k)
				return nil
			}
			versions++
		}
		if versions != len(rebuiltHistory) {
			rep.Problem = fmt.Sprintf("key history lacks %d versions the blocks wrote", len(rebuiltHistory)-versions)
		}
		return nil
	})
	if err != nil {
		return Report{}, fmt.Errorf("ledger verify: %w", err)
	}
	rep.OK = rep.Problem == ""
	return rep, nil
}

func readPublicKey(path string) (*ecdsa.PublicKey, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("ledger verify: public key: %w", err)
	}
	blk, _ := pem.Decode(raw)
	if blk == nil {
		return nil, fmt.Errorf("ledger verify: %s holds no PEM block", path)
	}
	k, err := x509.ParsePKIXPublicKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("ledger verify: %s: %w", path, err)
	}
	pub, ok := k.(*ecdsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("ledger verify: %s is not an ECDSA key", path)
	}
	return pub, nil
}

// openReadOnly opens the ledger file in dir for reading only, as offline
// tools do; op names the tool in errors. A ledger a running service holds
// is ErrInUse.
func openReadOnly(dir, op string) (*bolt.DB, error) {
	path := filepath.Join(dir, dbFile)
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		if err == bolt.ErrTimeout {
			return nil, fmt.Errorf("%s: %w", op, ErrInUse)
		}
		return nil, fmt.Errorf("%s: open %s: %w", op, path, err)
	}
	return db, nil
}
