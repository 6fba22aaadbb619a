package pipeline_test

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/chainwatch/chainwatch/ledgerclient/contract"
	"github.com/chainwatch/chainwatch/pipeline"
	"github.com/chainwatch/chainwatch/pipeline/integrity"
	"github.com/chainwatch/chainwatch/simulator"
)

// TestTopicRecreatedUnderARunningService deletes the flows topic and
// creates it again while the service runs, with the same ledger
// throughout: the new topic is a new stream whose anchors start at offset
// 0, windows go on being scored, no integrity alert is raised, and the old
// stream's anchors still verify where its records exist — here a copy of
// the old topic taken before the deletion, verified with AnchoredAs.
func TestTopicRecreatedUnderARunningService(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the service")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	const parts = 2
	env := startEmbeddedDefault(t, parts)
	start := time.Date(2026, 11, 20, 0, 0, 0, 0, time.UTC)
	fleet := simulator.Config{Devices: 16, Seed: 9, History: 3 * time.Hour, Duration: 20 * time.Minute, Start: start,
		FirstAttackAfter: 24 * time.Hour, TrustEvery: -1}
	first := env.simulate(t, ctx, fleet)

	svc := env.startService(t, ctx, pipeline.ServiceConfig{
		Anchor:   pipeline.AnchorConfig{BatchRecords: 2000, BatchAge: 100 * time.Millisecond, Period: 200 * time.Millisecond},
		Audit:    pipeline.AuditConfig{Interval: 200 * time.Millisecond},
		Detector: pipeline.DetectorConfig{Warmup: 2 * time.Hour, Seed: 1}})
	m := svc.Metrics()
	for (m.Summary.RecordsConsumed.Load() < first.Records || m.Summary.WindowsScored.Load() == 0) && ctx.Err() == nil {
		time.Sleep(50 * time.Millisecond)
	}
	waitAnchored(t, ctx, env, parts)
	oldStream := flowStream(t, ctx, env)
	scoredBefore := m.Summary.WindowsScored.Load()

	// A copy of the old topic, record for record (same offsets, keys,
	// values and timestamps): what a backup or a mirror keeps of it.
	cl, err := kgo.NewClient(kgo.SeedBrokers(env.brokers...), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	const backup = "iot.flows.backup"
	if _, err := adm.CreateTopic(ctx, parts, 1, nil, backup); err != nil {
		t.Fatal(err)
	}
	for p := range parts {
		copyPartition(t, ctx, env, cl, p, backup)
	}

	// Delete and create again, then the fleet goes on on the new topic.
	if res, err := adm.DeleteTopic(ctx, env.topics.Flows); err != nil || res.Err != nil {
		t.Fatalf("delete: %v %v", err, res.Err)
	}
	if _, err := adm.CreateTopic(ctx, parts, 1, nil, env.topics.Flows); err != nil {
		t.Fatal(err)
	}
	newStream := flowStream(t, ctx, env)
	if newStream == oldStream {
		t.Fatalf("the recreated topic has the old stream %s", oldStream)
	}
	fleet.Start, fleet.History, fleet.Duration = start.Add(3*time.Hour+20*time.Minute), -1, 20*time.Minute
	second := env.simulate(t, ctx, fleet)
	for m.Summary.RecordsConsumed.Load() < first.Records+second.Records && ctx.Err() == nil {
		time.Sleep(50 * time.Millisecond)
	}
	waitAnchored(t, ctx, env, parts) // under the new stream
	anchored := env.anchors(t, contract.RoleAnalyst)
	for p := range parts {
		as, err := anchored.List(ctx, newStream, int32(p), 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		if len(as) == 0 || as[0].FirstOffset != 0 {
			t.Errorf("partition %d: the new topic's anchors do not start afresh at offset 0: %+v", p, as)
		}
	}
	for m.Summary.WindowsScored.Load() <= scoredBefore && ctx.Err() == nil {
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(2 * time.Second) // audit rounds over both
	t.Logf("windows scored %d before the topic was created again, %d after", scoredBefore, m.Summary.WindowsScored.Load()-scoredBefore)
	if m.Summary.WindowsScored.Load() <= scoredBefore {
		t.Error("no window scored on the new topic")
	}
	analyst := env.as(contract.RoleAnalyst)
	integrityAlerts, err := analyst.ListAlerts(ctx, contract.ListAlertsArgs{Kind: contract.AlertIntegrity})
	if err != nil {
		t.Fatal(err)
	}
	if n := testutil.ToFloat64(m.IntegrityFinds.WithLabelValues(env.topics.Flows)); len(integrityAlerts) > 0 || n > 0 {
		t.Errorf("%d integrity alerts (%v findings) after the topic was created again: %+v", len(integrityAlerts), n, integrityAlerts)
	}

	// The new topic verifies against its own anchors; the old stream's
	// anchors verify against the copy of its records.
	for p := range parts {
		for _, c := range []struct{ topic, as string }{{env.topics.Flows, ""}, {backup, oldStream}} {
			rs, err := integrity.Replay(ctx, analyst, integrity.ReplayRequest{Kafka: env.kafka, Topic: c.topic, AnchoredAs: c.as, Partition: int32(p), From: 0, To: -1})
			if err != nil {
				t.Fatal(err)
			}
			verified := int64(0)
			for _, r := range rs {
				switch r.Status {
				case integrity.RangeVerified:
					verified += r.Records
				case integrity.RangeMismatched:
					t.Errorf("%s/%d as %q: %d-%d mismatched: %s", c.topic, p, c.as, r.FirstOffset, r.LastOffset, r.Detail)
				}
			}
			if verified == 0 {
				t.Errorf("%s/%d as %q: nothing verified: %+v", c.topic, p, c.as, rs)
			}
			t.Logf("%s/%d as %q: %d records verified in %d ranges", c.topic, p, c.as, verified, len(rs))
		}
	}
}

// copyPartition copies partition p of the flows topic into the same
// partition of topic dst, keys, values and timestamps as they are.
func copyPartition(t *testing.T, ctx context.Context, env *embeddedDefault, cl *kgo.Client, p int, dst string) {
	t.Helper()
	end := countPartition(t, env.brokers[0], env.topics.Flows, p)
	rd, err := kgo.NewClient(kgo.SeedBrokers(env.brokers...), kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{
		env.topics.Flows: {int32(p): kgo.NewOffset().AtStart()}}))
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	var n int64
	for n < end && ctx.Err() == nil {
		fs := rd.PollFetches(ctx)
		if err := fs.Err0(); err != nil {
			t.Fatal(err)
		}
		var out []*kgo.Record
		fs.EachRecord(func(r *kgo.Record) {
			out = append(out, &kgo.Record{Topic: dst, Partition: int32(p), Key: r.Key, Value: r.Value, Timestamp: r.Timestamp, Headers: r.Headers})
		})
		if err := cl.ProduceSync(ctx, out...).FirstErr(); err != nil {
			t.Fatal(err)
		}
		n += int64(len(out))
	}
}
