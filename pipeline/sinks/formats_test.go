package sinks_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"encoding/pem"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chainwatch/chainwatch/ledgerclient/contract"
	"github.com/chainwatch/chainwatch/pipeline/sinks"
)

// capture is a loopback HTTP server that keeps each request and answers
// with answer(body).
type capture struct {
	mu     sync.Mutex
	reqs   []*http.Request
	bodies [][]byte
	answer func(body []byte) (int, string)
}

func (c *capture) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	c.mu.Lock()
	c.reqs, c.bodies = append(c.reqs, r), append(c.bodies, body)
	c.mu.Unlock()
	code, text := http.StatusOK, `{"text":"Success","code":0}`
	if c.answer != nil {
		code, text = c.answer(body)
	}
	w.WriteHeader(code)
	io.WriteString(w, text)
}

func newSink(t *testing.T, c sinks.WebhookConfig, linkTemplate string) sinks.Sink {
	t.Helper()
	l, err := sinks.NewLinker(linkTemplate)
	if err != nil {
		t.Fatal(err)
	}
	s, err := sinks.New(c, l, nil)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestSplunkHECEvents checks the body against the HTTP Event Collector's
// documented event endpoint: Authorization "Splunk <token>", one JSON
// object per event with time (epoch seconds, a number), host, source,
// sourcetype (strings) and event (the data).
func TestSplunkHECEvents(t *testing.T) {
	addr := freeAddr(t)
	c := &capture{}
	serveOn(t, addr, c)
	s := newSink(t, sinks.WebhookConfig{Name: "splunk", URL: "http://" + addr + "/services/collector/event", Format: "splunk-hec", Secret: "hec-token-1"}, "https://grafana.example/d/device?var-device={{.DeviceID}}")
	alerts := testAlerts(3, 3)
	if err := s.Deliver(context.Background(), alerts); err != nil {
		t.Fatal(err)
	}
	if len(c.reqs) != 1 {
		t.Fatalf("%d requests, want one batch", len(c.reqs))
	}
	if got := c.reqs[0].Header.Get("Authorization"); got != "Splunk hec-token-1" {
		t.Errorf("Authorization %q", got)
	}
	if c.reqs[0].URL.Path != "/services/collector/event" {
		t.Errorf("posted to %s", c.reqs[0].URL.Path)
	}
	dec := json.NewDecoder(bytes.NewReader(c.bodies[0]))
	for i := 0; dec.More(); i++ {
		var ev map[string]any
		if err := dec.Decode(&ev); err != nil {
			t.Fatal(err)
		}
		tm, ok := ev["time"].(float64)
		if !ok || int64(tm) != alerts[i].WindowEnd.Unix() {
			t.Errorf("event %d: time %v (%T), want epoch seconds %d", i, ev["time"], ev["time"], alerts[i].WindowEnd.Unix())
		}
		for _, k := range []string{"host", "source", "sourcetype"} {
			if _, ok := ev[k].(string); !ok {
				t.Errorf("event %d: %s is %T, want a string", i, k, ev[k])
			}
		}
		if ev["host"] != alerts[i].DeviceID || ev["sourcetype"] != "chainwatch:alert" {
			t.Errorf("event %d: host %v sourcetype %v", i, ev["host"], ev["sourcetype"])
		}
		event, ok := ev["event"].(map[string]any)
		if !ok || event["id"] != alerts[i].ID || event["severity"] != "high" || event["tx_id"] != alerts[i].TxID ||
			event["link"] != "https://grafana.example/d/device?var-device="+alerts[i].DeviceID {
			t.Errorf("event %d: %v", i, ev["event"])
		}
	}
}

// TestECSBulkDocuments checks the _bulk body against the Elasticsearch
// bulk API (NDJSON, an action line then a source line, newline-terminated)
// and the ECS field names and types; a redelivery answered 409 counts as
// delivered and a mapping error is permanent.
func TestECSBulkDocuments(t *testing.T) {
	addr := freeAddr(t)
	c := &capture{answer: func([]byte) (int, string) {
		return http.StatusOK, `{"errors":false,"items":[{"create":{"status":201}},{"create":{"status":201}}]}`
	}}
	serveOn(t, addr, c)
	s := newSink(t, sinks.WebhookConfig{Name: "elastic", URL: "http://" + addr, Format: "ecs", Secret: "api-key-1", Index: "soc-alerts"}, "")
	alerts := testAlerts(2, 2)
	alerts[1].Kind, alerts[1].Confidence, alerts[1].Features = "rogue-device", "high", nil
	alerts[1].Incident = &contract.Incident{ID: "inc-1", Status: contract.IncidentOpened, Windows: 1}
	if err := s.Deliver(context.Background(), alerts); err != nil {
		t.Fatal(err)
	}
	r := c.reqs[0]
	if r.URL.Path != "/_bulk" || r.Header.Get("Content-Type") != "application/x-ndjson" || r.Header.Get("Authorization") != "ApiKey api-key-1" {
		t.Errorf("request %s %q %q", r.URL.Path, r.Header.Get("Content-Type"), r.Header.Get("Authorization"))
	}
	body := c.bodies[0]
	if !bytes.HasSuffix(body, []byte("\n")) {
		t.Error("bulk body does not end with a newline")
	}
	sc := bufio.NewScanner(bytes.NewReader(body))
	for i := 0; sc.Scan(); i++ {
		var action map[string]map[string]string
		if err := json.Unmarshal(sc.Bytes(), &action); err != nil {
			t.Fatalf("action line %d: %v", i, err)
		}
		if action["create"]["_index"] != "soc-alerts" || action["create"]["_id"] != alerts[i].ID {
			t.Errorf("action %v", action)
		}
		if !sc.Scan() {
			t.Fatal("action without a document")
		}
		var doc map[string]any
		if err := json.Unmarshal(sc.Bytes(), &doc); err != nil {
			t.Fatal(err)
		}
		ts, _ := doc["@timestamp"].(string)
		if _, err := time.Parse(time.RFC3339Nano, ts); err != nil {
			t.Errorf("@timestamp %v: %v", doc["@timestamp"], err)
		}
		event := doc["event"].(map[string]any)
		if event["kind"] != "alert" {
			t.Errorf("event.kind %v", event["kind"])
		}
		cats, ok := event["category"].([]any)
		if !ok || len(cats) == 0 {
			t.Errorf("event.category %v is not an array", event["category"])
		}
		allowed := map[string]bool{"intrusion_detection": true, "network": true, "file": true, "host": true, "malware": true}
		for _, c := range cats {
			if !allowed[c.(string)] {
				t.Errorf("event.category %v is not an ECS category value", c)
			}
		}
		if sev, ok := event["severity"].(float64); !ok || sev != float64(int(sev)) || sev <= 0 {
			t.Errorf("event.severity %v is not a positive integer (ECS: long)", event["severity"])
		}
		if rs, ok := event["risk_score"].(float64); !ok || rs < 0 || rs > 100 {
			t.Errorf("event.risk_score %v not in [0,100] (ECS: float)", event["risk_score"])
		}
		if doc["host"].(map[string]any)["name"] != alerts[i].DeviceID {
			t.Errorf("host.name %v", doc["host"])
		}
		if doc["rule"].(map[string]any)["name"] != alerts[i].Kind || doc["observer"].(map[string]any)["vendor"] != "chainwatch" {
			t.Errorf("rule %v observer %v", doc["rule"], doc["observer"])
		}
		if cw := doc["chainwatch"].(map[string]any); cw["ledger_tx_id"] != alerts[i].TxID {
			t.Errorf("chainwatch.ledger_tx_id %v", cw["ledger_tx_id"])
		}
	}

	c.answer = func([]byte) (int, string) {
		return http.StatusOK, `{"errors":true,"items":[{"create":{"status":409,"error":{"type":"version_conflict_engine_exception"}}},{"create":{"status":201}}]}`
	}
	if err := s.Deliver(context.Background(), alerts); err != nil {
		t.Errorf("a redelivery answered 409 is not delivered: %v", err)
	}
	c.answer = func([]byte) (int, string) {
		return http.StatusOK, `{"errors":true,"items":[{"create":{"status":400,"error":{"type":"mapper_parsing_exception"}}},{"create":{"status":201}}]}`
	}
	var perm *sinks.PermanentError
	if err := s.Deliver(context.Background(), alerts); err == nil || !asPermanent(err, &perm) {
		t.Errorf("a mapping error is not permanent: %v", err)
	}
	c.answer = func([]byte) (int, string) {
		return http.StatusOK, `{"errors":true,"items":[{"create":{"status":429,"error":{"type":"es_rejected_execution_exception"}}}]}`
	}
	if err := s.Deliver(context.Background(), alerts[:1]); err == nil || asPermanent(err, &perm) {
		t.Errorf("a rejected (429) item is not retried: %v", err)
	}
}

func asPermanent(err error, p **sinks.PermanentError) bool {
	for e := err; e != nil; {
		if pe, ok := e.(*sinks.PermanentError); ok {
			*p = pe
			return true
		}
		u, ok := e.(interface{ Unwrap() error })
		if !ok {
			return false
		}
		e = u.Unwrap()
	}
	return false
}

func TestFiltersBySeverityAndKind(t *testing.T) {
	addr := freeAddr(t)
	c := &capture{}
	serveOn(t, addr, c)
	s := newSink(t, sinks.WebhookConfig{Name: "pager", URL: "http://" + addr, Format: "alertmanager", MinSeverity: "high", Kinds: []string{"behaviour", "integrity"}}, "")
	alerts := testAlerts(4, 4)
	alerts[0].Confidence = "low"    // behaviour, low: below the minimum
	alerts[1].Kind = "rogue-device" // high, but not a listed kind
	alerts[2].Kind = "integrity"    // critical, listed
	alerts[3].Confidence = "high"   // behaviour, high, listed
	if err := s.Deliver(context.Background(), alerts); err != nil {
		t.Fatal(err)
	}
	var got []struct {
		Labels map[string]string `json:"labels"`
	}
	if err := json.Unmarshal(c.bodies[0], &got); err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for _, a := range got {
		kinds = append(kinds, a.Labels["kind"]+"/"+a.Labels["severity"])
	}
	if strings.Join(kinds, ",") != "integrity/critical,behaviour/high" {
		t.Errorf("sent %v, want integrity/critical and behaviour/high", kinds)
	}
}

func TestWebhookConfigErrorsNameTheKey(t *testing.T) {
	for _, tc := range []struct {
		c    sinks.WebhookConfig
		want string
	}{
		{sinks.WebhookConfig{Name: "Bad Name", URL: "http://x", Format: "json", Secret: "k"}, "name"},
		{sinks.WebhookConfig{Name: "kafka", URL: "http://x", Format: "json", Secret: "k"}, "name"},
		{sinks.WebhookConfig{Name: "a", URL: "not a url", Format: "json", Secret: "k"}, "url"},
		{sinks.WebhookConfig{Name: "a", URL: "http://x", Format: "xml"}, "format"},
		{sinks.WebhookConfig{Name: "a", URL: "http://x", Format: "json"}, "secret"},
		{sinks.WebhookConfig{Name: "a", URL: "http://x", Format: "splunk-hec"}, "secret"},
		{sinks.WebhookConfig{Name: "a", URL: "http://x", Format: "cef-syslog"}, "url"},
		{sinks.WebhookConfig{Name: "a", URL: "tcp://x:514", Format: "json", Secret: "k"}, "url"},
		{sinks.WebhookConfig{Name: "a", URL: "http://x", Format: "ecs", MinSeverity: "urgent"}, "min_severity"},
		{sinks.WebhookConfig{Name: "a", URL: "http://x", Format: "json", Secret: "${NO_SUCH_VAR_CW}"}, "NO_SUCH_VAR_CW"},
		{sinks.WebhookConfig{Name: "a", URL: "http://x", Format: "json", SecretFile: "/nonexistent/secret"}, "secret_file"},
	} {
		_, err := sinks.New(tc.c, nil, nil)
		if err == nil || !strings.HasPrefix(err.Error(), tc.want) && !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: error %v does not name %s", tc.c, err, tc.want)
		}
	}
	if _, err := sinks.NewLinker("{{.NoSuchField}}"); err == nil {
		t.Error("a link template naming no alert field was accepted")
	}
}

