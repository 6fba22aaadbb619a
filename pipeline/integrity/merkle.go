package integrity

import (
	"crypto/sha256"
	"encoding/binary"
	"math/bits"

	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
)

// Merkle trees over Kafka records follow RFC 6962 §2.1: leaves are hashed
// as SHA-256(0x00 ‖ leaf) and interior nodes as SHA-256(0x01 ‖ left ‖ right),
// so no leaf can pose as an interior node (second-preimage resistance), and
// a tree of n leaves splits at the largest power of two below n.
//
// Proofs are verified with github.com/transparency-dev/merkle. The root
// and audit paths are built here: the anchoring stage builds a root over
// every batch of every partition, and these do it over [32]byte values
// without an allocation, where the library's compact ranges allocate a
// slice per node and its proof package gives node ids to fetch from a
// store we do not keep. merkle_test.go checks both against the library
// and against RFC 6962's test vectors.

// LeafHash hashes one record as a Merkle leaf. The leaf binds the record's
// offset, timestamp, key and value, so moving, re-timing or editing a record
// changes its hash:
//
//	SHA-256(0x00 ‖ offset ‖ timestamp_ms ‖ len(key) ‖ key ‖ len(value) ‖ value)
//
// with the integers big-endian (8, 8, 4 and 4 bytes).
func LeafHash(offset int64, timestampMs int64, key, value []byte) [32]byte {
	var buf [1024]byte // most records fit: no allocation
	return sha256.Sum256(appendLeaf(buf[:0], offset, timestampMs, key, value))
}

// LeafHasher computes leaf hashes in a buffer it reuses, so that hashing a
// record is one pass of SHA-256 over its preimage with no allocation; the
// anchoring stage hashes every record and this is most of its CPU.
type LeafHasher struct{ buf []byte }

func (h *LeafHasher) Hash(offset int64, timestampMs int64, key, value []byte) [32]byte {
	h.buf = appendLeaf(h.buf[:0], offset, timestampMs, key, value)
	return sha256.Sum256(h.buf)
}

// appendLeaf appends a record's leaf preimage (with its 0x00 prefix).
func appendLeaf(b []byte, offset int64, timestampMs int64, key, value []byte) []byte {
	b = append(b, 0x00)
	b = binary.BigEndian.AppendUint64(b, uint64(offset))
	b = binary.BigEndian.AppendUint64(b, uint64(timestampMs))
	b = binary.BigEndian.AppendUint32(b, uint32(len(key)))
	b = append(b, key...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(value)))
	return append(b, value...)
}

func nodeHash(left, right [32]byte) [32]byte {
	var buf [1 + 64]byte
	buf[0] = 0x01
	copy(buf[1:], left[:])
	copy(buf[33:], right[:])
	return sha256.Sum256(buf[:])
}

// MerkleRoot is RFC 6962's MTH over leaf hashes. The root of no leaves is
// SHA-256 of the empty string.
func MerkleRoot(leaves [][32]byte) [32]byte {
	switch len(leaves) {
	case 0:
		return sha256.Sum256(nil)
	case 1:
		return leaves[0]
	}
	k := splitPoint(len(leaves))
	return nodeHash(MerkleRoot(leaves[:k]), MerkleRoot(leaves[k:]))
}

// splitPoint is the largest power of two strictly below n (n ≥ 2).
func splitPoint(n int) int { return 1 << (bits.Len(uint(n-1)) - 1) }

// InclusionProof is RFC 6962's audit path for leaf index i: the sibling
// hashes from the leaf up to the root.
func InclusionProof(leaves [][32]byte, i int) [][32]byte {
	if len(leaves) <= 1 {
		return nil
	}
	k := splitPoint(len(leaves))
	if i < k {
		return append(InclusionProof(leaves[:k], i), MerkleRoot(leaves[k:]))
	}
	return append(InclusionProof(leaves[k:], i-k), MerkleRoot(leaves[:k]))
}

// VerifyInclusion checks that leaf sits at index i of a tree of n leaves
// with the given root (RFC 9162 §2.1.3.2). The check is the one anyone
// verifying a proof runs, so it is transparency-dev/merkle's, the
// certificate-transparency ecosystem's own, not ours.
func VerifyInclusion(leaf [32]byte, i, n int, path [][32]byte, root [32]byte) bool {
	if i < 0 || i >= n {
		return false
	}
	p := make([][]byte, len(path))
	for k := range path {
		p[k] = path[k][:]
	}
	return proof.VerifyInclusion(rfc6962.DefaultHasher, uint64(i), uint64(n), leaf[:], p, root[:]) == nil
}
