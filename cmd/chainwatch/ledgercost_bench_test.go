package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// BenchmarkLedgerCost measures what anchoring costs the embedded ledger:
// `chainwatch run` on the embedded default (48 simulated devices at the
// default speed) for CHAINWATCH_LEDGER_COST (make bench-ledger: 3m), with
// 4 and with 32 partitions. After the first minute (the 25 h of history
// produced at start is anchored by then) it counts the ledger's anchoring
// transactions and the growth of its files until the end, and reports
// transactions an hour and MiB a day. CHAINWATCH_BIN runs another build
// (the same measurement of an older commit); the report goes to
// CHAINWATCH_LEDGER_COST_REPORT, appended.
func BenchmarkLedgerCost(b *testing.B) {
	length := os.Getenv("CHAINWATCH_LEDGER_COST")
	if length == "" {
		b.Skip("set CHAINWATCH_LEDGER_COST to each run's length (make bench-ledger runs 3m)")
	}
	runFor, err := time.ParseDuration(length)
	if err != nil || runFor <= 2*time.Minute {
		b.Fatalf("CHAINWATCH_LEDGER_COST: want a duration over 2m, got %q", length)
	}
	bin, label := benchBinary(b)
	var sb strings.Builder
	for _, partitions := range []int{4, 32} {
		dir := b.TempDir()
		httpAddr := freeAddr(b)
		cmd := exec.Command(bin, "run", "--duration", runFor.String())
		cmd.Env = append(childEnv(), "CHAINWATCH_DATA_DIR="+dir, "CHAINWATCH_HTTP_LISTEN="+httpAddr,
			"CHAINWATCH_KAFKA_EMBEDDED_LISTEN="+freeAddr(b), fmt.Sprintf("CHAINWATCH_KAFKA_PARTITIONS=%d", partitions), "CHAINWATCH_LOG_LEVEL=warn")
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		txs := func() float64 {
			m := scrapeAddr(httpAddr)
			return metricSum(m, `chainwatch_ledger_tx_seconds_count{function="AnchorBatch"`) + metricSum(m, `chainwatch_ledger_tx_seconds_count{function="AnchorBatches"`)
		}
		time.Sleep(time.Minute)
		tx0, mb0, t0 := txs(), dirMiB(filepath.Join(dir, "ledger")), time.Now()
		time.Sleep(runFor - time.Minute - 10*time.Second)
		tx1, mb1, elapsed := txs(), dirMiB(filepath.Join(dir, "ledger")), time.Since(t0)
		_ = cmd.Wait()
		hours := elapsed.Hours()
		fmt.Fprintf(&sb, "| %s | %d | %.0f | %.0f | %.2f | %.0f |\n", label, partitions, tx1-tx0, (tx1-tx0)/hours, (tx1-tx0)/elapsed.Seconds(), (mb1-mb0)/hours*24)
	}
	b.Log("\n| build | partitions | anchoring transactions | per hour | per second | ledger MiB a day |\n|---|---:|---:|---:|---:|---:|\n" + sb.String())
	if path := os.Getenv("CHAINWATCH_LEDGER_COST_REPORT"); path != "" {
		f, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		fmt.Fprint(f, sb.String())
	}
}
