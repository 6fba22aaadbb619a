package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
)

// debianProgram finds a program from a Debian package. In CI (CI set) a
// missing one fails the test, since .ci/run installs it; elsewhere the
// test skips and names the package.
func debianProgram(t *testing.T, name, pkg string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("%s is missing; .ci/run installs it with: apt-get install %s", name, pkg)
	}
	t.Skipf("%s is not installed (apt-get install %s)", name, pkg)
	return ""
}

// panelQuery is one PromQL expression of a dashboard panel.
type panelQuery struct {
	dashboard, panel, expr string
}

// dashboardQueries reads every target expression of every panel (rows'
// panels included) and every query variable of the checked-in dashboards.
func dashboardQueries(t *testing.T, dir string) (queries []panelQuery, variables []panelQuery) {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(dir, "*.json"))
	if len(files) < 5 {
		t.Fatalf("%d dashboards in %s, want the 5 of the operations issue", len(files), dir)
	}
	type panel struct {
		Title   string `json:"title"`
		Targets []struct {
			Expr string `json:"expr"`
		} `json:"targets"`
		Panels []json.RawMessage `json:"panels"`
	}
	var walk func(name string, raw json.RawMessage)
	walk = func(name string, raw json.RawMessage) {
		var p panel
		if err := json.Unmarshal(raw, &p); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		for _, tg := range p.Targets {
			queries = append(queries, panelQuery{name, p.Title, tg.Expr})
		}
		for _, sub := range p.Panels {
			walk(name, sub)
		}
	}
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var d struct {
			Panels     []json.RawMessage `json:"panels"`
			Templating struct {
				List []struct {
					Type, Name string
					Query      any `json:"query"`
				} `json:"list"`
			} `json:"templating"`
		}
		if err := json.Unmarshal(raw, &d); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		for _, p := range d.Panels {
			walk(filepath.Base(f), p)
		}
		for _, v := range d.Templating.List {
			if q, ok := v.Query.(string); ok && v.Type == "query" {
				variables = append(variables, panelQuery{filepath.Base(f), "$" + v.Name, q})
			}
		}
	}
	return queries, variables
}

