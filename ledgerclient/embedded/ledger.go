package embedded

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/binary"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/chainwatch/chainwatch/ledgerclient"
	"github.com/chainwatch/chainwatch/ledgerclient/contract"
)

// Files inside the ledger directory.
const (
	dbFile     = "ledger.db"
	keyFile    = "signer.key.pem"
	pubKeyFile = "signer.pub.pem"
)

var (
	bucketState   = []byte("state")
	bucketBlocks  = []byte("blocks")
	bucketHistory = []byte("history") // key ‖ 0x00 ‖ block number → historyRecord
)

// historyRecord is one committed version of a key.
type historyRecord struct {
	TxID  string    `json:"tx_id"`
	Time  time.Time `json:"time"`
	Value []byte    `json:"value"`
}

func historyKey(key string, block uint64) []byte {
	return binary.BigEndian.AppendUint64(append([]byte(key), 0), block)
}

// ErrInUse is returned by Open when another process holds the ledger.
var ErrInUse = errors.New("embedded ledger is in use by another process (is `chainwatch run` running on this data directory?)")

// Ledger is an open embedded ledger. It is safe for concurrent use.
type Ledger struct {
	dir string
	db  *bolt.DB
	key *ecdsa.PrivateKey
	now func() time.Time

	mu   sync.Mutex
	subs map[chan ledgerclient.Event]struct{}
}

// Options configure Open. The zero value is ready to use.
type Options struct {
	// LockTimeout is how long Open waits for another process to release the
	// ledger before failing with ErrInUse. Zero means 1 s.
	LockTimeout time.Duration
}

// Exists reports whether dir holds an embedded ledger, without creating
// anything.
func Exists(dir string) bool {
	info, err := os.Stat(filepath.Join(dir, dbFile))
	return err == nil && info.Mode().IsRegular()
}

// Open opens, or creates, the embedded ledger in dir. A new ledger gets a
// fresh P-256 signing identity, whose public half is also written to
// signer.pub.pem for offline verification.
func Open(dir string, opts Options) (*Ledger, error) {
	if opts.LockTimeout == 0 {
		opts.LockTimeout = time.Second
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("embedded ledger: %w", err)
	}
	key, err := loadOrCreateKey(dir)
	if err != nil {
		return nil, err
	}
	db, err := bolt.Open(filepath.Join(dir, dbFile), 0o600, &bolt.Options{Timeout: opts.LockTimeout})
	if err != nil {
		if errors.Is(err, bolt.ErrTimeout) {
			return nil, fmt.Errorf("%w: %s", ErrInUse, dir)
		}
		return nil, fmt.Errorf("embedded ledger: open %s: %w", dir, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketState, bucketBlocks, bucketHistory} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("embedded ledger: init: %w", err)
	}
	return &Ledger{dir: dir, db: db, key: key, now: time.Now, subs: map[chan ledgerclient.Event]struct{}{}}, nil
}

func loadOrCreateKey(dir string) (*ecdsa.PrivateKey, error) {
	path := filepath.Join(dir, keyFile)
	raw, err := os.ReadFile(path)
	if err == nil {
		blk, _ := pem.Decode(raw)
		if blk == nil {
			return nil, fmt.Errorf("embedded ledger: %s holds no PEM block", path)
		}
		k, err := x509.ParseECPrivateKey(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("embedded ledger: %s: %w", path, err)
		}
		return k, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("embedded ledger: %w", err)
	}
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		return nil, err
	}
	pub, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, pubKeyFile), pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}), 0o644); err != nil {
		return nil, fmt.Errorf("embedded ledger: %w", err)
	}
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		return nil, fmt.Errorf("embedded ledger: %w", err)
	}
	return k, nil
}

// Close releases the ledger file.
func (l *Ledger) Close() error { return l.db.Close() }

// Client returns a Backend that calls the contract as caller.
func (l *Ledger) Client(caller contract.Caller) ledgerclient.Backend {
	return &backend{l: l, caller: caller}
}

// LocalCaller is the identity the embedded ledger gives a local role.
func LocalCaller(role contract.Role) contract.Caller {
	return contract.Caller{ID: "local-" + string(role), Role: role}
}

// Height is the number of blocks.
func (l *Ledger) Height() (uint64, error) {
	var h uint64
	err := l.db.View(func(tx *bolt.Tx) error {
		h = height(tx.Bucket(bucketBlocks))
		return nil
	})
	return h, err
}

