package embedded

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"

	"github.com/chainwatch/chainwatch/ledgerclient/contract"
)

// Write is one key written by a transaction; a nil Value never occurs
// (the contract does not delete).
type Write struct {
	Key   string `json:"key"`
	Value []byte `json:"value"`
}

// Block is one committed transaction.
type Block struct {
	Number    uint64          `json:"number"`
	PrevHash  string          `json:"prev_hash"`
	Time      time.Time       `json:"time"`
	TxID      string          `json:"tx_id"`
	Creator   contract.Caller `json:"creator"`
	Function  string          `json:"function"`
	Args      json.RawMessage `json:"args"`
	Writes    []Write         `json:"writes"`
	Hash      string          `json:"hash"`
	Signature []byte          `json:"signature"`
}

// digest is SHA-256 over the block's JSON with Hash and Signature empty.
// encoding/json writes struct fields in declaration order, so the encoding,
// and the digest, are deterministic.
func (b *Block) digest() ([32]byte, error) {
	c := *b
	c.Hash, c.Signature = "", nil
	raw, err := json.Marshal(c)
	if err != nil {
		return [32]byte{}, err
	}
	return sha256.Sum256(raw), nil
}

func (b *Block) seal(key *ecdsa.PrivateKey) error {
	d, err := b.digest()
	if err != nil {
		return err
	}
	sig, err := ecdsa.SignASN1(rand.Reader, key, d[:])
	if err != nil {
		return fmt.Errorf("sign block %d: %w", b.Number, err)
	}
	b.Hash, b.Signature = hex.EncodeToString(d[:]), sig
	return nil
}

// check verifies the block's own hash and signature.
func (b *Block) check(pub *ecdsa.PublicKey) error {
	d, err := b.digest()
	if err != nil {
		return err
	}
	if hex.EncodeToString(d[:]) != b.Hash {
		return fmt.Errorf("block %d: content does not match its hash", b.Number)
	}
	if !ecdsa.VerifyASN1(pub, d[:], b.Signature) {
		return fmt.Errorf("block %d: signature does not verify", b.Number)
	}
	return nil
}

// newTxID makes a Fabric-style transaction id: SHA-256 of a nonce and the creator.
func newTxID(creator string) string {
	nonce := make([]byte, 24)
	_, _ = rand.Read(nonce)
	h := sha256.Sum256(append(nonce, creator...))
	return hex.EncodeToString(h[:])
}