// promQuery runs an instant query and returns how many series it gave.
func promQuery(base, expr string) (int, error) {
	resp, err := http.Get(base + "/api/v1/query?query=" + url.QueryEscape(expr))
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var r struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			Result []json.RawMessage `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return 0, err
	}
	if r.Status != "success" {
		return 0, fmt.Errorf("%s", r.Error)
	}
	return len(r.Data.Result), nil
}

// labelValues returns a label's values over the series matching match.
func labelValues(base, label, match string) ([]string, error) {
	resp, err := http.Get(base + "/api/v1/label/" + label + "/values?match[]=" + url.QueryEscape(match))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var r struct {
		Data []string `json:"data"`
	}
	return r.Data, json.NewDecoder(resp.Body).Decode(&r)
}

var labelValuesQuery = regexp.MustCompile(`^label_values\((.+),\s*(\w+)\)$`)

// TestEveryDashboardPanelReturnsSeries starts the service on simulated
// traffic and a real Prometheus scraping it on loopback with the recording
// and alerting rules of deploy/prometheus loaded, then runs every PromQL
// expression of every panel of the checked-in dashboards (template
// variables replaced by real values) against Prometheus's HTTP API: each
// must succeed and return at least one series.
func TestEveryDashboardPanelReturnsSeries(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the service and Prometheus")
	}
	if raceDetector {
		t.Skip("too slow under the race detector")
	}
	prom := debianProgram(t, "prometheus", "prometheus")
	root, _ := filepath.Abs("../..")
	queries, variables := dashboardQueries(t, filepath.Join(root, "dashboards"))

	// The service, with an alert sink that is down (its queue and retry
	// series) and the API for a verdict.
	dir := t.TempDir()
	httpAddr, kafkaAddr := freeAddr(t), freeAddr(t)
	env := compressedDay(24)
	env["CHAINWATCH_HTTP_LISTEN"] = httpAddr
	env["CHAINWATCH_KAFKA_EMBEDDED_LISTEN"] = kafkaAddr
	env["CHAINWATCH_AUDIT_INTERVAL"] = "1s"
	env["CHAINWATCH_DATA_DIR"] = dir
	conf := filepath.Join(dir, "chainwatch.yaml")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf("alerts:\n  max_backoff: 1s\n  webhooks:\n    - name: siem\n      url: http://%s/hook\n      format: json\n      secret: test-key\n", freeAddr(t))), 0o600); err != nil {
		t.Fatal(err)
	}
	var environ []string
	for k, v := range env {
		environ = append(environ, k+"="+v)
	}
	cfg, err := LoadConfig(conf, environ)
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := serveInBackground(t, cfg)
	defer stop()

	// Prometheus, scraping every second, the rules evaluated every second.
	promDir := filepath.Join(dir, "prometheus")
	if err := os.MkdirAll(promDir, 0o755); err != nil {
		t.Fatal(err)
	}
	var ruleFiles []string
	rules, _ := filepath.Glob(filepath.Join(root, "deploy/prometheus/rules/*.yml"))
	for _, r := range rules {
		raw, err := os.ReadFile(r)
		if err != nil {
			t.Fatal(err)
		}
		out := filepath.Join(promDir, filepath.Base(r))
		if err := os.WriteFile(out, []byte(regexp.MustCompile(`interval: \d+[smh]`).ReplaceAllString(string(raw), "interval: 1s")), 0o644); err != nil {
			t.Fatal(err)
		}
		ruleFiles = append(ruleFiles, fmt.Sprintf("%q", out))
	}
	promConf := fmt.Sprintf("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files: [%s]\nscrape_configs:\n  - job_name: chainwatch\n    static_configs:\n      - targets: [%q]\n",
		strings.Join(ruleFiles, ", "), httpAddr)
	if err := os.WriteFile(filepath.Join(promDir, "prometheus.yml"), []byte(promConf), 0o644); err != nil {
		t.Fatal(err)
	}
	promAddr := freeAddr(t)
	pctx, pstop := context.WithCancel(context.Background())
	cmd := exec.CommandContext(pctx, prom, "--config.file="+filepath.Join(promDir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(promDir, "data"), "--web.listen-address="+promAddr)
	logFile, _ := os.Create(filepath.Join(promDir, "prometheus.log"))
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		pstop()
		t.Fatal(err)
	}
	defer func() {
		pstop()
		_ = cmd.Wait()
	}()
	base := "http://" + promAddr

	// Traffic the panels need beyond the simulator's: a malformed record
	// (dead letters) and an analyst's verdict (verdict mix).
	token, err := apiToken(cfg.Alerts.API.TokenFile)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(2 * time.Minute)
	var verdictSent, badRecordSent bool
	for !verdictSent || !badRecordSent {
		if time.Now().After(deadline) {
			t.Fatalf("no alert to give a verdict on, or the broker never took the bad record (verdict %v, bad record %v)", verdictSent, badRecordSent)
		}
		time.Sleep(time.Second)
		if !badRecordSent {
			w := &kafka.Writer{Addr: kafka.TCP(kafkaAddr), Topic: cfg.Topics.Flows, RequiredAcks: kafka.RequireAll}
			badRecordSent = w.WriteMessages(ctx, kafka.Message{Key: []byte("meter-0001"), Value: []byte("{not json")}) == nil
			w.Close()
		}
		if !verdictSent {
			verdictSent = sendVerdict(t, "http://"+httpAddr, string(token))
		}
	}

	t.Log("a malformed record produced and a verdict given")

	// Every expression, until all return series (rates need a few
	// scrapes, drift a thousand windows per profile).
	subst := func(expr, device string) string {
		r := strings.NewReplacer("$__rate_interval", "30s", "$__range", "1h", "$device", device)
		return r.Replace(expr)
	}
	var failing []string
	for time.Now().Before(deadline.Add(time.Minute)) {
		failing = failing[:0]
		devices := map[string]string{}
		for _, v := range variables {
			m := labelValuesQuery.FindStringSubmatch(v.expr)
			if m == nil {
				failing = append(failing, fmt.Sprintf("%s %s: not a label_values query: %s", v.dashboard, v.panel, v.expr))
				continue
			}
			vals, err := labelValues(base, m[2], m[1])
			if err != nil || len(vals) == 0 {
				failing = append(failing, fmt.Sprintf("%s variable %s: %s: no values (%v)", v.dashboard, v.panel, v.expr, err))
				continue
			}
			devices[v.dashboard] = vals[0]
		}
		for _, q := range queries {
			expr := subst(q.expr, devices[q.dashboard])
			n, err := promQuery(base, expr)
			if err != nil || n == 0 {
				failing = append(failing, fmt.Sprintf("%s / %s: %s: %d series (%v)", q.dashboard, q.panel, expr, n, err))
			}
		}
		if len(failing) == 0 {
			t.Logf("%d panel expressions and %d variables, each with series", len(queries), len(variables))
			return
		}
		time.Sleep(2 * time.Second)
	}
	logs, _ := os.ReadFile(filepath.Join(promDir, "prometheus.log"))
	t.Logf("prometheus log (tail):\n%s", tail(logs, 3000))
	t.Fatalf("%d expressions fail:\n%s", len(failing), strings.Join(failing, "\n"))
}

// sendVerdict gives a verdict on the first alert the API lists.
func sendVerdict(t *testing.T, base, token string) bool {
	t.Helper()
	req, _ := http.NewRequest("GET", base+"/api/v1/alerts?limit=1", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false
	}
	var alerts []struct {
		ID string `json:"id"`
	}
	err = json.NewDecoder(resp.Body).Decode(&alerts)
	resp.Body.Close()
	if err != nil || len(alerts) == 0 {
		return false
	}
	req, _ = http.NewRequest("POST", base+"/api/v1/alerts/"+alerts[0].ID+"/verdict", strings.NewReader(`{"verdict":"true-positive","note":"dashboard test"}`))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}
