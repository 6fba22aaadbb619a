package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

func TestDefaultsAndEnvironmentOverrides(t *testing.T) {
	c, err := LoadConfig("", []string{
		"CHAINWATCH_KAFKA_BROKERS=k1:9092, k2:9092",
		"CHAINWATCH_DETECTOR_WARMUP=2h",
		"CHAINWATCH_SIMULATOR_ENABLED=true",
		"CHAINWATCH_DETECTOR_FALSE_ALERTS_PER_1000_DEVICE_HOURS=0.5",
		"UNRELATED=1",
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Kafka.Brokers; len(got) != 2 || got[1] != "k2:9092" {
		t.Errorf("brokers = %v", got)
	}
	if c.Detector.Warmup != 2*time.Hour || c.Detector.FalseAlertsPer1000DeviceHours != 0.5 || !*c.Simulator.Enabled {
		t.Errorf("overrides not applied: %+v %+v", c.Detector, c.Simulator)
	}
	if c.Window.Size != time.Minute || c.HTTP.Listen != "127.0.0.1:9477" || c.DataDir != "./chainwatch-data" {
		t.Errorf("defaults not applied: window %s http %s data %s", c.Window.Size, c.HTTP.Listen, c.DataDir)
	}
	d, _ := LoadConfig("", nil)
	if !*d.Simulator.Enabled {
		t.Error("simulator should default on with the embedded broker")
	}
}

func TestBadConfigurationNamesTheKey(t *testing.T) {
	dir := t.TempDir()
	write := func(body string) string {
		p := filepath.Join(dir, "c.yaml")
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cases := []struct {
		file string
		env  []string
		want string
	}{
		{file: "window:\n  size: -5s\n", want: "window.size"},
		{file: "anchor:\n  batch_records: 100000\n", want: "anchor.batch_records: at most 31250"},
		{file: "kafka:\n  brokers: [nohost]\n", want: "kafka.brokers[0]"},
		{file: "detector:\n  false_alerts_per_1000_device_hours: -1\n", want: "detector.false_alerts_per_1000_device_hours"},
		{file: "detector:\n  incident:\n    k: 5\n", want: "detector.incident.k"},
		{file: "detector:\n  incident:\n    fleet_min_devices: 1\n", want: "detector.incident.fleet_min_devices"},
		{file: "topics:\n  flows: 'bad topic'\n", want: "topics.flows"},
		{file: "ledger:\n  backend: oracle\n", want: "ledger.backend"},
		{file: "windw:\n  size: 1m\n", want: "windw"},
		{env: []string{"CHAINWATCH_WINDOW_SIZE=soon"}, want: "CHAINWATCH_WINDOW_SIZE (window.size)"},
		{env: []string{"CHAINWATCH_KAFKA_PARTITIONS=four"}, want: "CHAINWATCH_KAFKA_PARTITIONS (kafka.partitions)"},
		{env: []string{"CHAINWATCH_WINDOWSIZE=1m"}, want: "CHAINWATCH_WINDOWSIZE names no configuration key"},
	}
	for _, c := range cases {
		path := ""
		if c.file != "" {
			path = write(c.file)
		}
		_, err := LoadConfig(path, c.env)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("config %q env %v: err = %v, want it to name %q", c.file, c.env, err, c.want)
		}
	}
}

func TestConfigPrintRoundTrips(t *testing.T) {
	c, err := LoadConfig("", []string{"CHAINWATCH_WINDOW_SIZE=30s"})
	if err != nil {
		t.Fatal(err)
	}
	out, err := c.printable()
	if err != nil {
		t.Fatal(err)
	}
	text := string(out)
	for _, want := range []string{"size: 30s # CHAINWATCH_WINDOW_SIZE", "warmup: 24h0m0s", "brokers: [] # CHAINWATCH_KAFKA_BROKERS",
		"  fabric:\n    channel: chainwatch # CHAINWATCH_LEDGER_FABRIC_CHANNEL"} {
		if !strings.Contains(text, want) {
			t.Errorf("config print lacks %q:\n%s", want, text)
		}
	}
	// What config print shows is itself a valid configuration file.
	p := filepath.Join(t.TempDir(), "printed.yaml")
	if err := os.WriteFile(p, out, 0o644); err != nil {
		t.Fatal(err)
	}
	back, err := LoadConfig(p, nil)
	if err != nil {
		t.Fatalf("printed configuration does not load: %v", err)
	}
	if back.Window.Size != 30*time.Second {
		t.Errorf("round trip lost window.size: %s", back.Window.Size)
	}
}

// TestDeployedConfigurationsLoad: the chainwatch.yaml of the Kubernetes
// ConfigMap and of the compose stack are valid configurations.
func TestDeployedConfigurationsLoad(t *testing.T) {
	raw, err := os.ReadFile("../../deploy/kubernetes/chainwatch.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var cm struct {
		Kind string            `yaml:"kind"`
		Data map[string]string `yaml:"data"`
	}
	if err := yaml.Unmarshal([]byte(strings.SplitN(string(raw), "\n---\n", 2)[0]), &cm); err != nil || cm.Kind != "ConfigMap" {
		t.Fatalf("first document is not the ConfigMap: %v", err)
	}
	// The Fabric identity files are mounted in the pod; here, empty
	// stand-ins at the same names (the configuration checks they exist).
	dir := t.TempDir()
	for _, f := range []string{"tls-ca.crt", "cert.pem", "key.pem"} {
		if err := os.WriteFile(filepath.Join(dir, f), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	k8s := filepath.Join(dir, "k8s.yaml")
	body := strings.ReplaceAll(cm.Data["chainwatch.yaml"], "/etc/chainwatch/fabric/", dir+"/")
	if err := os.WriteFile(k8s, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{k8s, "../../deploy/compose/chainwatch.yaml"} {
		if _, err := LoadConfig(path, nil); err != nil {
			t.Errorf("%s: %v", path, err)
		}
	}
}
