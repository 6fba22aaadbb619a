package pipeline_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/chainwatch/chainwatch/ledgerclient/contract"
	"github.com/chainwatch/chainwatch/pipeline"
	"github.com/chainwatch/chainwatch/pipeline/integrity"
	"github.com/chainwatch/chainwatch/pipeline/kafkaconn"
	"github.com/chainwatch/chainwatch/simulator"
)

// TestRetentionIsNotTampering deletes the front of an anchored partition
// with a DeleteRecords request — what retention does when it drops a
// segment — through the middle of an anchored range. The ranges before it
// are expired; the surviving records of the range it cut through still
// verify against the anchored root (with the kept leaf hashes of the
// deleted ones); the audit raises no integrity alert. A surviving record of
// that range then forged is caught, in exactly that range.
func TestRetentionIsNotTampering(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the service")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	env := startEmbeddedDefault(t, 1)
	env.simulate(t, ctx, simulator.Config{Devices: 8, Seed: 2, History: time.Hour, Duration: time.Minute,
		Start: time.Date(2026, 11, 4, 0, 0, 0, 0, time.UTC), TrustEvery: -1})
	svc := env.startService(t, ctx, pipeline.ServiceConfig{Partitions: 1,
		Anchor:   pipeline.AnchorConfig{BatchRecords: 500, BatchAge: 100 * time.Millisecond, Period: 200 * time.Millisecond},
		Audit:    pipeline.AuditConfig{Interval: 200 * time.Millisecond},
		Detector: pipeline.DetectorConfig{Warmup: 24 * time.Hour}})
	end := countPartition(t, env.brokers[0], env.topics.Flows, 0)
	analyst, anchored := env.as(contract.RoleAnalyst), env.anchors(t, contract.RoleAnalyst)
	var anchors []integrity.Anchor
	var err error
	for ctx.Err() == nil {
		anchors, err = anchored.List(ctx, flowStream(t, ctx, env), 0, 0, -1)
		if err != nil {
			t.Fatal(err)
		}
		if len(anchors) > 0 && anchors[len(anchors)-1].LastOffset >= end-1 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if len(anchors) < 4 {
		t.Fatalf("%d anchors over %d records", len(anchors), end)
	}
	cut := anchors[2]
	deleteTo := cut.FirstOffset + cut.Count/2 // the new start of the partition

	cl, err := kgo.NewClient(kgo.SeedBrokers(env.brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	deleteRecordsBefore(t, ctx, cl, env.topics.Flows, deleteTo)

	replay := func() []integrity.ReplayRange {
		t.Helper()
		rs, err := integrity.Replay(ctx, analyst, integrity.ReplayRequest{Kafka: env.kafka, Topic: env.topics.Flows, Partition: 0, From: 0, To: -1})
		if err != nil {
			t.Fatal(err)
		}
		return rs
	}
	status := func(rs []integrity.ReplayRange) map[integrity.RangeStatus]int64 {
		out := map[integrity.RangeStatus]int64{}
		for _, r := range rs {
			out[r.Status] += r.LastOffset - r.FirstOffset + 1
		}
		return out
	}
	rs := replay()
	for _, r := range rs {
		t.Logf("%s %d-%d %s", r.Status, r.FirstOffset, r.LastOffset, r.Detail)
	}
	got := status(rs)
	if got[integrity.RangeExpired] != deleteTo || got[integrity.RangeMismatched] != 0 {
		t.Fatalf("after deleting offsets 0-%d: %v, want %d expired and none mismatched", deleteTo-1, got, deleteTo)
	}
	var kept *integrity.ReplayRange
	for i := range rs {
		if rs[i].AnchorID == cut.ID && rs[i].FirstOffset == deleteTo {
			kept = &rs[i]
		}
	}
	if kept == nil || kept.Status != integrity.RangeVerified || kept.LastOffset != cut.LastOffset {
		t.Fatalf("the surviving records of the range retention cut through: %+v, want verified %d-%d", kept, deleteTo, cut.LastOffset)
	}

	// A surviving record of the cut range is still provable, to the same
	// anchored root; a deleted one says it expired.
	proof, err := integrity.Prove(ctx, analyst, env.kafka, "", env.topics.Flows, "", 0, deleteTo+3)
	if err != nil {
		t.Fatal(err)
	}
	if proof.MerkleRoot != cut.MerkleRoot || proof.Check() != nil {
		t.Fatalf("proof of offset %d: %+v", deleteTo+3, proof)
	}
	if _, err := integrity.Prove(ctx, analyst, env.kafka, "", env.topics.Flows, "", 0, deleteTo-1); err == nil || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("proof of a deleted record: %v", err)
	}

	// The audit goes over it all without an integrity alert.
	// (Ranges wholly gone are counted, once; the one cut through when it
	// is gone too.)
	for testutil.ToFloat64(svc.Metrics().AuditedRecords.WithLabelValues(env.topics.Flows, "expired")) < float64(cut.FirstOffset) {
		if ctx.Err() != nil {
			t.Fatal("the audit never counted the expired records")
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(time.Second) // more rounds over the same ranges
	if n := testutil.ToFloat64(svc.Metrics().AuditedRecords.WithLabelValues(env.topics.Flows, "expired")); n != float64(cut.FirstOffset) {
		t.Errorf("%v expired records counted, want the %d of the ranges wholly gone, once", n, cut.FirstOffset)
	}
	if n := testutil.ToFloat64(svc.Metrics().IntegrityFinds.WithLabelValues(env.topics.Flows)); n != 0 {
		t.Fatalf("%v integrity findings for retention", n)
	}

	// A surviving record of the cut range forged: exactly that range.
	if err := env.broker.ForgeRecord(ctx, env.topics.Flows, 0, deleteTo+7, func(v []byte) []byte {
		out := append([]byte(nil), v...)
		out[len(out)-3] ^= 1
		return out
	}); err != nil {
		t.Fatal(err)
	}
	var bad []integrity.ReplayRange
	for _, r := range replay() {
		if r.Status == integrity.RangeMismatched {
			bad = append(bad, r)
		}
	}
	if len(bad) != 1 || bad[0].AnchorID != cut.ID || bad[0].FirstOffset != deleteTo {
		t.Fatalf("after forging offset %d: mismatched %+v, want the surviving part of %s only", deleteTo+7, bad, cut.ID)
	}
	t.Logf("forged: %s", bad[0].Detail)
}

// TestEmbeddedBrokerAppliesRetention: the embedded broker bounds each
// partition's log by RetentionBytes, deleting the oldest records first,
// and leaves the compacted state topics whole.
func TestEmbeddedBrokerAppliesRetention(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	topics := pipeline.Topics{}.WithDefaults()
	broker, err := pipeline.StartEmbeddedBroker(pipeline.BrokerConfig{Listen: "127.0.0.1:0", Topics: topics.All(), Partitions: 1, RetentionBytes: 64 << 10}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer broker.Close()
	cl, err := kgo.NewClient(kgo.SeedBrokers(broker.Addr()), kgo.ProducerBatchCompression(kgo.NoCompression()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	kafka := kafkaconn.Plain(broker.Addr())
	if err := pipeline.EnsureStateTopic(ctx, kafka, 1, topics.State); err != nil {
		t.Fatal(err)
	}
	value := make([]byte, 1000) // incompressible, as the producer compresses
	for i := range value {
		value[i] = byte(i*7919 + i*i*31)
	}
	for i := range 20 { // 400 KB in each topic, in batches of 20 records
		var recs []*kgo.Record
		for j := range 20 {
			key := []byte{byte(i), byte(j)}
			recs = append(recs, &kgo.Record{Topic: topics.Flows, Value: value}, &kgo.Record{Topic: topics.State, Key: key, Value: value})
		}
		if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	broker.ApplyRetention()
	starts, err := adm.ListStartOffsets(ctx, topics.Flows, topics.State)
	if err != nil {
		t.Fatal(err)
	}
	ends, err := adm.ListEndOffsets(ctx, topics.Flows, topics.State)
	if err != nil {
		t.Fatal(err)
	}
	flowStart, _ := starts.Lookup(topics.Flows, 0)
	flowEnd, _ := ends.Lookup(topics.Flows, 0)
	stateStart, _ := starts.Lookup(topics.State, 0)
	t.Logf("flows: offsets %d-%d kept; state: from %d", flowStart.Offset, flowEnd.Offset, stateStart.Offset)
	if flowStart.Offset == 0 || flowEnd.Offset != 400 || (flowEnd.Offset-flowStart.Offset)*1000 > 2*(64<<10) {
		t.Errorf("flows keeps offsets %d-%d of 400 records of 1 KB under a 64 KiB retention", flowStart.Offset, flowEnd.Offset)
	}
	if stateStart.Offset != 0 {
		t.Errorf("the compacted state topic lost its first %d records to retention", stateStart.Offset)
	}
}

// TestEmbeddedBrokerKeepsOldRecords: records whose timestamps are a month
// old — history replayed today — are kept through the broker's cleaning,
// which Kafka's default time retention (seven days by record timestamp)
// would have deleted: the embedded broker bounds its log by size only.
func TestEmbeddedBrokerKeepsOldRecords(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	topics := pipeline.Topics{}.WithDefaults()
	broker, err := pipeline.StartEmbeddedBroker(pipeline.BrokerConfig{Listen: "127.0.0.1:0", Topics: topics.All(), Partitions: 1}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer broker.Close()
	cl, err := kgo.NewClient(kgo.SeedBrokers(broker.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if err := pipeline.EnsureStateTopic(ctx, kafkaconn.Plain(broker.Addr()), 1, topics.State); err != nil {
		t.Fatal(err) // a compacted topic: the broker's cleaning runs
	}
	old := time.Now().Add(-30 * 24 * time.Hour)
	var recs []*kgo.Record
	for i := range 50 {
		recs = append(recs, &kgo.Record{Topic: topics.Flows, Value: []byte("flow"), Timestamp: old.Add(time.Duration(i) * time.Second)})
	}
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	broker.ApplyRetention()
	starts, err := kadm.NewClient(cl).ListStartOffsets(ctx, topics.Flows)
	if err != nil {
		t.Fatal(err)
	}
	if start, _ := starts.Lookup(topics.Flows, 0); start.Offset != 0 {
		t.Fatalf("records a month old deleted through offset %d", start.Offset-1)
	}
}

// TestRetentionCutsThroughTransactions: a transactional producer's commit
// markers take offsets that hold no record, so an anchored range spans more
// offsets than records. Retention cutting through such a range leaves its
// surviving records verified against the anchor's last leaves — they were
// once matched by offset, which found the wrong leaves, or ran past them.
func TestRetentionCutsThroughTransactions(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the service")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	env := startEmbeddedDefault(t, 1)
	cl, err := kgo.NewClient(kgo.SeedBrokers(env.brokers...), kgo.TransactionalID("replayer"), kgo.DefaultProduceTopic(env.topics.Flows))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	for txn := range 40 { // 40 transactions of 10 records, each closed by a marker
		if err := cl.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		for i := range 10 {
			cl.Produce(ctx, &kgo.Record{Value: []byte(fmt.Sprintf(`{"not":"a flow","txn":%d,"i":%d}`, txn, i))}, nil)
		}
		if err := cl.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		if err := cl.EndTransaction(ctx, kgo.TryCommit); err != nil {
			t.Fatal(err)
		}
	}
	env.startService(t, ctx, pipeline.ServiceConfig{Partitions: 1,
		Anchor:   pipeline.AnchorConfig{BatchRecords: 100, BatchAge: 100 * time.Millisecond, Period: 200 * time.Millisecond},
		Audit:    pipeline.AuditConfig{Interval: -1},
		Detector: pipeline.DetectorConfig{Warmup: 24 * time.Hour}})
	end := countPartition(t, env.brokers[0], env.topics.Flows, 0)
	anchored := env.anchors(t, contract.RoleAnalyst)
	var anchors []integrity.Anchor
	for ctx.Err() == nil {
		anchors, err = anchored.List(ctx, flowStream(t, ctx, env), 0, 0, -1)
		if err != nil {
			t.Fatal(err)
		}
		if len(anchors) > 0 && anchors[len(anchors)-1].Count > 0 && anchors[len(anchors)-1].LastOffset >= end-2 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if len(anchors) < 3 {
		t.Fatalf("%d anchors over %d offsets", len(anchors), end)
	}
	cut := anchors[1]
	if span := cut.LastOffset - cut.FirstOffset + 1; span <= cut.Count {
		t.Fatalf("anchor %d-%d holds %d records: no commit marker inside it", cut.FirstOffset, cut.LastOffset, cut.Count)
	}
	deleteTo := cut.LastOffset - 15 // keeps the range's last records, and a marker or two
	deleteRecordsBefore(t, ctx, cl, env.topics.Flows, deleteTo)
	rs, err := integrity.Replay(ctx, env.as(contract.RoleAnalyst), integrity.ReplayRequest{Kafka: env.kafka, Topic: env.topics.Flows, Partition: 0, From: 0, To: -1})
	if err != nil {
		t.Fatal(err)
	}
	var kept *integrity.ReplayRange
	last := anchors[len(anchors)-1].LastOffset
	for i := range rs {
		t.Logf("%s %d-%d (%d records) %s", rs[i].Status, rs[i].FirstOffset, rs[i].LastOffset, rs[i].Records, rs[i].Detail)
		if rs[i].Status == integrity.RangeMismatched {
			t.Errorf("range %d-%d mismatched after retention: %s", rs[i].FirstOffset, rs[i].LastOffset, rs[i].Detail)
		}
		if rs[i].Status == integrity.RangeUnanchored && rs[i].LastOffset < last {
			// Between anchored ranges: what the audit alerts on.
			t.Errorf("offsets %d-%d between anchored ranges reported unanchored: they hold a commit marker, no record", rs[i].FirstOffset, rs[i].LastOffset)
		}
		if rs[i].AnchorID == cut.ID && rs[i].FirstOffset == deleteTo {
			kept = &rs[i]
		}
	}
	if kept == nil || kept.Status != integrity.RangeVerified || kept.Records == 0 || kept.Records > cut.LastOffset-deleteTo {
		t.Fatalf("the surviving records of the range cut through: %+v, want verified, fewer records than its %d offsets", kept, cut.LastOffset-deleteTo+1)
	}
	// A surviving record of it is provable, at its place among the leaves.
	proof, err := integrity.Prove(ctx, env.as(contract.RoleAnalyst), env.kafka, "", env.topics.Flows, "", 0, cut.LastOffset)
	if err != nil {
		t.Fatal(err)
	}
	if proof.MerkleRoot != cut.MerkleRoot || proof.Check() != nil || proof.LeafIndex != int(cut.Count)-1 {
		t.Fatalf("proof of the range's last record: leaf %d of %d, root %s (anchored %s), check %v", proof.LeafIndex, cut.Count, proof.MerkleRoot, cut.MerkleRoot, proof.Check())
	}
}

// deleteRecordsBefore deletes partition 0 of topic up to offset, as
// retention dropping a segment does.
func deleteRecordsBefore(t *testing.T, ctx context.Context, cl *kgo.Client, topic string, offset int64) {
	t.Helper()
	offsets := kadm.Offsets{}
	offsets.AddOffset(topic, 0, offset, -1)
	res, err := kadm.NewClient(cl).DeleteRecords(ctx, offsets)
	if err != nil {
		t.Fatal(err)
	}
	if err := res.Error(); err != nil {
		t.Fatal(err)
	}
}

// TestCommitMarkersAreNoRecords: a topic backfilled by a transactional
// producer with event times weeks old holds a commit marker after every
// record, stamped with the commit's time. The newest event time retraining
// holds out from is the newest record's, not the last marker's; and a
// history read of the records' span reads all 12 of them — the broker's
// offset for a time lands on the first marker, where the read stopped — and
// counts no marker as a record.
func TestCommitMarkersAreNoRecords(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	env := startEmbeddedDefault(t, 1)
	cl, err := kgo.NewClient(kgo.SeedBrokers(env.brokers...), kgo.TransactionalID("backfill"), kgo.DefaultProduceTopic(env.topics.Flows))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	t0 := time.Date(2026, 11, 2, 10, 0, 0, 0, time.UTC)
	var newest time.Time
	for i := range 12 { // one record a transaction: record, marker, record, marker, …
		if err := cl.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		newest = t0.Add(time.Duration(i) * time.Minute)
		if err := cl.ProduceSync(ctx, &kgo.Record{Value: []byte(`{"i":1}`), Timestamp: newest}).FirstErr(); err != nil {
			t.Fatal(err)
		}
		if err := cl.EndTransaction(ctx, kgo.TryCommit); err != nil {
			t.Fatal(err)
		}
	}
	got, err := pipeline.NewestEventTime(ctx, env.kafka, env.topics.Flows)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Equal(newest) {
		t.Fatalf("newest event time %s, want the newest record's %s (not its commit marker's)", got.UTC(), newest)
	}

	// A history read over the same span reads the 12 records, not the 12
	// markers too, and ends at the last marker rather than waiting past it.
	reg, err := pipeline.SnapshotRegistry(ctx, env.as(contract.RoleAnalyst))
	if err != nil {
		t.Fatal(err)
	}
	rep, err := pipeline.ReadHistory(ctx, pipeline.HistoryRequest{Kafka: env.kafka, Ledger: env.as(contract.RoleAnalyst), Registry: reg,
		Topic: env.topics.Flows, Since: t0, Until: newest.Add(time.Minute), LeadIn: -1}, func(*pipeline.HistoryWindow) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	if rep.Records != 12 {
		t.Fatalf("history read %d records, want the 12 the producer wrote", rep.Records)
	}
}
