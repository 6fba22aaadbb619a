package sinks_test

import (
	"bufio"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/chainwatch/chainwatch/ledgerclient/contract"
	"github.com/chainwatch/chainwatch/pipeline/sinks"
)

const hookSecret = "whsec-test-3f9a"

// receiver is a webhook receiver as a SIEM team would write it: it checks
// the signature over the raw body and the timestamp's freshness before it
// trusts anything, deduplicates on the alert id, and answers with the
// status its script says.
type receiver struct {
	mu       sync.Mutex
	got      []sinks.Payload
	requests map[string]int // alert id → requests seen
	answer   func(id string, attempt int) int
	badSig   int
}

func newReceiver() *receiver {
	return &receiver{requests: map[string]int{}, answer: func(string, int) int { return http.StatusOK }}
}

func (r *receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, err := io.ReadAll(req.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	ts, err := strconv.ParseInt(req.Header.Get("X-Chainwatch-Timestamp"), 10, 64)
	if err != nil || time.Since(time.Unix(ts, 0)).Abs() > 5*time.Minute {
		r.mu.Lock()
		r.badSig++
		r.mu.Unlock()
		http.Error(w, "stale or missing timestamp", http.StatusUnauthorized)
		return
	}
	mac := hmac.New(sha256.New, []byte(hookSecret))
	fmt.Fprintf(mac, "%d.", ts)
	mac.Write(body)
	want := "sha256=" + hex.EncodeToString(mac.Sum(nil))
	if !hmac.Equal([]byte(want), []byte(req.Header.Get("X-Chainwatch-Signature"))) {
		r.mu.Lock()
		r.badSig++
		r.mu.Unlock()
		http.Error(w, "bad signature", http.StatusUnauthorized)
		return
	}
	var p sinks.Payload
	if err := json.Unmarshal(body, &p); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.requests[p.ID]++
	code := r.answer(p.ID, r.requests[p.ID])
	if code == http.StatusOK {
		r.got = append(r.got, p)
	}
	w.WriteHeader(code)
	fmt.Fprintf(w, "status %d", code)
}

func (r *receiver) received() []sinks.Payload {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]sinks.Payload(nil), r.got...)
}

