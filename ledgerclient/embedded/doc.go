// Package embedded is the default ledger: the chainwatch contract run
// in-process over a bbolt file. Every committing transaction is appended as
// a block that carries the transaction's writes, the hash of the previous
// block and an ECDSA P-256 signature by the ledger's local identity, in the
// same bbolt transaction as the state change, so a crash never separates
// the two and `chainwatch ledger verify` can recheck the whole chain — and
// rebuild the world state from it — offline.
package embedded
