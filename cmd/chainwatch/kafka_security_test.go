package main

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chainwatch/chainwatch/pipeline/kafkaconn"
	"github.com/chainwatch/chainwatch/pipeline/kafkaconn/kafkatest"
)

// securedEnv is the environment that points chainwatch at a secured test
// cluster, as an operator would configure it: every kafka.tls and
// kafka.sasl key by its environment variable, the password from a file or
// from a variable of the operator's choosing.
func securedEnv(k *kafkatest.Cluster, passwordFromEnv bool) map[string]string {
	env := map[string]string{"CHAINWATCH_KAFKA_BROKERS": k.Addr}
	c := k.Config
	if c.TLS.On() {
		env["CHAINWATCH_KAFKA_TLS_ENABLED"] = "true"
		env["CHAINWATCH_KAFKA_TLS_CA_FILE"] = c.TLS.CAFile
		if c.TLS.CertFile != "" {
			env["CHAINWATCH_KAFKA_TLS_CERT_FILE"] = c.TLS.CertFile
			env["CHAINWATCH_KAFKA_TLS_KEY_FILE"] = c.TLS.KeyFile
		}
	}
	if c.SASL.On() {
		env["CHAINWATCH_KAFKA_SASL_MECHANISM"] = c.SASL.Mechanism
		env["CHAINWATCH_KAFKA_SASL_USERNAME"] = c.SASL.Username
		if passwordFromEnv {
			env["CHAINWATCH_KAFKA_SASL_PASSWORD_ENV"] = "TEST_KAFKA_PASSWORD"
			env["TEST_KAFKA_PASSWORD"] = k.Password
		} else {
			env["CHAINWATCH_KAFKA_SASL_PASSWORD_FILE"] = c.SASL.PasswordFile
		}
	}
	return env
}

// countRecords reads every partition of topic through cluster.
func countRecords(t *testing.T, ctx context.Context, cluster *kafkaconn.Cluster, topic string) int64 {
	t.Helper()
	conn, err := cluster.Dial(ctx)
	if err != nil {
		t.Fatal(err)
	}
	parts, err := conn.ReadPartitions(topic)
	conn.Close()
	if err != nil {
		t.Fatalf("partitions of %s: %v", topic, err)
	}
	var n int64
	for _, p := range parts {
		pc, err := cluster.DialLeader(ctx, topic, p.ID)
		if err != nil {
			t.Fatal(err)
		}
		first, last, err := pc.ReadOffsets()
		pc.Close()
		if err != nil {
			t.Fatal(err)
		}
		n += last - first
	}
	return n
}

// TestServiceRunsOnSecuredKafka runs the whole service — simulator,
// detection, telemetry, anchoring, audit, state store, alerts — against a
// kfake cluster that requires TLS with client certificates, and one that
// requires SASL/SCRAM; then replays the anchored history with the CLI over
// the same secured connection. The password shows in no log line.
func TestServiceRunsOnSecuredKafka(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the service")
	}
	if raceDetector {
		t.Skip("too slow under the race detector; the crash test runs the service under it")
	}
	for _, tc := range []struct {
		name string
		o    kafkatest.Options
		want string
	}{
		{"mutual TLS", kafkatest.Options{TLS: true, ClientCerts: true}, "TLS"},
		{"SASL SCRAM-SHA-512", kafkatest.Options{Mechanism: kafkaconn.MechanismSCRAMSHA512}, "SASL_PLAINTEXT/SCRAM-SHA-512"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k := kafkatest.Start(t, tc.o)
			dataDir := t.TempDir()
			env := compressedDay(24)
			for key, v := range securedEnv(k, true) {
				env[key] = v
			}
			env["CHAINWATCH_SIMULATOR_ENABLED"] = "true" // off by default against a real cluster
			env["CHAINWATCH_AUDIT_INTERVAL"] = "1s"
			env["CHAINWATCH_DATA_DIR"] = dataDir
			var environ []string
			for key, v := range env {
				t.Setenv(key, v)
				environ = append(environ, key+"="+v)
			}
			cfg, err := LoadConfig("", environ)
			if err != nil {
				t.Fatal(err)
			}
			var logs bytes.Buffer
			log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
			s, err := runService(context.Background(), cfg, 14*time.Second, log)
			if err != nil {
				t.Fatalf("run: %v\n%s", err, tail(logs.Bytes(), 3000))
			}
			t.Logf("summary: %+v", s)
			if s.RecordsConsumed == 0 || s.WindowsScored == 0 || s.AnchorsWritten == 0 || s.RecordsAudited == 0 {
				t.Errorf("nothing consumed, scored, anchored or audited: %+v", s)
			}
			if s.AlertsByKind["behaviour"] == 0 {
				t.Errorf("no behaviour alert for the injected attacks: %+v", s)
			}
			if !strings.Contains(logs.String(), "security="+tc.want) {
				t.Errorf("start-up does not log the connection's security %s", tc.want)
			}
			if strings.Contains(logs.String(), k.Password) {
				t.Fatal("the password appears in the log")
			}

			cluster, err := k.Config.Open(nil)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			if n := countRecords(t, ctx, cluster, cfg.Topics.Alerts); n < s.Alerts {
				t.Errorf("%d alerts on %s, the run raised %d", n, cfg.Topics.Alerts, s.Alerts)
			}
			if n := countRecords(t, ctx, cluster, cfg.Topics.State); n == 0 {
				t.Error("the state store wrote nothing")
			}
			// The CLI reaches the same cluster with the same settings.
			out, err := runCLI(t, "replay", "--verify", "--no-alerts")
			if err != nil {
				t.Fatalf("replay --verify over %s: %v\n%s", tc.want, err, out)
			}
			var last map[string]map[string]int
			lines := strings.Split(strings.TrimSpace(out), "\n")
			if err := json.Unmarshal([]byte(lines[len(lines)-1]), &last); err != nil || last["summary"]["verified"] == 0 {
				t.Errorf("replay verified nothing: %s (%v)", lines[len(lines)-1], err)
			}
		})
	}
}