type backend struct {
	l      *Ledger
	caller contract.Caller
}

func (b *backend) Close() error { return nil }

func (b *backend) Evaluate(ctx context.Context, fn string, args []byte) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var out []byte
	err := b.l.db.View(func(tx *bolt.Tx) error {
		st := &txState{bucket: tx.Bucket(bucketState), history: tx.Bucket(bucketHistory), readOnly: true}
		var err error
		out, err = contract.Invoke(contract.Tx{State: st, Caller: b.caller, Time: b.l.now()}, fn, args)
		return err
	})
	return out, err
}

func (b *backend) Submit(ctx context.Context, fn string, args []byte) ([]byte, string, error) {
	if err := ctx.Err(); err != nil {
		return nil, "", err
	}
	var out []byte
	var block Block
	err := b.l.db.Update(func(tx *bolt.Tx) error {
		st := &txState{bucket: tx.Bucket(bucketState), history: tx.Bucket(bucketHistory)}
		ctxTx := contract.Tx{State: st, Caller: b.caller, ID: newTxID(b.caller.ID), Time: b.l.now().UTC()}
		var err error
		if out, err = contract.Invoke(ctxTx, fn, args); err != nil {
			return err
		}
		if len(st.writes) == 0 {
			return nil // an idempotent repeat: nothing to commit
		}
		blocks := tx.Bucket(bucketBlocks)
		block = Block{
			Number: height(blocks), Time: ctxTx.Time, TxID: ctxTx.ID,
			Creator: b.caller, Function: fn, Args: compactJSON(args), Writes: st.writes,
		}
		if block.Number > 0 {
			var prev Block
			_, raw := blocks.Cursor().Last()
			if err := json.Unmarshal(raw, &prev); err != nil {
				return fmt.Errorf("read block %d: %w", block.Number-1, err)
			}
			block.PrevHash = prev.Hash
		}
		if err := block.seal(b.l.key); err != nil {
			return err
		}
		raw, err := json.Marshal(block)
		if err != nil {
			return err
		}
		if err := blocks.Put(blockKey(block.Number), raw); err != nil {
			return err
		}
		state, history := tx.Bucket(bucketState), tx.Bucket(bucketHistory)
		for _, w := range st.writes {
			if err := state.Put([]byte(w.Key), w.Value); err != nil {
				return err
			}
			rec, err := json.Marshal(historyRecord{TxID: block.TxID, Time: block.Time, Value: w.Value})
			if err != nil {
				return err
			}
			if err := history.Put(historyKey(w.Key, block.Number), rec); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, "", err
	}
	if block.TxID != "" {
		if name := contract.EventFor(fn); name != "" {
			b.l.publish(ledgerclient.Event{Name: name, TxID: block.TxID, Payload: out})
		}
	}
	return out, block.TxID, nil
}

func (b *backend) Subscribe(ctx context.Context) (<-chan ledgerclient.Event, error) {
	ch := make(chan ledgerclient.Event, 256)
	b.l.mu.Lock()
	b.l.subs[ch] = struct{}{}
	b.l.mu.Unlock()
	go func() {
		<-ctx.Done()
		b.l.mu.Lock()
		delete(b.l.subs, ch)
		b.l.mu.Unlock()
		close(ch)
	}()
	return ch, nil
}

// publish delivers an event to every subscriber. A subscriber that lets its
// buffer fill misses events rather than stalling the ledger; the ledger
// itself remains the record to catch up from.
func (l *Ledger) publish(ev ledgerclient.Event) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for ch := range l.subs {
		select {
		case ch <- ev:
		default:
		}
	}
}

func blockKey(n uint64) []byte { return binary.BigEndian.AppendUint64(nil, n) }

// height is the number of blocks: one past the last block's number, read
// from the last key (Bucket.Stats counts every key, which costs a walk of
// the whole chain on every commit).
func height(blocks *bolt.Bucket) uint64 {
	k, _ := blocks.Cursor().Last()
	if len(k) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(k) + 1
}

// compactJSON strips insignificant white space so that a block's bytes do
// not depend on how the caller formatted its arguments.
func compactJSON(raw []byte) json.RawMessage {
	var b bytes.Buffer
	if len(raw) == 0 || json.Compact(&b, raw) != nil {
		return json.RawMessage("null")
	}
	return b.Bytes()
}
