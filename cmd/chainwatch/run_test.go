package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"strings"
	"testing"
)

// runCLI runs the chainwatch command line in-process.
func runCLI(t *testing.T, args ...string) (string, error) {
	t.Helper()
	root := newRootCommand()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetArgs(args)
	err := root.ExecuteContext(context.Background())
	return out.String(), err
}

// TestRunWithDurationPrintsSummaryAndRestartsFromItsDataDir runs `chainwatch
// run --duration` twice on one data directory, with a compressed simulated
// day: the first run warms up, trains and alerts; the second finds the
// broker log, the ledger and the active models where the first left them.
func TestRunWithDurationPrintsSummaryAndRestartsFromItsDataDir(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the service")
	}
	if raceDetector {
		// Instrumented, twelve seconds do not reach the end of the warm-up;
		// the crash test runs the same service under the race detector.
		t.Skip("too slow under the race detector")
	}
	dataDir := t.TempDir()
	for k, v := range compressedDay(24) {
		t.Setenv(k, v)
	}
	var summaries []RunSummary
	for run := 1; run <= 2; run++ {
		out, err := runCLI(t, "run", "--duration", "12s", "--data-dir", dataDir)
		if err != nil {
			t.Fatalf("run %d: %v", run, err)
		}
		var s RunSummary
		if err := json.Unmarshal([]byte(strings.TrimSpace(out)), &s); err != nil {
			t.Fatalf("run %d printed %q, not one JSON summary: %v", run, out, err)
		}
		t.Logf("run %d summary: %s", run, strings.TrimSpace(out))
		if s.RecordsConsumed == 0 || s.WindowsScored == 0 || s.AnchorsWritten == 0 {
			t.Errorf("run %d: nothing consumed, scored or anchored: %+v", run, s)
		}
		if s.AlertsByKind["behaviour"] == 0 {
			t.Errorf("run %d: no behaviour alert for the injected attacks: %+v", run, s)
		}
		summaries = append(summaries, s)
	}
	// The second run scores from its first window: the models came from the
	// ledger and the data directory, not from a new warm-up.
	if _, err := os.Stat(dataDir + "/broker"); err != nil {
		t.Errorf("broker log not persisted: %v", err)
	}
	out, err := runCLI(t, "ledger", "verify", "--data-dir", dataDir)
	if err != nil {
		t.Fatalf("ledger verify after two runs: %v\n%s", err, out)
	}
}

// serveInBackground runs the service until the returned stop is called,
// which waits for it and reports its error.
func serveInBackground(t *testing.T, cfg Config) (context.Context, func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() {
		_, err := runService(ctx, cfg, 0, slog.New(slog.NewTextHandler(io.Discard, nil)))
		served <- err
	}()
	return ctx, func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("service: %v", err)
		}
	}
}
