package main

import (
	"context"
	"crypto/hmac"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/chainwatch/chainwatch/ledgerclient"
	"github.com/chainwatch/chainwatch/ledgerclient/contract"
	"github.com/chainwatch/chainwatch/ledgerclient/embedded"
	"github.com/chainwatch/chainwatch/pipeline"
	"github.com/chainwatch/chainwatch/pipeline/sinks"
)

// compressedDay configures a service for tests: free loopback ports, quiet
// logs, a simulated day compressed into seconds, with attacks and trust
// scenarios every 10 simulated minutes.
func compressedDay(devices int) map[string]string {
	return map[string]string{
		"CHAINWATCH_KAFKA_EMBEDDED_LISTEN":        "127.0.0.1:0",
		"CHAINWATCH_HTTP_LISTEN":                  "127.0.0.1:0",
		"CHAINWATCH_LOG_LEVEL":                    "warn",
		"CHAINWATCH_DETECTOR_WARMUP":              "2h",
		"CHAINWATCH_SIMULATOR_HISTORY":            "3h",
		"CHAINWATCH_SIMULATOR_SPEED":              "1200",
		"CHAINWATCH_SIMULATOR_DEVICES":            strconv.Itoa(devices),
		"CHAINWATCH_SIMULATOR_FIRST_ATTACK_AFTER": "2m",
		"CHAINWATCH_SIMULATOR_ATTACK_EVERY":       "10m",
		"CHAINWATCH_SIMULATOR_FIRST_TRUST_AFTER":  "3m",
		"CHAINWATCH_SIMULATOR_TRUST_EVERY":        "10m",
	}
}

// TestServiceChild is the service process of TestKillNineLosesAndDuplicatesNoAlert.
func TestServiceChild(t *testing.T) {
	dir := os.Getenv("CHAINWATCH_CRASH_CHILD")
	if dir == "" {
		t.Skip("child process of TestKillNineLosesAndDuplicatesNoAlert")
	}
	cfg, err := LoadConfig(os.Getenv("CW_TEST_CONFIG"), append(os.Environ(), "CHAINWATCH_DATA_DIR="+dir))
	if err != nil {
		t.Fatal(err)
	}
	d, _ := time.ParseDuration(os.Getenv("CW_TEST_RUN_FOR"))
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	if _, err := runService(context.Background(), cfg, d, log); err != nil {
		t.Fatal(err)
	}
}

