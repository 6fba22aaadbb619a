package kafkaconn_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/chainwatch/chainwatch/pipeline/kafkaconn"
	"github.com/chainwatch/chainwatch/pipeline/kafkaconn/kafkatest"
)

// roundTrip writes records with kafka-go and reads them back with both
// kafka-go and franz-go, so both clients are shown to pass the cluster's
// security.
func roundTrip(t *testing.T, cl *kafkaconn.Cluster) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := cl.Check(ctx); err != nil {
		t.Fatalf("check: %v", err)
	}
	topic := "round-trip"
	conn, err := cl.Dial(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := conn.CreateTopics(kafka.TopicConfig{Topic: topic, NumPartitions: 1, ReplicationFactor: 1}); err != nil {
		t.Fatal(err)
	}
	conn.Close()
	w := &kafka.Writer{Addr: cl.Addr(), Topic: topic, Transport: cl.Transport(), BatchTimeout: time.Millisecond}
	defer w.Close()
	var msgs []kafka.Message
	for i := range 10 {
		msgs = append(msgs, kafka.Message{Value: fmt.Appendf(nil, "record %d", i)})
	}
	if err := w.WriteMessages(ctx, msgs...); err != nil {
		t.Fatalf("write: %v", err)
	}
	r := cl.Reader(kafka.ReaderConfig{Topic: topic, Partition: 0, MaxWait: 50 * time.Millisecond})
	defer r.Close()
	for i := range 10 {
		m, err := r.ReadMessage(ctx)
		if err != nil {
			t.Fatalf("kafka-go read %d: %v", i, err)
		}
		if want := fmt.Sprintf("record %d", i); string(m.Value) != want {
			t.Fatalf("kafka-go read %q, want %q", m.Value, want)
		}
	}
	client, err := kgo.NewClient(append(cl.ClientOpts(), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))...)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	got := 0
	for got < 10 {
		fs := client.PollFetches(ctx)
		if err := fs.Err0(); err != nil {
			t.Fatalf("franz-go poll: %v", err)
		}
		got += fs.NumRecords()
	}
}

func TestBothClientsPassEverySecurity(t *testing.T) {
	for _, tc := range []struct {
		name string
		o    kafkatest.Options
	}{
		{"TLS", kafkatest.Options{TLS: true}},
		{"mutual TLS", kafkatest.Options{TLS: true, ClientCerts: true}},
		{"SASL PLAIN over TLS", kafkatest.Options{TLS: true, Mechanism: kafkaconn.MechanismPlain}},
		{"SASL SCRAM-SHA-256", kafkatest.Options{Mechanism: kafkaconn.MechanismSCRAMSHA256}},
		{"SASL SCRAM-SHA-512 over mutual TLS", kafkatest.Options{TLS: true, ClientCerts: true, Mechanism: kafkaconn.MechanismSCRAMSHA512}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k := kafkatest.Start(t, tc.o)
			cl, err := k.Config.Open(nil)
			if err != nil {
				t.Fatal(err)
			}
			roundTrip(t, cl)
		})
	}
}

// TestWrongSettingsAreNamed: each mistake an operator makes fails the
// check with the key to fix in the message, and the password is in none.
func TestWrongSettingsAreNamed(t *testing.T) {
	scram := kafkatest.Start(t, kafkatest.Options{Mechanism: kafkaconn.MechanismSCRAMSHA256})
	secured := kafkatest.Start(t, kafkatest.Options{TLS: true, ClientCerts: true})
	for _, tc := range []struct {
		name   string
		k      *kafkatest.Cluster
		change func(*kafkaconn.Config)
		want   string
	}{
		{"wrong password", scram, func(c *kafkaconn.Config) { c.SASL.PasswordFile, c.SASL.Password = "", "not-the-password" }, "kafka.sasl"},
		{"wrong user", scram, func(c *kafkaconn.Config) { c.SASL.Username = "mallory" }, "kafka.sasl"},
		{"wrong mechanism", scram, func(c *kafkaconn.Config) { c.SASL.Mechanism = kafkaconn.MechanismSCRAMSHA512 }, "kafka.sasl"},
		{"no SASL where required", scram, func(c *kafkaconn.Config) { c.SASL = kafkaconn.SASL{} }, "kafka.sasl"},
		{"untrusted CA", secured, func(c *kafkaconn.Config) { c.TLS.CAFile = filepath.Join(secured.Dir, "other-ca.pem") }, "kafka.tls.ca_file"},
		{"wrong server name", secured, func(c *kafkaconn.Config) { c.TLS.ServerName = "kafka.example" }, "kafka.tls.server_name"},
		{"no client certificate", secured, func(c *kafkaconn.Config) { c.TLS.CertFile, c.TLS.KeyFile = "", "" }, "kafka.tls"},
		{"TLS off where required", secured, func(c *kafkaconn.Config) { c.TLS = kafkaconn.TLS{} }, "kafka.tls"},
		{"TLS where the broker has none", scram, func(c *kafkaconn.Config) { c.TLS = kafkaconn.TLS{Enabled: true} }, "kafka.tls"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tc.k.Config
			tc.change(&cfg)
			cl, err := cfg.Open(nil)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			err = cl.Check(ctx)
			if err == nil {
				t.Fatal("check passed")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error does not name %s: %v", tc.want, err)
			}
			for _, secret := range []string{tc.k.Password, "not-the-password"} {
				if strings.Contains(err.Error(), secret) {
					t.Fatalf("error shows the password: %v", err)
				}
			}
		})
	}
}

