package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chainwatch/chainwatch/ledgerclient/embedded"
)

// BenchmarkLedgerCost measures what anchoring costs the embedded ledger:
// `chainwatch run` on the embedded default (48 simulated devices at the
// default speed) for CHAINWATCH_LEDGER_COST (make bench-ledger: 3m), with
// 4 and with 32 partitions. After the first minute (the 25 h of history
// produced at start is anchored by then) it counts, once the run has
// ended, the ledger's anchoring transactions until 10 s before the end and
// what every transaction of that span stored (embedded.UsageBetween), and
// reports anchoring transactions an hour, what they stored a day, and what
// all transactions (alerts, models as well) stored a day. CHAINWATCH_BIN runs another build
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
		time.Sleep(time.Minute)
		t0 := time.Now()
		time.Sleep(runFor - time.Minute - 10*time.Second)
		t1 := time.Now()
		_ = cmd.Wait()
		// What the span's transactions stored, read from the ledger once
		// the run has let go of it: the file itself grows in steps.
		u, err := embedded.UsageBetween(filepath.Join(dir, "ledger"), t0, t1)
		if err != nil {
			b.Fatal(err)
		}
		var anchoring int
		var anchoringBytes int64
		for _, fn := range []string{"AnchorBatch", "AnchorBatches", "SealBatches"} {
			anchoring += u.ByFunction[fn]
			anchoringBytes += u.BytesByFunction[fn]
		}
		elapsed := t1.Sub(t0)
		perDay := func(n int64) float64 { return float64(n) / elapsed.Seconds() * 86400 / (1 << 20) }
		fmt.Fprintf(&sb, "| %s | %d | %d | %.0f | %.2f | %.1f | %d | %.0f |\n", label, partitions, anchoring, float64(anchoring)/elapsed.Hours(),
			float64(anchoring)/elapsed.Seconds(), perDay(anchoringBytes), u.Transactions, perDay(u.Bytes))
	}
	b.Log("\n| build | partitions | anchoring transactions | per hour | per second | anchoring MiB a day | all transactions | ledger MiB a day |\n|---|---:|---:|---:|---:|---:|---:|---:|\n" + sb.String())
	if path := os.Getenv("CHAINWATCH_LEDGER_COST_REPORT"); path != "" {
		f, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		fmt.Fprint(f, sb.String())
	}
}
