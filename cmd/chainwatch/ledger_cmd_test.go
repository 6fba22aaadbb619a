package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/chainwatch/chainwatch/ledgerclient/contract"
)

// TestLedgerVerifyNamesTheTamperedBlock writes anchors through the CLI's own
// ledger access, flips one byte of one block's content in the ledger file,
// and expects `chainwatch ledger verify` to fail naming that block.
func TestLedgerVerifyNamesTheTamperedBlock(t *testing.T) {
	dataDir := t.TempDir()
	cfg, err := LoadConfig("", []string{"CHAINWATCH_DATA_DIR=" + dataDir})
	if err != nil {
		t.Fatal(err)
	}
	svc, closeLedger, err := ledgerAs(cfg, contract.RoleService)
	if err != nil {
		t.Fatal(err)
	}
	var roots []string
	for i := range 4 {
		sum := sha256.Sum256([]byte(fmt.Sprint("cli-batch-", i)))
		roots = append(roots, hex.EncodeToString(sum[:]))
		if _, err := svc.AnchorBatch(context.Background(), contract.Anchor{Stream: "iot.flows", Partition: 3, FirstOffset: int64(i * 50), LastOffset: int64(i*50 + 49), Count: 50, MerkleRoot: roots[i]}); err != nil {
			t.Fatal(err)
		}
	}
	closeLedger()
	if out, err := runCLI(t, "ledger", "verify", "--data-dir", dataDir); err != nil || !strings.Contains(out, `"ok": true`) {
		t.Fatalf("clean ledger: %v\n%s", err, out)
	}

	// Flip one byte of block 1's copy of its root (not the world state's copy).
	path := filepath.Join(dataDir, "ledger", "ledger.db")
	raw, _ := os.ReadFile(path)
	flipped := 0
	for off := 0; ; {
		i := bytes.Index(raw[off:], []byte(roots[1]))
		if i < 0 {
			break
		}
		at := off + i
		if bytes.Contains(raw[max(0, at-400):at], []byte(`"function":"AnchorBatch","args":`)) {
			raw[at] ^= 0x01
			flipped++
		}
		off = at + 1
	}
	if flipped == 0 {
		t.Fatal("block 1 not found in the ledger file")
	}
	if err := os.WriteFile(path, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := runCLI(t, "ledger", "verify", "--data-dir", dataDir)
	if err == nil || !strings.Contains(out, `"first_bad_block": 1`) || !strings.Contains(err.Error(), "block 1") {
		t.Fatalf("tampered ledger: err %v\n%s", err, out)
	}
}
