package integrity

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"testing"

	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
)

// rfc6962Leaves are the inputs of the certificate-transparency test vectors
// for RFC 6962 tree heads.
var rfc6962Leaves = [][]byte{
	{}, {0x00}, {0x10}, {0x20, 0x21}, {0x30, 0x31}, {0x40, 0x41, 0x42, 0x43},
	{0x50, 0x51, 0x52, 0x53, 0x54, 0x55, 0x56, 0x57},
	{0x60, 0x61, 0x62, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x69, 0x6a, 0x6b, 0x6c, 0x6d, 0x6e, 0x6f},
}

func rfcLeafHashes() [][32]byte {
	out := make([][32]byte, len(rfc6962Leaves))
	for i, d := range rfc6962Leaves {
		out[i] = sha256.Sum256(append([]byte{0x00}, d...))
	}
	return out
}

func TestMerkleRootMatchesRFC6962Vectors(t *testing.T) {
	want := []string{
		"6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
		"fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
		"aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
		"d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
		"4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
		"76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
		"ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
		"5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
	}
	leaves := rfcLeafHashes()
	for n := 1; n <= len(leaves); n++ {
		root := MerkleRoot(leaves[:n])
		if got := hex.EncodeToString(root[:]); got != want[n-1] {
			t.Errorf("root of %d leaves = %s, want %s", n, got, want[n-1])
		}
	}
	if MerkleRoot(nil) != sha256.Sum256(nil) {
		t.Error("empty tree root is not SHA-256 of the empty string")
	}
}

func TestInclusionProofsVerifyAndRejectTampering(t *testing.T) {
	leaves := rfcLeafHashes()
	for n := 1; n <= len(leaves); n++ {
		root := MerkleRoot(leaves[:n])
		for i := range n {
			proof := InclusionProof(leaves[:n], i)
			if !VerifyInclusion(leaves[i], i, n, proof, root) {
				t.Fatalf("proof of leaf %d in tree of %d does not verify", i, n)
			}
			if n > 1 && VerifyInclusion(leaves[(i+1)%n], i, n, proof, root) {
				t.Fatalf("proof of leaf %d verified another leaf", i)
			}
			if n < len(leaves) {
				// The anchor binds the tree size through its record count,
				// so what must fail is the proof against another tree's root.
				other := MerkleRoot(leaves[:n+1])
				if VerifyInclusion(leaves[i], i, n+1, proof, other) {
					t.Fatalf("proof of leaf %d from a tree of %d verified against the tree of %d", i, n, n+1)
				}
			}
		}
	}
}

func TestLeafHashBindsEveryField(t *testing.T) {
	base := LeafHash(10, 1000, []byte("k"), []byte("v"))
	for name, other := range map[string][32]byte{
		"offset": LeafHash(11, 1000, []byte("k"), []byte("v")),
		"time":   LeafHash(10, 1001, []byte("k"), []byte("v")),
		"key":    LeafHash(10, 1000, []byte("K"), []byte("v")),
		"value":  LeafHash(10, 1000, []byte("k"), []byte("V")),
		"split":  LeafHash(10, 1000, []byte("kv"), []byte("")),
	} {
		if other == base {
			t.Errorf("changing the %s left the leaf hash unchanged", name)
		}
	}
}

func BenchmarkLeafHash(b *testing.B) {
	key := []byte("meter-00042")
	value := make([]byte, 250)
	var h LeafHasher
	b.SetBytes(int64(21 + len(key) + 4 + len(value)))
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		_ = h.Hash(int64(i), 1_764_000_000_000, key, value)
	}
}

// TestMerkleTreesAgreeWithTransparencyDev builds trees of 1 to 70 leaves
// and checks the root against transparency-dev/merkle's compact range, and
// every leaf's audit path against its inclusion check.
func TestMerkleTreesAgreeWithTransparencyDev(t *testing.T) {
	var leaves [][32]byte
	for n := 1; n <= 70; n++ {
		leaves = append(leaves, LeafHash(int64(n), int64(n)*1000, []byte("k"), []byte{byte(n)}))
		rng := (&compact.RangeFactory{Hash: rfc6962.DefaultHasher.HashChildren}).NewEmptyRange(0)
		for i := range leaves {
			if err := rng.Append(leaves[i][:], nil); err != nil {
				t.Fatal(err)
			}
		}
		want, err := rng.GetRootHash(nil)
		if err != nil {
			t.Fatal(err)
		}
		root := MerkleRoot(leaves)
		if !bytes.Equal(root[:], want) {
			t.Fatalf("%d leaves: root %x, transparency-dev's %x", n, root, want)
		}
		for i := range leaves {
			path := InclusionProof(leaves, i)
			p := make([][]byte, len(path))
			for k := range path {
				p[k] = path[k][:]
			}
			if err := proof.VerifyInclusion(rfc6962.DefaultHasher, uint64(i), uint64(n), leaves[i][:], p, want); err != nil {
				t.Fatalf("%d leaves, leaf %d: %v", n, i, err)
			}
		}
	}
}
