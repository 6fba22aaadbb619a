package pipeline_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"

	"github.com/chainwatch/chainwatch/ledgerclient/contract"
	"github.com/chainwatch/chainwatch/pipeline"
	"github.com/chainwatch/chainwatch/pipeline/integrity"
)

// TestAuditFindsHistoryTheBrokerForged runs the service with a fast audit,
// then makes the embedded broker serve one anchored range with one byte of
// one record changed, as a compromised broker would. The audit must raise
// one integrity alert, for exactly that range, and a replay must agree.
func TestAuditFindsHistoryTheBrokerForged(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	env, anchors := startAuditedService(t, ctx)
	service := env.as(contract.RoleService)

	// Forge the second anchored range: one byte of one record's value.
	target := anchors[1]
	victim := (target.FirstOffset + target.LastOffset) / 2
	err := env.broker.ForgeRecord(ctx, env.topics.Flows, 1, victim, func(v []byte) []byte {
		v = append([]byte(nil), v...)
		v[len(v)-3] ^= 0x01 // a digit of packets_in
		return v
	})
	if err != nil {
		t.Fatal(err)
	}

	var integrityAlerts []contract.Alert
	for len(integrityAlerts) == 0 {
		var err error
		integrityAlerts, err = service.ListAlerts(ctx, contract.ListAlertsArgs{Kind: contract.AlertIntegrity})
		if err != nil {
			t.Fatal(err)
		}
		if ctx.Err() != nil {
			t.Fatal("the audit raised no integrity alert")
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond) // further rounds must not raise more
	integrityAlerts, err = service.ListAlerts(ctx, contract.ListAlertsArgs{Kind: contract.AlertIntegrity})
	if err != nil {
		t.Fatal(err)
	}
	if len(integrityAlerts) != 1 {
		t.Fatalf("%d integrity alerts, want 1: %+v", len(integrityAlerts), integrityAlerts)
	}
	ev := integrityAlerts[0].Evidence
	if ev.Partition != 1 || len(ev.Offsets) != 2 || ev.Offsets[0] != target.FirstOffset || ev.Offsets[1] != target.LastOffset || ev.AnchorIDs[0] != target.ID {
		t.Fatalf("integrity alert evidence %+v, want partition 1 offsets %d..%d anchor %s", ev, target.FirstOffset, target.LastOffset, target.ID)
	}
	verdicts, err := integrity.Replay(ctx, service, integrity.ReplayRequest{Kafka: env.kafka, Topic: env.topics.Flows, LeafTopic: env.topics.Leaves, Partition: 1, From: 0, To: -1})
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range verdicts {
		if mismatched := v.Status == integrity.RangeMismatched; mismatched != (v.AnchorID == target.ID) {
			t.Errorf("replay says %s/%d %d..%d is %s", env.topics.Flows, v.Partition, v.FirstOffset, v.LastOffset, v.Status)
		}
	}
}

// countPartition is the number of records a partition holds (its end
// offset).
func countPartition(t testing.TB, broker, topic string, partition int) int64 {
	t.Helper()
	conn, err := kafka.DialLeader(context.Background(), "tcp", broker, topic, partition)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	end, err := conn.ReadLastOffset()
	if err != nil {
		t.Fatal(err)
	}
	return end
}

// startAuditedService writes 4,000 flow records of eight meters into the
// flows topic of an embedded default with two partitions, starts the
// service on it with fast anchoring (batches of 500) and a fast audit,
// and returns once partition 1 is anchored to its end, with partition 1's
// anchors.
func startAuditedService(t *testing.T, ctx context.Context) (*embeddedDefault, []integrity.Anchor) {
	t.Helper()
	env := startEmbeddedDefault(t, 2)
	// A leaf topic of its own name: every reader of the batch index must
	// follow the configuration.
	env.topics.Leaves = "audited.anchor-leaves"
	maker := env.as(contract.RoleManufacturer)
	for i := range 8 {
		if _, err := maker.RegisterDevice(ctx, contract.Device{ID: fmt.Sprintf("meter-%02d", i), Profile: "meter", Owner: "acme"}); err != nil {
			t.Fatal(err)
		}
	}
	writeMeterFlows(t, ctx, env, 0, 4000)

	svc := pipeline.NewService(pipeline.ServiceConfig{
		Kafka: env.kafka, Topics: env.topics, Partitions: 2, ModelDir: filepath.Join(env.dir, "models"), OutboxPath: filepath.Join(env.dir, "outbox.db"),
		Anchor: pipeline.AnchorConfig{BatchRecords: 500, BatchAge: 100 * time.Millisecond, Period: 200 * time.Millisecond},
		Audit:  pipeline.AuditConfig{Interval: 100 * time.Millisecond, RecordsPerRound: 1000},
	}, env.as(contract.RoleService), prometheus.NewRegistry(), testLogger(t))
	if err := svc.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Shutdown(context.Background()) })

	return env, waitPartitionAnchored(t, ctx, env, 1)
}

// waitPartitionAnchored waits until a partition of the flows topic is
// anchored to its end, and returns its anchors.
func waitPartitionAnchored(t *testing.T, ctx context.Context, env *embeddedDefault, partition int32) []integrity.Anchor {
	t.Helper()
	list := env.anchors(t, contract.RoleService)
	for {
		anchors, err := list.List(ctx, flowStream(t, ctx, env), partition, 0, -1)
		if err != nil {
			t.Fatal(err)
		}
		if n := len(anchors); n > 2 && anchors[n-1].LastOffset+1 == countPartition(t, env.brokers[0], env.topics.Flows, int(partition)) {
			return anchors
		}
		if ctx.Err() != nil {
			t.Fatalf("partition %d was not anchored", partition)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// writeMeterFlows writes n flow records of eight meters into the flows
// topic, the first the i-th of the sequence.
func writeMeterFlows(t *testing.T, ctx context.Context, env *embeddedDefault, first, n int) {
	t.Helper()
	w := &kafka.Writer{Addr: kafka.TCP(env.brokers...), Topic: env.topics.Flows, Balancer: &kafka.Hash{}, BatchTimeout: time.Millisecond}
	base := time.Date(2026, 11, 24, 0, 0, 0, 0, time.UTC).UnixMilli()
	var msgs []kafka.Message
	for i := first; i < first+n; i++ {
		dev := fmt.Sprintf("meter-%02d", i%8)
		msgs = append(msgs, kafka.Message{Key: []byte(dev), Value: fmt.Appendf(nil,
			`{"device_id":%q,"time_ms":%d,"dst_ip":"52.16.0.%d","dst_port":443,"proto":"tcp","bytes_out":%d,"bytes_in":410,"packets_out":3,"packets_in":2}`,
			dev, base+int64(i)*100, i%5, 800+i%200)})
	}
	if err := w.WriteMessages(ctx, msgs...); err != nil {
		t.Fatal(err)
	}
	w.Close()

}
