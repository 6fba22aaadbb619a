package pipeline_test

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"

	"github.com/chainwatch/chainwatch/ledgerclient/contract"
	"github.com/chainwatch/chainwatch/pipeline"
	"github.com/chainwatch/chainwatch/pipeline/decode"
)

func hexHash(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

// TestTelemetryTrustChecks sends signed envelopes through the running
// service and expects exactly the bad-signature (forged and replayed),
// firmware-mismatch, rogue-device and revoked-device findings, and none for
// the honest devices.
func TestTelemetryTrustChecks(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	env := startEmbeddedDefault(t, 2)
	maker, operator, service := env.as(contract.RoleManufacturer), env.as(contract.RoleOperator), env.as(contract.RoleService)
	approved := hexHash("plc-firmware-2.1")
	if _, err := operator.ApproveFirmware(ctx, contract.Firmware{Profile: "plc", Hash: approved}); err != nil {
		t.Fatal(err)
	}
	keys := map[string]ed25519.PrivateKey{}
	for _, id := range []string{"plc-honest", "plc-forged", "plc-replayed", "plc-tampered", "plc-revoked"} {
		pub, priv, _ := ed25519.GenerateKey(nil)
		keys[id] = priv
		if _, err := maker.RegisterDevice(ctx, contract.Device{ID: id, Profile: "plc", Owner: "acme", PublicKey: pub, Firmware: approved}); err != nil {
			t.Fatal(err)
		}
	}
	at := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	if _, err := operator.RevokeDeviceFrom(ctx, "plc-revoked", "decommissioned", at); err != nil {
		t.Fatal(err)
	}
	_, strangerKey, _ := ed25519.GenerateKey(nil)

	svc := pipeline.NewService(pipeline.ServiceConfig{Kafka: env.kafka, Partitions: 2, ModelDir: filepath.Join(env.dir, "models"), OutboxPath: filepath.Join(env.dir, "outbox.db")}, service, prometheus.NewRegistry(), testLogger(t))
	if err := svc.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer svc.Shutdown(context.Background())

	envelope := func(id string, seq uint64, firmware string, key ed25519.PrivateKey) kafka.Message {
		tm := decode.Envelope{DeviceID: id, Seq: seq, TimeMs: at.Add(time.Duration(seq) * time.Second).UnixMilli(), Firmware: firmware, Payload: []byte(`{"temp":21.5}`)}
		if err := tm.Sign(key); err != nil {
			t.Fatal(err)
		}
		b, _ := json.Marshal(tm)
		return kafka.Message{Key: []byte(id), Value: b}
	}
	msgs := []kafka.Message{
		envelope("plc-honest", 1, approved, keys["plc-honest"]),
		envelope("plc-honest", 2, approved, keys["plc-honest"]),
		envelope("plc-forged", 1, approved, strangerKey), // signed by someone else
		envelope("plc-replayed", 5, approved, keys["plc-replayed"]),
		envelope("plc-replayed", 5, approved, keys["plc-replayed"]), // the same envelope again
		envelope("plc-tampered", 1, hexHash("plc-firmware-2.1-patched"), keys["plc-tampered"]),
		envelope("plc-revoked", 1, approved, keys["plc-revoked"]),
		envelope("plc-unknown", 1, approved, strangerKey),
	}
	w := &kafka.Writer{Addr: kafka.TCP(env.brokers...), Topic: env.topics.Telemetry, Balancer: &kafka.Hash{}}
	defer w.Close()
	if err := w.WriteMessages(ctx, msgs...); err != nil {
		t.Fatal(err)
	}

	want := map[string]string{
		"plc-forged":   contract.AlertBadSignature,
		"plc-replayed": contract.AlertBadSignature,
		"plc-tampered": contract.AlertFirmwareMismatch,
		"plc-revoked":  contract.AlertRevokedDevice,
		"plc-unknown":  contract.AlertRogueDevice,
	}
	got := map[string]contract.Alert{}
	for len(got) < len(want) && ctx.Err() == nil {
		alerts, err := service.ListAlerts(ctx, contract.ListAlertsArgs{})
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range alerts {
			got[a.DeviceID] = a
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond) // room for a wrong extra alert to show up
	alerts, _ := service.ListAlerts(ctx, contract.ListAlertsArgs{})
	for _, a := range alerts {
		got[a.DeviceID] = a
	}
	for dev, kind := range want {
		if a, ok := got[dev]; !ok || a.Kind != kind || a.Evidence.Detail == "" {
			t.Errorf("%s: alert %+v, want %s with a reason", dev, got[dev], kind)
		} else {
			t.Logf("%-13s %-18s %s", dev, a.Kind, a.Evidence.Detail)
		}
	}
	if a, ok := got["plc-honest"]; ok {
		t.Errorf("honest device raised %+v", a)
	}
	if len(alerts) != len(want) {
		t.Errorf("%d alerts on the ledger, want %d", len(alerts), len(want))
	}

	// The last sequence numbers outlive the process: after a restart, an
	// old envelope produced again is a replay, the next one is not, and
	// re-reading history raises nothing.
	if err := svc.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	svc = pipeline.NewService(pipeline.ServiceConfig{Kafka: env.kafka, Partitions: 2, ModelDir: filepath.Join(env.dir, "models"), OutboxPath: filepath.Join(env.dir, "outbox.db")}, service, prometheus.NewRegistry(), testLogger(t))
	if err := svc.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer svc.Shutdown(context.Background())
	if err := w.WriteMessages(ctx, envelope("plc-honest", 2, approved, keys["plc-honest"]), envelope("plc-honest", 3, approved, keys["plc-honest"])); err != nil {
		t.Fatal(err)
	}
	var replayed []contract.Alert
	for len(replayed) == 0 && ctx.Err() == nil {
		replayed, _ = service.ListAlerts(ctx, contract.ListAlertsArgs{DeviceID: "plc-honest"})
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond)
	replayed, _ = service.ListAlerts(ctx, contract.ListAlertsArgs{DeviceID: "plc-honest"})
	if len(replayed) != 1 || replayed[0].Kind != contract.AlertBadSignature {
		t.Fatalf("after the restart plc-honest raised %+v, want one bad-signature alert for the replayed sequence 2", replayed)
	}
	if all, _ := service.ListAlerts(ctx, contract.ListAlertsArgs{}); len(all) != len(want)+1 {
		t.Errorf("%d alerts on the ledger after the restart, want %d", len(all), len(want)+1)
	}
}
