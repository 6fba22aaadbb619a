package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestReadingCommandsCreateNothing runs every command that only reads
// against a data directory that does not exist, and against one without a
// ledger: each fails with exit 1 naming what is missing, and creates
// nothing.
func TestReadingCommandsCreateNothing(t *testing.T) {
	proof := filepath.Join(t.TempDir(), "proof.json")
	if err := os.WriteFile(proof, []byte(`{"stream":"iot.flows","partition":0,"offset":0}`), 0o644); err != nil {
		t.Fatal(err)
	}
	commands := [][]string{
		{"alerts", "list"},
		{"alerts", "history", "0123456789abcdef"},
		{"alerts", "verdict", "0123456789abcdef", "benign"},
		{"devices", "list"},
		{"firmware", "list"},
		{"models", "list"},
		{"ledger", "verify"},
		{"replay", "--verify"},
		{"prove", "--topic", "iot.flows", "--partition", "0", "--offset", "0"},
		{"verify-proof", proof},
	}
	for _, args := range commands {
		for _, tc := range []struct {
			name, want string
			setup      func(dir string)
		}{
			{"missing data directory", "does not exist", func(string) {}},
			{"data directory without a ledger", "no embedded ledger", func(dir string) { _ = os.Mkdir(dir, 0o755) }},
		} {
			t.Run(strings.Join(args[:1], " ")+"/"+tc.name, func(t *testing.T) {
				dir := filepath.Join(t.TempDir(), "data")
				tc.setup(dir)
				before := listTree(t, filepath.Dir(dir))
				// The operations listener is off, so no running service
				// on this machine can answer in the ledger's place.
				t.Setenv("CHAINWATCH_HTTP_LISTEN", "off")
				_, err := runCLI(t, append(args, "--data-dir", dir)...)
				if err == nil {
					t.Fatalf("%v succeeded without a ledger", args)
				}
				if exitCode(err) != 1 || (!strings.Contains(err.Error(), tc.want) && args[0] != "verify-proof") {
					t.Fatalf("%v: exit %d, %v; want exit 1 naming %q", args, exitCode(err), err, tc.want)
				}
				if after := listTree(t, filepath.Dir(dir)); after != before {
					t.Fatalf("%v created files:\nbefore %s\nafter  %s", args, before, after)
				}
			})
		}
	}
	if _, err := runCLI(t, "models", "show", filepath.Join(t.TempDir(), "none.cwm")); err == nil || exitCode(err) != 1 {
		t.Fatalf("models show of a missing file: %v", err)
	}
}

// TestUsageErrorsExitTwo: unknown commands and flags, malformed and
// missing arguments exit 2 (main prints the command's usage).
func TestUsageErrorsExitTwo(t *testing.T) {
	for _, args := range [][]string{
		{"frobnicate"},
		{"alerts"},
		{"alerts", "lst"},
		{"alerts", "list", "extra"},
		{"alerts", "verdict", "only-an-id"},
		{"devices", "list", "--bogus"},
		{"devices", "revoke"},
		{"prove", "--offset", "x"},
		{"replay"},
		{"train"},
		{"evaluate"},
		{"models", "show"},
		{"run", "--duration", "soon"},
		{"devices", "list", "--data-dir"},
		{"devices", "register", "--id", "meter-9", "--profile", "meter"}, // no --owner
		{"devices", "revoke", "meter-9"},                                 // no --reason
		{"firmware", "approve", "--profile", "meter"},                    // no --hash
	} {
		_, err := runCLI(t, args...)
		if err == nil || exitCode(err) != 2 {
			t.Errorf("%v: err %v, exit %d; want a usage error (exit 2)", args, err, exitCode(err))
		}
	}
}

// listTree lists every path under dir, for a before/after comparison.
func listTree(t *testing.T, dir string) string {
	t.Helper()
	var paths []string
	_ = filepath.Walk(dir, func(p string, _ os.FileInfo, _ error) error {
		paths = append(paths, p)
		return nil
	})
	return strings.Join(paths, " ")
}