// TestWrongKafkaCredentialsStopStartUp: a wrong password, a client without
// its certificate, an untrusted CA — the service does not start, and says
// which setting to fix, without the password.
func TestWrongKafkaCredentialsStopStartUp(t *testing.T) {
	if testing.Short() {
		t.Skip("starts brokers")
	}
	scram := kafkatest.Start(t, kafkatest.Options{Mechanism: kafkaconn.MechanismSCRAMSHA256})
	mtls := kafkatest.Start(t, kafkatest.Options{TLS: true, ClientCerts: true})
	for _, tc := range []struct {
		name   string
		k      *kafkatest.Cluster
		change map[string]string
		want   string
	}{
		{"wrong password", scram, map[string]string{"TEST_KAFKA_PASSWORD": "wrong-password-123"}, "kafka.sasl"},
		{"unknown user", scram, map[string]string{"CHAINWATCH_KAFKA_SASL_USERNAME": "mallory"}, "kafka.sasl"},
		{"password variable unset", scram, map[string]string{"CHAINWATCH_KAFKA_SASL_PASSWORD_ENV": "NO_SUCH_VARIABLE_CW"}, "kafka.sasl.password_env"},
		{"no client certificate", mtls, map[string]string{"CHAINWATCH_KAFKA_TLS_CERT_FILE": "", "CHAINWATCH_KAFKA_TLS_KEY_FILE": ""}, "kafka.tls"},
		{"untrusted CA", mtls, map[string]string{"CHAINWATCH_KAFKA_TLS_CA_FILE": filepath.Join(mtls.Dir, "other-ca.pem")}, "kafka.tls.ca_file"},
		{"missing CA file", mtls, map[string]string{"CHAINWATCH_KAFKA_TLS_CA_FILE": filepath.Join(mtls.Dir, "nope.pem")}, "kafka.tls.ca_file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := compressedDay(4)
			for key, v := range securedEnv(tc.k, true) {
				env[key] = v
			}
			for key, v := range tc.change {
				env[key] = v
			}
			env["CHAINWATCH_DATA_DIR"] = t.TempDir()
			var environ []string
			for key, v := range env {
				t.Setenv(key, v)
				environ = append(environ, key+"="+v)
			}
			var logs bytes.Buffer
			cfg, err := LoadConfig("", environ)
			if err == nil {
				log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
				ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
				defer cancel()
				_, err = runService(ctx, cfg, 0, log)
			}
			if err == nil {
				t.Fatal("the service started")
			}
			t.Logf("start-up error: %v", err)
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error does not name %s: %v", tc.want, err)
			}
			for _, out := range []string{err.Error(), logs.String()} {
				if strings.Contains(out, tc.k.Password) || strings.Contains(out, "wrong-password-123") {
					t.Fatalf("a password shows: %s", out)
				}
			}
		})
	}
}

// TestConfigPrintRedactsThePassword: `config print` shows where the
// password comes from, never the password.
func TestConfigPrintRedactsThePassword(t *testing.T) {
	t.Setenv("CHAINWATCH_KAFKA_BROKERS", "kafka-1.example:9093")
	t.Setenv("CHAINWATCH_KAFKA_SASL_MECHANISM", "SCRAM-SHA-256")
	t.Setenv("CHAINWATCH_KAFKA_SASL_USERNAME", "chainwatch")
	t.Setenv("CHAINWATCH_KAFKA_SASL_PASSWORD", "hunter2-very-secret")
	out, err := runCLI(t, "config", "print")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out, "hunter2-very-secret") {
		t.Fatalf("config print shows the password:\n%s", out)
	}
	if !strings.Contains(out, "password: <redacted>") || !strings.Contains(out, "mechanism: SCRAM-SHA-256") {
		t.Fatalf("config print does not show the SASL settings:\n%s", out)
	}
}
