package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/chainwatch/chainwatch/ledgerclient/contract"
	"github.com/chainwatch/chainwatch/ledgerclient/embedded/embeddedtest"
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
	embeddedtest.FlipInBlockArgs(t, filepath.Join(dataDir, "ledger"), "AnchorBatch", roots[1])
	out, err := runCLI(t, "ledger", "verify", "--data-dir", dataDir)
	if err == nil || !strings.Contains(out, `"first_bad_block": 1`) || !strings.Contains(err.Error(), "block 1") {
		t.Fatalf("tampered ledger: err %v\n%s", err, out)
	}
}