// TestWebhookOverTLSWithItsOwnCA: an https receiver whose certificate only
// the configured CA vouches for is reached with tls.ca_file; without it
// the delivery fails with a certificate error that is retried, so the
// alert stays queued until the operator fixes the configuration.
func TestWebhookOverTLSWithItsOwnCA(t *testing.T) {
	r := newReceiver()
	srv := httptest.NewTLSServer(r)
	defer srv.Close()
	ca := filepath.Join(t.TempDir(), "ca.pem")
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	if err := os.WriteFile(ca, pemBytes, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := sinks.WebhookConfig{Name: "siem", URL: srv.URL + "/hook", Format: "json", Secret: hookSecret, TLS: sinks.WebhookTLS{CAFile: ca}}
	s := newSink(t, cfg, "")
	if err := s.Deliver(context.Background(), testAlerts(1, 1)); err != nil {
		t.Fatalf("with the CA: %v", err)
	}
	cfg.TLS = sinks.WebhookTLS{}
	err := newSink(t, cfg, "").Deliver(context.Background(), testAlerts(1, 1))
	var perm *sinks.PermanentError
	if err == nil || asPermanent(err, &perm) || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("without the CA: %v, want a retried certificate error", err)
	}
	if len(r.received()) != 1 {
		t.Errorf("receiver got %d alerts, want 1", len(r.received()))
	}
}
