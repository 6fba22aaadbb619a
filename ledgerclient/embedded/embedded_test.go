package embedded

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chainwatch/chainwatch/ledgerclient"
	"github.com/chainwatch/chainwatch/ledgerclient/contract"
	"github.com/chainwatch/chainwatch/ledgerclient/embedded/embeddedtest"
)

func hash(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

func openTest(t *testing.T, dir string) *Ledger {
	t.Helper()
	l, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func TestSubmitEvaluateAndIdempotentAlert(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	l := openTest(t, dir)
	defer l.Close()
	maker := ledgerclient.New(l.Client(LocalCaller(contract.RoleManufacturer)))
	svc := ledgerclient.New(l.Client(LocalCaller(contract.RoleService)))

	events, _ := svc.Backend.Subscribe(ctx)
	if _, err := maker.RegisterDevice(ctx, contract.Device{ID: "cam-1", Profile: "camera", Owner: "acme", MACs: []string{"AA:BB:CC:00:11:22"}}); err != nil {
		t.Fatal(err)
	}
	d, err := svc.GetDevice(ctx, "cam-1")
	if err != nil || d.MACs[0] != "aa:bb:cc:00:11:22" || d.Status != contract.DeviceActive {
		t.Fatalf("GetDevice = %+v, %v", d, err)
	}
	if _, err := svc.RegisterDevice(ctx, contract.Device{ID: "x", Profile: "camera", Owner: "o"}); !errors.Is(err, contract.ErrForbidden) {
		t.Fatalf("service registering a device: err = %v, want ErrForbidden", err)
	}

	alert := contract.Alert{ID: "a1", Kind: contract.AlertBehaviour, DeviceID: "cam-1", Score: 0.8, Confidence: "high"}
	first, err := svc.RecordAlert(ctx, alert)
	if err != nil || first.TxID == "" {
		t.Fatalf("RecordAlert = %+v, %v", first, err)
	}
	h1, _ := l.Height()
	again, err := svc.RecordAlert(ctx, alert)
	if err != nil || again.TxID != first.TxID {
		t.Fatalf("second RecordAlert returned tx %q, want the first %q (err %v)", again.TxID, first.TxID, err)
	}
	if h2, _ := l.Height(); h2 != h1 {
		t.Fatalf("idempotent repeat grew the chain from %d to %d blocks", h1, h2)
	}
	analyst := ledgerclient.New(l.Client(LocalCaller(contract.RoleAnalyst)))
	if _, err := analyst.SetVerdict(ctx, "a1", contract.VerdictTruePositive, "confirmed"); err != nil {
		t.Fatal(err)
	}
	versions, err := analyst.AlertHistory(ctx, "a1")
	if err != nil || len(versions) != 2 || versions[0].TxID != first.TxID || versions[1].Alert.Verdict == nil || versions[1].TxID == first.TxID {
		t.Fatalf("alert history %+v, %v: want the recording, then the verdict in its own transaction", versions, err)
	}
	seen := map[string]bool{}
	timeout := time.After(2 * time.Second)
	for !seen[contract.EventAlertRecorded] || !seen[contract.EventDeviceChanged] {
		select {
		case ev := <-events:
			seen[ev.Name] = true
		case <-timeout:
			t.Fatalf("events seen %v, want device.changed and alert.recorded", seen)
		}
	}
}

func TestVerifyDetectsAFlippedByte(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	l := openTest(t, dir)
	svc := ledgerclient.New(l.Client(LocalCaller(contract.RoleService)))
	roots := []string{}
	for i := range 5 {
		root := hash(fmt.Sprint("batch", i))
		roots = append(roots, root)
		_, err := svc.AnchorBatch(ctx, contract.Anchor{Stream: "iot.flows", Partition: 0, FirstOffset: int64(i * 10), LastOffset: int64(i*10 + 9), Count: 10, MerkleRoot: root})
		if err != nil {
			t.Fatal(err)
		}
	}
	l.Close()
	rep, err := Verify(dir, "")
	if err != nil || !rep.OK || rep.Blocks != 5 {
		t.Fatalf("clean ledger: %+v, %v", rep, err)
	}

	// Change one hex digit of the third batch's root inside its block.
	embeddedtest.FlipInBlockArgs(t, dir, "AnchorBatch", roots[2])
	rep, err = Verify(dir, "")
	if err != nil {
		t.Fatal(err)
	}
	if rep.OK || rep.FirstBadBlock != 2 {
		t.Fatalf("tampered ledger: %+v, want first bad block 2", rep)
	}
}

// TestKillNineLosesNothingCommitted runs a child process that anchors batches
// and prints each committed anchor, kills it with SIGKILL mid-stream, and
// checks every printed anchor is on the reopened ledger, which verifies.
func TestKillNineLosesNothingCommitted(t *testing.T) {
	if os.Getenv("CHAINWATCH_LEDGER_CHILD") != "" {
		return
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestLedgerChild$")
	cmd.Env = append(os.Environ(), "CHAINWATCH_LEDGER_CHILD="+dir)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Read acknowledged anchor ids until 30 have committed, kill the child
	// mid-stream, then drain what it printed before dying.
	var lines []string
	sc := bufio.NewScanner(stdout)
	for len(lines) < 30 && sc.Scan() {
		if id := strings.TrimSpace(sc.Text()); strings.HasPrefix(id, "iot.flows/") {
			lines = append(lines, id)
		}
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	for sc.Scan() {
		if id := strings.TrimSpace(sc.Text()); strings.HasPrefix(id, "iot.flows/") {
			lines = append(lines, id)
		}
	}
	_ = cmd.Wait()
	if len(lines) < 30 {
		t.Fatalf("child committed only %d anchors before the kill", len(lines))
	}
	l := openTest(t, dir)
	svc := ledgerclient.New(l.Client(LocalCaller(contract.RoleService)))
	for _, id := range lines {
		if _, err := svc.GetAnchor(context.Background(), id); err != nil {
			t.Errorf("anchor %s acknowledged before the kill is missing: %v", id, err)
		}
	}
	l.Close()
	if rep, err := Verify(dir, ""); err != nil || !rep.OK {
		t.Fatalf("ledger after kill -9: %+v, %v", rep, err)
	}
}

func TestLedgerChild(t *testing.T) {
	dir := os.Getenv("CHAINWATCH_LEDGER_CHILD")
	if dir == "" {
		t.Skip("helper process for TestKillNineLosesNothingCommitted")
	}
	l, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	svc := ledgerclient.New(l.Client(LocalCaller(contract.RoleService)))
	for i := 0; ; i++ {
		a, err := svc.AnchorBatch(context.Background(), contract.Anchor{
			Stream: "iot.flows", Partition: 1, FirstOffset: int64(i * 100), LastOffset: int64(i*100 + 99),
			Count: 100, MerkleRoot: hash(strconv.Itoa(i)),
		})
		if err != nil {
			t.Fatal(err)
		}
		fmt.Println(a.ID) // printed only once committed and fsynced
	}
}

func TestSecondOpenIsRefusedClearly(t *testing.T) {
	dir := t.TempDir()
	l := openTest(t, dir)
	defer l.Close()
	// bbolt's flock is per process on Linux only across processes, so check
	// through a child that the lock is honoured and named.
	if _, err := Open(dir, Options{LockTimeout: 50 * time.Millisecond}); err == nil {
		t.Skip("same-process reopen is not locked on this platform")
	} else if !errors.Is(err, ErrInUse) {
		t.Fatalf("err = %v, want ErrInUse", err)
	}
}

// TestUsageCountsWhatTransactionsStore: a span's usage counts its
// transactions by function and their bytes (block, state value and history
// record of every write); transactions outside the span are left out.
func TestUsageCountsWhatTransactionsStore(t *testing.T) {
	dir := t.TempDir()
	l, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	before := time.Now().Add(-time.Second)
	cl := ledgerclient.New(l.Client(LocalCaller(contract.RoleManufacturer)))
	for i := range 3 {
		if _, err := cl.RegisterDevice(context.Background(), contract.Device{ID: fmt.Sprintf("meter-%d", i), Profile: "meter", Owner: "o"}); err != nil {
			t.Fatal(err)
		}
	}
	after := time.Now().Add(time.Second)
	h, _ := l.Height()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	u, err := UsageBetween(dir, before, after)
	if err != nil {
		t.Fatal(err)
	}
	if u.Transactions != int(h) || u.ByFunction["RegisterDevice"] != 3 || u.Bytes < 3*200 {
		t.Fatalf("usage %+v of %d blocks, want 3 RegisterDevice transactions of a few hundred bytes each", u, h)
	}
	none, err := UsageBetween(dir, after, after.Add(time.Hour))
	if err != nil || none.Transactions != 0 || none.Bytes != 0 {
		t.Fatalf("usage after the last block: %+v, %v", none, err)
	}
}