// TestKillNineLosesAndDuplicatesNoAlert kills the running service with
// SIGKILL at random moments, restarts it on the same data directory, lets
// a last run finish cleanly, and checks the sinks: every alert on the
// ledger is on the alerts topic exactly once, and the topic holds nothing
// else. A signed json webhook is down through every killed run, so its
// queue holds alerts at each kill; it comes back for the last run and
// must then receive every alert on the ledger exactly once.
func TestKillNineLosesAndDuplicatesNoAlert(t *testing.T) {
	if testing.Short() {
		t.Skip("runs and kills the service")
	}
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	hookAddr := freeAddr(t)
	conf := filepath.Join(dir, "chainwatch.yaml")
	err := os.WriteFile(conf, []byte(fmt.Sprintf(`alerts:
  queue_capacity: 100000
  max_backoff: 500ms
  webhooks:
    - name: siem
      url: http://%s/hook
      format: json
      secret: ${CW_CRASH_HOOK_SECRET}
      timeout: 2s
`, hookAddr)), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	runs := 0
	start := func(runFor time.Duration) *exec.Cmd {
		runs++
		cmd := exec.Command(os.Args[0], "-test.run=^TestServiceChild$", "-test.timeout=3m")
		cmd.Env = append(os.Environ(), "CHAINWATCH_CRASH_CHILD="+dir, "CW_TEST_RUN_FOR="+runFor.String(), "CW_TEST_CONFIG="+conf, "CW_CRASH_HOOK_SECRET=crash-secret")
		for k, v := range compressedDay(16) {
			cmd.Env = append(cmd.Env, k+"="+v)
		}
		// Each run's warnings and errors are kept for the failure report.
		out, err := os.Create(filepath.Join(dir, fmt.Sprintf("run-%d.log", runs)))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { out.Close() })
		cmd.Stdout, cmd.Stderr = out, out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd
	}
	kills := 0
	for range 4 {
		cmd := start(0)
		time.Sleep(time.Duration(3000+rng.IntN(6000)) * time.Millisecond)
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		_ = cmd.Wait()
		kills++
	}
	// The webhook receiver comes back for the last run.
	hook := &hookReceiver{got: map[string]int{}}
	srv := &http.Server{Handler: hook}
	ln, err := net.Listen("tcp", hookAddr)
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	defer srv.Close()
	final := start(12 * time.Second)
	if err := final.Wait(); err != nil {
		for i := 1; i <= runs; i++ {
			raw, _ := os.ReadFile(filepath.Join(dir, fmt.Sprintf("run-%d.log", i)))
			t.Logf("run %d:\n%s", i, tail(raw, 6000))
		}
		t.Fatalf("final clean run: %v", err)
	}

	// Read what the sinks hold, from the data directory the runs left.
	broker, err := pipeline.StartEmbeddedBroker(pipeline.BrokerConfig{Listen: "127.0.0.1:0", DataDir: filepath.Join(dir, "broker")}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer broker.Close()
	onTopic := map[string]int{}
	conn, err := kafka.Dial("tcp", broker.Addr())
	if err != nil {
		t.Fatal(err)
	}
	parts, err := conn.ReadPartitions("chainwatch.alerts")
	conn.Close()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range parts {
		pc, err := kafka.DialLeader(context.Background(), "tcp", broker.Addr(), "chainwatch.alerts", p.ID)
		if err != nil {
			t.Fatal(err)
		}
		last, _ := pc.ReadLastOffset()
		pc.Close()
		if last == 0 {
			continue
		}
		r := kafka.NewReader(kafka.ReaderConfig{Brokers: []string{broker.Addr()}, Topic: "chainwatch.alerts", Partition: p.ID, MaxWait: 100 * time.Millisecond})
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		for {
			m, err := r.ReadMessage(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for _, h := range m.Headers {
				if h.Key == "chainwatch-alert-id" {
					onTopic[string(h.Value)]++
				}
			}
			if m.Offset >= last-1 {
				break
			}
		}
		cancel()
		r.Close()
	}
	led, err := embedded.Open(filepath.Join(dir, "ledger"), embedded.Options{})
	if err != nil {
		t.Fatal(err)
	}
	onLedger, err := ledgerclient.New(led.Client(embedded.LocalCaller(contract.RoleAnalyst))).ListAlerts(context.Background(), contract.ListAlertsArgs{})
	led.Close()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d kills; %d alerts on the ledger, %d distinct on the topic", kills, len(onLedger), len(onTopic))
	if len(onLedger) == 0 {
		t.Fatal("no alert at all: the runs did not get far enough to test anything")
	}
	for id, n := range onTopic {
		if n > 1 {
			t.Errorf("alert %s is on the alerts topic %d times", id, n)
		}
	}
	for _, a := range onLedger {
		if onTopic[a.ID] == 0 {
			t.Errorf("alert %s (%s, %s) is on the ledger but not on the alerts topic", a.ID, a.Kind, a.DeviceID)
		}
		delete(onTopic, a.ID)
	}
	for id := range onTopic {
		t.Errorf("alert %s is on the alerts topic but not on the ledger", id)
	}
	hook.mu.Lock()
	defer hook.mu.Unlock()
	t.Logf("webhook: %d alerts received, %d bad signatures", len(hook.got), hook.bad)
	if hook.bad > 0 {
		t.Errorf("%d webhook requests failed the signature check", hook.bad)
	}
	for _, a := range onLedger {
		if n := hook.got[a.ID]; n != 1 {
			t.Errorf("alert %s reached the webhook %d times", a.ID, n)
		}
		delete(hook.got, a.ID)
	}
	for id := range hook.got {
		t.Errorf("alert %s reached the webhook but is not on the ledger", id)
	}
	if rep, err := embedded.Verify(filepath.Join(dir, "ledger"), ""); err != nil || !rep.OK {
		t.Fatalf("ledger after %d kills: %+v %v", kills, rep, err)
	}
}

// hookReceiver is a json webhook receiver that checks signatures and
// counts deliveries per alert id.
type hookReceiver struct {
	mu  sync.Mutex
	got map[string]int
	bad int
}

func (h *hookReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	ts, _ := strconv.ParseInt(r.Header.Get(sinks.HeaderTimestamp), 10, 64)
	h.mu.Lock()
	defer h.mu.Unlock()
	if !hmac.Equal([]byte(sinks.Sign([]byte("crash-secret"), ts, body)), []byte(r.Header.Get(sinks.HeaderSignature))) {
		h.bad++
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	h.got[r.Header.Get(sinks.HeaderAlertID)]++
}

// tail is the end of a log, at most n bytes.
func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}
