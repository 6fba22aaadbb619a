package pipeline_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"

	"github.com/chainwatch/chainwatch/ledgerclient/contract"
	"github.com/chainwatch/chainwatch/pipeline"
	"github.com/chainwatch/chainwatch/pipeline/integrity"
)

// TestReplayFindsExactlyTheTamperedRange anchors real traffic through the
// anchoring stage, copies the topic record by record into a "restored" topic
// with one byte of one record flipped, and checks that a verified replay of
// the copy against the original's anchors flags exactly the range holding
// that record, while the original verifies throughout and inclusion proofs
// hold for it and fail for the tampered record.
func TestReplayFindsExactlyTheTamperedRange(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	env := startEmbeddedDefault(t, 2)
	service := env.as(contract.RoleService)

	// 4,000 flow records over 2 partitions.
	w := &kafka.Writer{Addr: kafka.TCP(env.brokers...), Topic: env.topics.Flows, Balancer: &kafka.Hash{}, BatchSize: 500, BatchTimeout: time.Millisecond,
		// Acknowledged writes: the partition ends read next must be final.
		RequiredAcks: kafka.RequireAll}
	base := time.Date(2026, 11, 24, 0, 0, 0, 0, time.UTC)
	var msgs []kafka.Message
	for i := range 4000 {
		dev := fmt.Sprintf("meter-%04d", i%40)
		msgs = append(msgs, kafka.Message{Key: []byte(dev), Time: base.Add(time.Duration(i) * time.Second),
			Value: fmt.Appendf(nil, `{"device_id":%q,"time_ms":%d,"dst_ip":"52.16.0.1","proto":"tcp","bytes_out":%d}`, dev, base.UnixMilli()+int64(i)*1000, 100+i)})
	}
	if err := w.WriteMessages(ctx, msgs...); err != nil {
		t.Fatal(err)
	}
	w.Close()
	ends := map[int]int64{}
	for p := range 2 {
		conn, err := kafka.DialLeader(ctx, "tcp", env.brokers[0], env.topics.Flows, p)
		if err != nil {
			t.Fatal(err)
		}
		ends[p], _ = conn.ReadLastOffset()
		conn.Close()
	}

	// Anchor everything with the real stage, in batches of 300.
	stage := pipeline.NewAnchorStage(pipeline.AnchorConfig{Kafka: env.kafka, Topics: []string{env.topics.Flows}, BatchRecords: 300, BatchAge: 200 * time.Millisecond, Period: 200 * time.Millisecond},
		env.topics, service, pipeline.NewMetrics(prometheus.NewRegistry()), testLogger(t))
	stageCtx, stopStage := context.WithCancel(ctx)
	if err := stage.Start(stageCtx); err != nil {
		t.Fatal(err)
	}
	anchored := env.anchors(t, contract.RoleService)
	for p, end := range ends {
		for {
			as, err := anchored.List(ctx, flowStream(t, ctx, env), int32(p), end-1, end-1)
			if err != nil {
				t.Fatal(err)
			}
			if len(as) == 1 {
				break
			}
			if ctx.Err() != nil {
				t.Fatalf("partition %d never anchored up to offset %d", p, end-1)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	stopStage()
	_ = stage.Shutdown(context.Background())

	// The original verifies end to end, with no unanchored gap.
	for p := range 2 {
		ranges, err := integrity.Replay(ctx, service, integrity.ReplayRequest{Kafka: env.kafka, Topic: env.topics.Flows, Partition: int32(p), To: -1})
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range ranges {
			if r.Status != integrity.RangeVerified {
				t.Fatalf("original partition %d: %+v", p, r)
			}
		}
	}

	// Copy partition by partition, flipping one byte of one record.
	const tamperPartition, tamperOffset = 1, 777
	restored := env.topics.Flows + ".restored"
	if err := pipeline.EnsureTopics(ctx, env.kafka, 2, 1, restored); err != nil {
		t.Fatal(err)
	}
	for p, end := range ends {
		r := kafka.NewReader(kafka.ReaderConfig{Brokers: env.brokers, Topic: env.topics.Flows, Partition: p, MaxWait: 50 * time.Millisecond})
		var copyMsgs []kafka.Message
		for int64(len(copyMsgs)) < end {
			m, err := r.ReadMessage(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if p == tamperPartition && m.Offset == tamperOffset {
				m.Value[len(m.Value)-3] ^= 0x01 // one digit of bytes_out
			}
			copyMsgs = append(copyMsgs, kafka.Message{Key: m.Key, Value: m.Value, Time: m.Time})
		}
		r.Close()
		conn, err := kafka.DialLeader(ctx, "tcp", env.brokers[0], restored, p)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := conn.WriteMessages(copyMsgs...); err != nil {
			t.Fatal(err)
		}
		conn.Close()
	}

	var mismatched []integrity.ReplayRange
	verified := 0
	for p := range 2 {
		ranges, err := integrity.Replay(ctx, service, integrity.ReplayRequest{Kafka: env.kafka, Topic: restored, AnchoredAs: env.topics.Flows, Partition: int32(p), To: -1})
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range ranges {
			switch r.Status {
			case integrity.RangeMismatched:
				mismatched = append(mismatched, r)
			case integrity.RangeVerified:
				verified++
			default:
				t.Errorf("restored copy: unexpected %+v", r)
			}
		}
	}
	if len(mismatched) != 1 {
		t.Fatalf("mismatched ranges %+v, want exactly one", mismatched)
	}
	m := mismatched[0]
	if m.Partition != tamperPartition || m.FirstOffset > tamperOffset || m.LastOffset < tamperOffset {
		t.Fatalf("mismatched range %+v does not hold partition %d offset %d", m, tamperPartition, tamperOffset)
	}
	t.Logf("tampered record found in %s (%d other ranges verified): %s", m.AnchorID, verified, m.Detail)

	// The integrity alert it raises is idempotent on the ledger.
	first, err := service.RecordAlert(ctx, integrity.IntegrityAlert(env.topics.Flows, m, time.Now()))
	if err != nil {
		t.Fatal(err)
	}
	again, err := service.RecordAlert(ctx, integrity.IntegrityAlert(env.topics.Flows, m, time.Now().Add(time.Hour)))
	if err != nil || again.TxID != first.TxID || first.Evidence.AnchorIDs[0] != m.AnchorID {
		t.Fatalf("integrity alert %+v then %+v (%v)", first, again, err)
	}

	// Inclusion proofs hold for an original record and not for the tampered copy.
	proof, err := integrity.Prove(ctx, service, env.kafka, "", env.topics.Flows, "", tamperPartition, tamperOffset)
	if err != nil {
		t.Fatal(err)
	}
	if err := proof.Check(); err != nil || proof.AnchorID != m.AnchorID {
		t.Fatalf("proof of the original record: %v (anchor %s)", err, proof.AnchorID)
	}
	proof.Value[len(proof.Value)-3] ^= 0x01
	if err := proof.Check(); err == nil {
		t.Fatal("a proof over the tampered value checked")
	}
	if _, err := integrity.Prove(ctx, service, env.kafka, "", restored, env.topics.Flows, tamperPartition, tamperOffset); err == nil {
		t.Fatal("proving the tampered copy against the original's anchor succeeded")
	}
}
