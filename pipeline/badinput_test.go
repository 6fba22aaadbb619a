package pipeline_test

import (
	"bytes"
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"

	"github.com/chainwatch/chainwatch/ledgerclient/contract"
	"github.com/chainwatch/chainwatch/pipeline"
)

// TestBadInputIsDeadLetteredAndUntrustedDevicesAlert produces a malformed
// record, a record from an unregistered device and one from a revoked
// device, and checks that the first lands on the dead-letter topic byte for
// byte with its reason while the others raise trust alerts — and that the
// pipeline keeps going.
func TestBadInputIsDeadLetteredAndUntrustedDevicesAlert(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	env := startEmbeddedDefault(t, 2)
	dir, brokers, topics, log := env.dir, env.brokers, env.topics, testLogger(t)
	maker, operator, service := env.as(contract.RoleManufacturer), env.as(contract.RoleOperator), env.as(contract.RoleService)
	if _, err := maker.RegisterDevice(ctx, contract.Device{ID: "cam-9", Profile: "camera", Owner: "acme", MACs: []string{"02:00:00:00:00:09"}}); err != nil {
		t.Fatal(err)
	}

	svc := pipeline.NewService(pipeline.ServiceConfig{Kafka: env.kafka, Partitions: 2, ModelDir: filepath.Join(dir, "models"), OutboxPath: filepath.Join(dir, "outbox.db")}, service, prometheus.NewRegistry(), log)
	if err := svc.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer svc.Shutdown(context.Background())
	// Revoked after start: the registry must follow the ledger's event.
	// Stolen shortly before the records below were sent.
	if _, err := operator.RevokeDeviceFrom(ctx, "cam-9", "stolen from site 4", time.UnixMilli(1764000000000-60_000)); err != nil {
		t.Fatal(err)
	}

	malformed := []byte(`{"device_id":"cam-1","time_ms":1764000000000,"proto":"tcp"} trailing`)
	w := &kafka.Writer{Addr: kafka.TCP(brokers...), Topic: topics.Flows, Balancer: &kafka.Hash{}}
	defer w.Close()
	err := w.WriteMessages(ctx,
		kafka.Message{Key: []byte("cam-1"), Value: malformed, Headers: []kafka.Header{{Key: "origin", Value: []byte("test")}}},
		kafka.Message{Key: []byte("intruder"), Value: []byte(`{"src_mac":"de:ad:be:ef:00:01","time_ms":1764000000000,"dst_ip":"10.0.0.1","proto":"tcp"}`)},
		kafka.Message{Key: []byte("cam-9"), Value: []byte(`{"src_mac":"02:00:00:00:00:09","time_ms":1764000001000,"dst_ip":"10.0.0.1","proto":"tcp"}`)},
	)
	if err != nil {
		t.Fatal(err)
	}

	// The dead letter: same key, same value, original headers kept, reason added.
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: brokers, GroupID: "test-dlq", Topic: topics.DeadLetter, StartOffset: kafka.FirstOffset, MaxWait: 100 * time.Millisecond})
	defer r.Close()
	m, err := r.ReadMessage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(m.Value, malformed) || string(m.Key) != "cam-1" {
		t.Fatalf("dead letter %q / %q is not the record as received", m.Key, m.Value)
	}
	headers := map[string]string{}
	for _, h := range m.Headers {
		headers[h.Key] = string(h.Value)
	}
	if headers["origin"] != "test" || headers[pipeline.HeaderDLQReason] == "" || headers[pipeline.HeaderDLQTopic] != topics.Flows {
		t.Fatalf("dead-letter headers %v", headers)
	}
	t.Logf("dead-letter reason: %s", headers[pipeline.HeaderDLQReason])

	kinds := map[string]contract.Alert{}
	for len(kinds) < 2 && ctx.Err() == nil {
		alerts, err := service.ListAlerts(ctx, contract.ListAlertsArgs{})
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range alerts {
			kinds[a.Kind] = a
		}
		time.Sleep(50 * time.Millisecond)
	}
	if a := kinds[contract.AlertRogueDevice]; a.DeviceID != "mac:de:ad:be:ef:00:01" {
		t.Errorf("rogue-device alert %+v, want one naming the unknown MAC", a)
	}
	if a := kinds[contract.AlertRevokedDevice]; a.DeviceID != "cam-9" || a.Evidence.Detail == "" {
		t.Errorf("revoked-device alert %+v, want one for cam-9 with the reason", a)
	}
	if got := svc.Metrics().Summary.RecordsRejected.Load(); got != 1 {
		t.Errorf("rejected %d records, want 1", got)
	}
}