func TestConfigErrorsNameTheKey(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		cfg     kafkaconn.Config
		environ []string
		want    string
	}{
		{kafkaconn.Config{}, nil, "brokers"},
		{kafkaconn.Config{Brokers: []string{"b:9092"}, TLS: kafkaconn.TLS{CertFile: "c.pem"}}, nil, "tls.key_file"},
		{kafkaconn.Config{Brokers: []string{"b:9092"}, TLS: kafkaconn.TLS{CAFile: filepath.Join(dir, "missing.pem")}}, nil, "tls.ca_file"},
		{kafkaconn.Config{Brokers: []string{"b:9092"}, SASL: kafkaconn.SASL{Mechanism: "GSSAPI", Username: "u"}}, nil, "sasl.mechanism"},
		{kafkaconn.Config{Brokers: []string{"b:9092"}, SASL: kafkaconn.SASL{Username: "u"}}, nil, "sasl.mechanism"},
		{kafkaconn.Config{Brokers: []string{"b:9092"}, SASL: kafkaconn.SASL{Mechanism: "PLAIN"}}, nil, "sasl.username"},
		{kafkaconn.Config{Brokers: []string{"b:9092"}, SASL: kafkaconn.SASL{Mechanism: "PLAIN", Username: "u"}}, nil, "CHAINWATCH_KAFKA_SASL_PASSWORD"},
		{kafkaconn.Config{Brokers: []string{"b:9092"}, SASL: kafkaconn.SASL{Mechanism: "PLAIN", Username: "u", PasswordEnv: "KPASS"}}, nil, "sasl.password_env"},
		{kafkaconn.Config{Brokers: []string{"b:9092"}, SASL: kafkaconn.SASL{Mechanism: "PLAIN", Username: "u", PasswordEnv: "KPASS"}}, []string{"KPASS="}, "sasl.password_env"},
		{kafkaconn.Config{Brokers: []string{"b:9092"}, SASL: kafkaconn.SASL{Mechanism: "PLAIN", Username: "u", PasswordFile: filepath.Join(dir, "nope")}}, nil, "sasl.password_file"},
		{kafkaconn.Config{Brokers: []string{"b:9092"}, SASL: kafkaconn.SASL{Mechanism: "PLAIN", Username: "u", Password: "p", PasswordEnv: "KPASS"}}, nil, "only one"},
	} {
		_, err := tc.cfg.Open(tc.environ)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: error %v does not name %s", tc.cfg, err, tc.want)
		}
	}
	cl, err := kafkaconn.Config{Brokers: []string{"b:9092"}, SASL: kafkaconn.SASL{Mechanism: "scram-sha-256", Username: "u", PasswordEnv: "KPASS"}}.Open([]string{"KPASS=hunter2"})
	if err != nil {
		t.Fatal(err)
	}
	if got := cl.Secured(); got != "SASL_PLAINTEXT/SCRAM-SHA-256" {
		t.Fatalf("secured = %q", got)
	}
}

func TestSecretNeverShows(t *testing.T) {
	s := kafkaconn.SASL{Mechanism: "PLAIN", Username: "u", Password: "hunter2"}
	var buf bytes.Buffer
	slog.New(slog.NewTextHandler(&buf, nil)).Info("config", "sasl", s, "password", s.Password)
	for _, out := range []string{buf.String(), fmt.Sprint(s), fmt.Sprintf("%+v %#v %v %s", s, s, s.Password, s.Password)} {
		if strings.Contains(out, "hunter2") {
			t.Fatalf("password shown: %s", out)
		}
	}
}
