package sinks_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chainwatch/chainwatch/ledgerclient/contract"
	"github.com/chainwatch/chainwatch/pipeline/sinks"
)

// program finds a Debian-packaged program an integration test runs. In
// CI (CI set) a missing one fails the test, since .ci/run installs it;
// elsewhere the test skips and names the package.
func program(t *testing.T, name, pkg string) string {
	t.Helper()
	for _, p := range []string{name, "/usr/sbin/" + name, "/usr/bin/" + name} {
		if path, err := exec.LookPath(p); err == nil {
			return path
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("%s is missing; .ci/run installs it with: apt-get install %s", name, pkg)
	}
	t.Skipf("%s is not installed (apt-get install %s)", name, pkg)
	return ""
}

// startDaemon runs a program until the test ends, logging its output on
// failure.
func startDaemon(t *testing.T, path string, args ...string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, path, args...)
	out, err := os.Create(filepath.Join(t.TempDir(), "out.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	t.Cleanup(func() {
		cancel()
		cmd.Wait()
		if t.Failed() {
			b, _ := os.ReadFile(out.Name())
			t.Logf("%s output:\n%s", filepath.Base(path), b)
		}
	})
}

func waitListening(t *testing.T, addr string) {
	t.Helper()
	waitFor(t, addr+" to listen", 20*time.Second, func() bool {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
}

// TestCEFOverSyslogReachesRsyslog sends alerts to a real rsyslog
// listening on loopback TCP (imtcp, octet-counted framing) and parses the
// CEF lines it wrote back into the alerts' fields.
func TestCEFOverSyslogReachesRsyslog(t *testing.T) {
	rsyslogd := program(t, "rsyslogd", "rsyslog")
	dir := t.TempDir()
	addr := freeAddr(t)
	_, port, _ := net.SplitHostPort(addr)
	conf := fmt.Sprintf(`global(workDirectory=%q)
module(load="imtcp")
template(name="cefonly" type="string" string="%%msg%%\n")
ruleset(name="chainwatch") {
  action(type="omfile" file=%q template="cefonly" flushOnTXEnd="on" asyncWriting="off")
}
input(type="imtcp" address="127.0.0.1" port=%q ruleset="chainwatch")
`, dir, filepath.Join(dir, "cef.log"), port)
	if err := os.WriteFile(filepath.Join(dir, "rsyslog.conf"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	startDaemon(t, rsyslogd, "-n", "-f", filepath.Join(dir, "rsyslog.conf"), "-i", filepath.Join(dir, "rsyslog.pid"))
	waitListening(t, addr)

	s := newSink(t, sinks.WebhookConfig{Name: "arcsight", URL: "tcp://" + addr, Format: "cef-syslog"}, "https://grafana.example/d/device?var-device={{.DeviceID}}&from={{.WindowStart.UnixMilli}}")
	alerts := testAlerts(5, 5)
	alerts[1].Evidence.Detail = `pipes | and equals = and back\slash`
	alerts[2].Kind, alerts[2].Confidence, alerts[2].Features = "integrity", "high", nil
	alerts[2].Evidence.Detail = "Merkle root mismatch\nrange 0-4999"
	alerts[3].Incident = &contract.Incident{ID: "inc-9", Status: contract.IncidentOpened, Windows: 2}
	if err := s.Deliver(context.Background(), alerts); err != nil {
		t.Fatal(err)
	}
	defer s.(interface{ Close() error }).Close()
	var lines []string
	waitFor(t, "rsyslog to write every line", 20*time.Second, func() bool {
		raw, _ := os.ReadFile(filepath.Join(dir, "cef.log"))
		lines = strings.Split(strings.TrimSpace(string(raw)), "\n")
		return len(lines) == len(alerts) && lines[0] != ""
	})
	for i, line := range lines {
		a := alerts[i]
		header, ext, err := parseCEF(strings.TrimSpace(line))
		if err != nil {
			t.Fatalf("line %d %q: %v", i, line, err)
		}
		if header[0] != "CEF:0" || header[1] != "chainwatch" || header[4] != a.Kind || header[5] != sinks.Summary(a) {
			t.Errorf("line %d header %q", i, header)
		}
		if sev, _ := strconv.Atoi(header[6]); sev < 0 || sev > 10 {
			t.Errorf("line %d severity %q", i, header[6])
		}
		want := map[string]string{
			"externalId": a.ID, "dvchost": a.DeviceID, "cs1": a.Profile, "cs4": a.TxID, "cs5": a.ModelHash,
			"rt": strconv.FormatInt(a.WindowEnd.UnixMilli(), 10), "cs6": strings.Join(a.Evidence.AnchorIDs, ","),
			"request": "https://grafana.example/d/device?var-device=" + a.DeviceID + "&from=" + strconv.FormatInt(a.WindowStart.UnixMilli(), 10),
			"msg":     a.Evidence.Detail, "cs3": sinks.TopFeatures(a), "cat": sinks.Severity(a),
		}
		for k, v := range want {
			if ext[k] != v {
				t.Errorf("line %d: %s=%q, want %q", i, k, ext[k], v)
			}
		}
		if score, _ := strconv.ParseFloat(ext["cfp1"], 64); score != a.Score {
			t.Errorf("line %d: score %q", i, ext["cfp1"])
		}
		if a.Incident != nil && ext["flexString1"] != "inc-9 opened" {
			t.Errorf("line %d: incident %q", i, ext["flexString1"])
		}
	}
}

// parseCEF splits a CEF line as a SIEM's parser does: seven header fields
// separated by unescaped pipes, then key=value extensions whose values
// run to the next unescaped " key=".
func parseCEF(line string) ([]string, map[string]string, error) {
	i := strings.Index(line, "CEF:")
	if i < 0 {
		return nil, nil, fmt.Errorf("no CEF")
	}
	line = line[i:]
	var header []string
	var cur strings.Builder
	pos := 0
	for ; pos < len(line) && len(header) < 7; pos++ {
		switch c := line[pos]; {
		case c == '\\' && pos+1 < len(line):
			pos++
			cur.WriteByte(line[pos])
		case c == '|':
			header = append(header, cur.String())
			cur.Reset()
		default:
			cur.WriteByte(c)
		}
	}
	if len(header) != 7 {
		return nil, nil, fmt.Errorf("%d header fields", len(header))
	}
	ext := map[string]string{}
	rest := line[pos:]
	var key string
	cur.Reset()
	for j := 0; j < len(rest); j++ {
		c := rest[j]
		switch {
		case c == '\\' && j+1 < len(rest):
			j++
			switch rest[j] {
			case 'n':
				cur.WriteByte('\n')
			case 'r':
				cur.WriteByte('\r')
			default:
				cur.WriteByte(rest[j])
			}
		case c == '=':
			// The text since the last space is the next key.
			s := cur.String()
			k := strings.LastIndexByte(s, ' ')
			if key != "" {
				ext[key] = s[:max(k, 0)]
			}
			key = s[k+1:]
			cur.Reset()
		default:
			cur.WriteByte(c)
		}
	}
	if key != "" {
		ext[key] = cur.String()
	}
	return header, ext, nil
}

// TestAlertmanagerRoutesChainwatchAlerts posts alerts to a real Prometheus
// Alertmanager, whose alertmanager.yml routes them to a loopback webhook
// receiver; the grouped notification carries the labels and annotations.
func TestAlertmanagerRoutesChainwatchAlerts(t *testing.T) {
	am := program(t, "prometheus-alertmanager", "prometheus-alertmanager")
	dir := t.TempDir()
	hookAddr, amAddr := freeAddr(t), freeAddr(t)
	notifications := make(chan []byte, 16)
	serveOn(t, hookAddr, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var b json.RawMessage
		if err := json.NewDecoder(r.Body).Decode(&b); err == nil {
			notifications <- b
		}
	}))
	conf := fmt.Sprintf(`route:
  receiver: soc
  group_by: [alertname, device]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
  routes:
    - receiver: soc
      matchers: ['service="chainwatch"', 'severity=~"high|critical"']
receivers:
  - name: soc
    webhook_configs:
      - url: http://%s/notify
        send_resolved: true
`, hookAddr)
	if err := os.WriteFile(filepath.Join(dir, "alertmanager.yml"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	startDaemon(t, am, "--config.file="+filepath.Join(dir, "alertmanager.yml"), "--storage.path="+dir,
		"--web.listen-address="+amAddr, "--cluster.listen-address=")
	waitFor(t, "alertmanager to be ready", 30*time.Second, func() bool {
		resp, err := http.Get("http://" + amAddr + "/-/ready")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil && resp.StatusCode == http.StatusOK
	})

	s := newSink(t, sinks.WebhookConfig{Name: "alertmanager", URL: "http://" + amAddr, Format: "alertmanager"}, "https://grafana.example/d/device?var-device={{.DeviceID}}")
	alerts := testAlerts(1, 1)
	alerts[0].WindowStart, alerts[0].WindowEnd = time.Now().Add(-2*time.Minute), time.Now().Add(-time.Minute)
	alerts[0].Incident = &contract.Incident{ID: "inc-42", Status: contract.IncidentOpened, Windows: 2}
	if err := s.Deliver(context.Background(), alerts); err != nil {
		t.Fatal(err)
	}
	var n struct {
		Receiver string `json:"receiver"`
		Status   string `json:"status"`
		Alerts   []struct {
			Labels      map[string]string `json:"labels"`
			Annotations map[string]string `json:"annotations"`
		} `json:"alerts"`
		GroupLabels map[string]string `json:"groupLabels"`
	}
	select {
	case raw := <-notifications:
		if err := json.Unmarshal(raw, &n); err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no notification from alertmanager")
	}
	if n.Receiver != "soc" || n.Status != "firing" || len(n.Alerts) != 1 || n.GroupLabels["device"] != alerts[0].DeviceID {
		t.Fatalf("notification %+v", n)
	}
	a := n.Alerts[0]
	for k, v := range map[string]string{"alertname": "chainwatch_behaviour", "kind": "behaviour", "severity": "high",
		"profile": "smart-meter", "device": alerts[0].DeviceID, "incident": "inc-42", "service": "chainwatch"} {
		if a.Labels[k] != v {
			t.Errorf("label %s=%q, want %q", k, a.Labels[k], v)
		}
	}
	for k, v := range map[string]string{"summary": sinks.Summary(alerts[0]), "top_features": sinks.TopFeatures(alerts[0]),
		"ledger_tx_id": alerts[0].TxID, "alert_id": alerts[0].ID, "link": "https://grafana.example/d/device?var-device=" + alerts[0].DeviceID} {
		if a.Annotations[k] != v {
			t.Errorf("annotation %s=%q, want %q", k, a.Annotations[k], v)
		}
	}
}