// serveOn serves h on addr until the test ends (or stop is called).
func serveOn(t *testing.T, addr string, h http.Handler) (stop func()) {
	t.Helper()
	var (
		ln  net.Listener
		err error
	)
	for range 50 { // the port was just released; it may linger briefly
		if ln, err = net.Listen("tcp", addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(ln)
	var once sync.Once
	stop = func() { once.Do(func() { srv.Close() }) }
	t.Cleanup(stop)
	return stop
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// testAlerts are n alerts over devices, in the order a stage raises them.
func testAlerts(n, devices int) []contract.Alert {
	start := time.Now().UTC().Truncate(time.Minute).Add(-time.Duration(n) * time.Minute)
	out := make([]contract.Alert, n)
	for i := range out {
		ws := start.Add(time.Duration(i) * time.Minute)
		out[i] = contract.Alert{
			ID: fmt.Sprintf("alert-%03d", i), Kind: "behaviour", DeviceID: fmt.Sprintf("meter-%02d", i%devices), Profile: "smart-meter",
			WindowStart: ws, WindowEnd: ws.Add(time.Minute), Score: 0.9, Confidence: "high",
			Features:  []contract.Contribution{{Feature: "bytes_out", Value: 9e6, Baseline: 2e4, Share: 0.8}},
			ModelHash: "abc", TxID: fmt.Sprintf("tx-%d", i),
			Evidence: contract.Evidence{Topic: "iot.flows", Partition: 1, Offsets: []int64{int64(100 * i), int64(100*i + 99)}, AnchorIDs: []string{"anchor-1"}},
		}
	}
	return out
}

type outboxEnv struct {
	outbox  *sinks.Outbox
	reg     *prometheus.Registry
	metrics *sinks.Metrics
	dir     string
	cancel  context.CancelFunc
}

// startOutbox runs an outbox whose first sink is the log (standing where
// the ledger stands in the service) and then the given sinks.
func startOutbox(t *testing.T, dir string, capacity int, extra ...sinks.Sink) *outboxEnv {
	t.Helper()
	reg := prometheus.NewRegistry()
	m := sinks.NewMetrics(reg)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	all := append([]sinks.Sink{sinks.LogSink{Log: log}}, extra...)
	o, err := sinks.OpenOutbox(sinks.OutboxConfig{Path: filepath.Join(dir, "outbox.db"), Capacity: capacity, MaxBackoff: 200 * time.Millisecond}, all, m, log)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go o.Run(ctx)
	env := &outboxEnv{outbox: o, reg: reg, metrics: m, dir: dir, cancel: cancel}
	t.Cleanup(env.stop)
	return env
}

func (e *outboxEnv) stop() {
	if e.cancel == nil {
		return
	}
	e.cancel()
	e.outbox.Wait()
	e.outbox.Close()
	e.cancel = nil
}

func jsonHook(t *testing.T, name, addr string) sinks.Sink {
	t.Helper()
	s, err := sinks.New(sinks.WebhookConfig{Name: name, URL: "http://" + addr + "/hook", Format: "json", Secret: "${HOOK_SECRET}", Timeout: 2 * time.Second},
		nil, []string{"HOOK_SECRET=" + hookSecret})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// checkOrderAndOnce: every alert arrived exactly once, and each device's
// alerts in the order they were raised.
func checkOrderAndOnce(t *testing.T, got []sinks.Payload, want []contract.Alert) {
	t.Helper()
	seen := map[string]int{}
	last := map[string]time.Time{}
	for _, p := range got {
		seen[p.ID]++
		if p.WindowStart.Before(last[p.DeviceID]) {
			t.Errorf("device %s: alert %s arrived after a later one", p.DeviceID, p.ID)
		}
		last[p.DeviceID] = p.WindowStart
	}
	for _, a := range want {
		if seen[a.ID] != 1 {
			t.Errorf("alert %s arrived %d times", a.ID, seen[a.ID])
		}
	}
}

func TestWebhookDownForAWhileGetsEveryAlertOnceInOrder(t *testing.T) {
	addr := freeAddr(t) // nothing listens: the receiver is down
	env := startOutbox(t, t.TempDir(), 1000, jsonHook(t, "siem", addr))
	alerts := testAlerts(60, 7)
	for i := 0; i < len(alerts); i += 10 {
		if _, err := env.outbox.Add(context.Background(), alerts[i:i+10]); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "retries against the down receiver", 10*time.Second, func() bool {
		return testutil.ToFloat64(env.metrics.Retries.WithLabelValues("siem")) >= 3
	})
	if d := env.outbox.Depth("siem"); d != len(alerts) {
		t.Fatalf("queue depth %d while the receiver is down, want %d", d, len(alerts))
	}
	r := newReceiver()
	serveOn(t, addr, r) // the receiver comes back
	waitFor(t, "every alert at the receiver", 15*time.Second, func() bool { return len(r.received()) >= len(alerts) })
	time.Sleep(300 * time.Millisecond) // room for a duplicate to show up
	checkOrderAndOnce(t, r.received(), alerts)
	if r.badSig != 0 {
		t.Errorf("%d requests failed the receiver's signature check", r.badSig)
	}
	got := r.received()[0]
	if got.Severity != "high" || got.TxID != "tx-0" || len(got.Features) != 1 || got.Evidence.AnchorIDs[0] != "anchor-1" || got.Summary == "" {
		t.Errorf("payload lacks the alert's content: %+v", got)
	}
	if n := testutil.ToFloat64(env.metrics.Delivered.WithLabelValues("siem")); n != float64(len(alerts)) {
		t.Errorf("delivered counter %v, want %d", n, len(alerts))
	}
	waitFor(t, "the queue to drain", 5*time.Second, func() bool { return env.outbox.Depth("siem") == 0 })
}

func TestWebhookRetries429And500AndDeadLetters400(t *testing.T) {
	addr := freeAddr(t)
	r := newReceiver()
	r.answer = func(id string, attempt int) int {
		switch {
		case id == "alert-004":
			return http.StatusBadRequest // refused for good
		case attempt == 1:
			return http.StatusTooManyRequests
		case attempt == 2:
			return http.StatusInternalServerError
		}
		return http.StatusOK
	}
	serveOn(t, addr, r)
	dir := t.TempDir()
	env := startOutbox(t, dir, 1000, jsonHook(t, "siem", addr))
	alerts := testAlerts(10, 3)
	if _, err := env.outbox.Add(context.Background(), alerts); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "nine alerts and one dead letter", 20*time.Second, func() bool {
		return len(r.received()) == 9 && testutil.ToFloat64(env.metrics.DeadLettered.WithLabelValues("siem")) == 1
	})
	checkOrderAndOnce(t, r.received(), append(alerts[:4:4], alerts[5:]...))
	raw, err := os.ReadFile(filepath.Join(dir, "siem.dead.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	var dead struct {
		Sink   string         `json:"sink"`
		Reason string         `json:"reason"`
		Alert  contract.Alert `json:"alert"`
	}
	if err := json.Unmarshal(raw, &dead); err != nil {
		t.Fatalf("dead-letter line %q: %v", raw, err)
	}
	if dead.Alert.ID != "alert-004" || !strings.Contains(dead.Reason, "HTTP 400") || dead.Sink != "siem" {
		t.Errorf("dead letter %+v, want alert-004 refused with HTTP 400", dead)
	}
	if n := testutil.ToFloat64(env.metrics.Retries.WithLabelValues("siem")); n < 18 {
		t.Errorf("retries %v, want at least two per delivered alert (429, then 500)", n)
	}
}

func TestASinkDownHoldsNoOtherBack(t *testing.T) {
	up, down := freeAddr(t), freeAddr(t)
	r := newReceiver()
	serveOn(t, up, r)
	env := startOutbox(t, t.TempDir(), 1000, jsonHook(t, "down", down), jsonHook(t, "up", up))
	alerts := testAlerts(20, 4)
	if _, err := env.outbox.Add(context.Background(), alerts); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the working sink to get everything", 10*time.Second, func() bool { return len(r.received()) == len(alerts) })
	if env.outbox.Depth("down") != len(alerts) {
		t.Errorf("the down sink's queue holds %d, want %d", env.outbox.Depth("down"), len(alerts))
	}
}

// TestFullQueueHoldsThePipelineAndSurvivesARestart: a queue at capacity
// blocks Add (backpressure, counted once), nothing is dropped, and what
// is queued when the process stops is delivered after it starts again.
func TestFullQueueHoldsThePipelineAndSurvivesARestart(t *testing.T) {
	addr := freeAddr(t)
	dir := t.TempDir()
	env := startOutbox(t, dir, 5, jsonHook(t, "siem", addr))
	alerts := testAlerts(8, 2)
	if _, err := env.outbox.Add(context.Background(), alerts[:5]); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	_, err := env.outbox.Add(ctx, alerts[5:])
	cancel()
	if err == nil {
		t.Fatal("Add went through a full queue")
	}
	if n := testutil.ToFloat64(env.metrics.QueueFull.WithLabelValues("siem")); n != 1 {
		t.Errorf("queue-full counter %v, want 1", n)
	}
	env.stop()

	r := newReceiver()
	serveOn(t, addr, r)
	env = startOutbox(t, dir, 5, jsonHook(t, "siem", addr))
	waitFor(t, "the queued alerts after the restart", 10*time.Second, func() bool { return len(r.received()) == 5 })
	if _, err := env.outbox.Add(context.Background(), alerts); err != nil { // the stage replays its batch
		t.Fatal(err)
	}
	waitFor(t, "the rest", 10*time.Second, func() bool { return len(r.received()) == len(alerts) })
	time.Sleep(300 * time.Millisecond)
	checkOrderAndOnce(t, r.received(), alerts)
}

// TestDeadLetterFileIsJSONLines: one line per refused alert.
func TestDeadLetterFileIsJSONLines(t *testing.T) {
	addr := freeAddr(t)
	r := newReceiver()
	r.answer = func(string, int) int { return http.StatusUnprocessableEntity }
	serveOn(t, addr, r)
	dir := t.TempDir()
	env := startOutbox(t, dir, 100, jsonHook(t, "siem", addr))
	if _, err := env.outbox.Add(context.Background(), testAlerts(3, 1)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "three dead letters", 10*time.Second, func() bool {
		return testutil.ToFloat64(env.metrics.DeadLettered.WithLabelValues("siem")) == 3
	})
	f, err := os.Open(filepath.Join(dir, "siem.dead.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	lines := 0
	for sc := bufio.NewScanner(f); sc.Scan(); lines++ {
		if !json.Valid(sc.Bytes()) {
			t.Errorf("line %d is not JSON: %s", lines+1, sc.Text())
		}
	}
	if lines != 3 {
		t.Errorf("%d dead-letter lines, want 3", lines)
	}
}
