// Package embeddedtest helps tests tamper with an embedded ledger's file the
// way an attacker with disk access would.
package embeddedtest

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// FlipInBlockArgs flips one bit of the first byte of every copy of needle
// that lies in a block's recorded arguments of function fn in the ledger
// file under dir — and not the world state's copy, so that it is the block
// chain, not just the state, that was changed. bbolt may keep stale copies
// of a page, so every copy is changed. It fails the test when there is none.
func FlipInBlockArgs(t testing.TB, dir, fn, needle string) {
	t.Helper()
	path := filepath.Join(dir, "ledger.db")
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	marker := []byte(`"function":"` + fn + `","args":`)
	flipped := 0
	for off := 0; ; {
		i := bytes.Index(raw[off:], []byte(needle))
		if i < 0 {
			break
		}
		at := off + i
		if bytes.Contains(raw[max(0, at-400):at], marker) {
			raw[at] ^= 0x01
			flipped++
		}
		off = at + 1
	}
	if flipped == 0 {
		t.Fatalf("no %s block arguments containing %q in %s", fn, needle, path)
	}
	if err := os.WriteFile(path, raw, 0o600); err != nil {
		t.Fatal(err)
	}
}
