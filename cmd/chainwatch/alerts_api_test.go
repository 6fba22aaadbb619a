package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/chainwatch/chainwatch/ledgerclient"
	"github.com/chainwatch/chainwatch/ledgerclient/contract"
	"github.com/chainwatch/chainwatch/ledgerclient/embedded"
)

// TestAlertsAPIRecordsVerdictsOnTheLedger drives the alerts API over real
// loopback HTTP as a SOAR playbook would: without a token (401), with a
// wrong one (403), a bad verdict (400), an unknown alert (404), then a
// verdict that lands on the ledger as the analyst once however often it
// is sent, and listing with filters.
func TestAlertsAPIRecordsVerdictsOnTheLedger(t *testing.T) {
	dir := t.TempDir()
	led, err := embedded.Open(filepath.Join(dir, "ledger"), embedded.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer led.Close()
	as := func(r contract.Role) *ledgerclient.Client {
		return ledgerclient.New(led.Client(embedded.LocalCaller(r)))
	}
	ctx := context.Background()
	t0 := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	for i, a := range []contract.Alert{
		{ID: "a1", Kind: "behaviour", DeviceID: "meter-1", WindowStart: t0, WindowEnd: t0.Add(time.Minute), Score: 0.9, Confidence: "high"},
		{ID: "a2", Kind: "rogue-device", DeviceID: "cam-7", WindowStart: t0.Add(time.Hour), WindowEnd: t0.Add(61 * time.Minute), Score: 1, Confidence: "high"},
	} {
		if _, err := as(contract.RoleService).RecordAlert(ctx, a); err != nil {
			t.Fatalf("alert %d: %v", i, err)
		}
	}
	tokenPath := filepath.Join(dir, "api.token")
	token, err := apiToken(tokenPath)
	if err != nil {
		t.Fatal(err)
	}
	if info, err := os.Stat(tokenPath); err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("token file %v %v, want mode 0600", info.Mode(), err)
	}
	if again, _ := apiToken(tokenPath); string(again) != string(token) {
		t.Fatal("the token changed across starts")
	}
	reg := prometheus.NewRegistry()
	api := newAlertsAPI(as(contract.RoleAnalyst), token, reg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	mux := http.NewServeMux()
	api.register(mux)
	srv := httptest.NewServer(mux)
	defer srv.Close()

	call := func(method, path, tok, body string) (int, []byte) {
		t.Helper()
		req, _ := http.NewRequest(method, srv.URL+path, bytes.NewBufferString(body))
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	verdict := `{"verdict":"false-positive","note":"firmware update window"}`
	for _, tc := range []struct {
		name, method, path, tok, body string
		want                          int
	}{
		{"no token", "POST", "/api/v1/alerts/a1/verdict", "", verdict, 401},
		{"wrong token", "POST", "/api/v1/alerts/a1/verdict", "not-the-token-0123456789", verdict, 403},
		{"list without token", "GET", "/api/v1/alerts", "", "", 401},
		{"bad verdict", "POST", "/api/v1/alerts/a1/verdict", string(token), `{"verdict":"maybe"}`, 400},
		{"not JSON", "POST", "/api/v1/alerts/a1/verdict", string(token), `verdict=benign`, 400},
		{"unknown alert", "POST", "/api/v1/alerts/nope/verdict", string(token), verdict, 404},
		{"bad since", "GET", "/api/v1/alerts?since=yesterday", string(token), "", 400},
	} {
		if code, body := call(tc.method, tc.path, tc.tok, tc.body); code != tc.want {
			t.Errorf("%s: %d %s, want %d", tc.name, code, body, tc.want)
		}
	}
	if got, _ := as(contract.RoleAnalyst).GetAlert(ctx, "a1"); got.Verdict != nil {
		t.Fatalf("a refused request changed the ledger: %+v", got.Verdict)
	}
	for range 3 { // a playbook retrying
		code, body := call("POST", "/api/v1/alerts/a1/verdict", string(token), verdict)
		if code != 200 {
			t.Fatalf("verdict: %d %s", code, body)
		}
	}
	got, err := as(contract.RoleAnalyst).GetAlert(ctx, "a1")
	if err != nil || got.Verdict == nil || got.Verdict.Value != "false-positive" || got.Verdict.Note != "firmware update window" {
		t.Fatalf("ledger holds %+v %v", got.Verdict, err)
	}
	hist, err := as(contract.RoleAnalyst).AlertHistory(ctx, "a1")
	if err != nil || len(hist) != 2 {
		t.Errorf("alert history has %d versions (%v), want the recording and one verdict", len(hist), err)
	}
	if n := testutil.ToFloat64(api.verdicts.WithLabelValues("false-positive", "behaviour")); n != 1 {
		t.Errorf("verdict counter %v, want 1", n)
	}
	for q, want := range map[string][]string{
		"":                            {"a1", "a2"},
		"?device=cam-7":               {"a2"},
		"?kind=behaviour":             {"a1"},
		"?since=2026-11-25T10:30:00Z": {"a2"},
		"?limit=1":                    {"a1"},
	} {
		code, body := call("GET", "/api/v1/alerts"+q, string(token), "")
		var alerts []contract.Alert
		if code != 200 || json.Unmarshal(body, &alerts) != nil {
			t.Fatalf("list %s: %d %s", q, code, body)
		}
		var ids []string
		for _, a := range alerts {
			ids = append(ids, a.ID)
		}
		if len(ids) != len(want) || len(ids) > 0 && ids[0] != want[0] {
			t.Errorf("list %q: %v, want %v", q, ids, want)
		}
	}
}

// TestWebhookConfig: `config print` shows the webhooks without their
// secrets, and a bad entry stops start-up naming its key.
func TestWebhookConfig(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	if err := os.WriteFile(good, []byte(`alerts:
  link_template: https://grafana.example/d/chainwatch-device?var-device={{.DeviceID}}
  webhooks:
    - name: siem
      url: https://siem.example/hook
      format: json
      secret: hook-literal-secret-123
      min_severity: medium
    - name: splunk
      url: https://splunk.example:8088/services/collector/event
      format: splunk-hec
      secret: ${SPLUNK_HEC_TOKEN}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := runCLI(t, "config", "print", "--config", good)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out, "hook-literal-secret-123") || !strings.Contains(out, "secret: <redacted>") || !strings.Contains(out, "format: splunk-hec") {
		t.Fatalf("config print:\n%s", out)
	}
	for body, want := range map[string]string{
		"alerts:\n  webhooks:\n    - name: siem\n      url: https://siem.example/hook\n      format: xml\n":                                                        "alerts.webhooks[0].format",
		"alerts:\n  webhooks:\n    - name: siem\n      url: https://siem.example/hook\n      format: json\n":                                                       "alerts.webhooks[0].secret",
		"alerts:\n  webhooks:\n    - name: a\n      url: tcp://x:514\n      format: cef-syslog\n    - name: a\n      url: tcp://y:514\n      format: cef-syslog\n": "alerts.webhooks[1].name",
		"alerts:\n  link_template: '{{.Nope}}'\n": "alerts.link_template",
	} {
		path := filepath.Join(dir, "bad.yaml")
		if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := LoadConfig(path, nil)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: error %v does not name %s", body, err, want)
		}
	}
	t.Setenv("CHAINWATCH_ALERTS_WEBHOOKS", "x")
	if _, err := LoadConfig("", os.Environ()); err == nil || !strings.Contains(err.Error(), "configuration file") {
		t.Errorf("a list of webhooks from the environment: %v", err)
	}
}
