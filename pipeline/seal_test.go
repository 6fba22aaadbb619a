package pipeline_test

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/chainwatch/chainwatch/ledgerclient/contract"
	"github.com/chainwatch/chainwatch/pipeline"
	"github.com/chainwatch/chainwatch/pipeline/integrity"
)

// TestSealsProveBatchesAndTheirIndexIsAudited checks the seals of a running
// service: each period is one seal on the ledger holding every partition's
// batches; a record's proof goes through its batch to its seal's root; and
// the batch index, which lives in Kafka beside the leaf hashes, is itself
// audited. One seal's index record is altered (a batch's root changed, as
// an attacker hiding a forged record would) and another's deleted: the
// altered seal's batches are found mismatched, the deleted seal's offsets
// are found unanchored between anchored ranges, and both raise integrity
// alerts.
func TestSealsProveBatchesAndTheirIndexIsAudited(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	env, _ := startAuditedService(t, ctx)
	analyst := env.as(contract.RoleAnalyst)
	// Two more periods' records, each anchored before the next is written.
	writeMeterFlows(t, ctx, env, 4000, 2000)
	waitPartitionAnchored(t, ctx, env, 1)
	writeMeterFlows(t, ctx, env, 6000, 2000)
	anchors := waitPartitionAnchored(t, ctx, env, 1)

	// One seal a period, each with the batches of both partitions cut in it.
	seals, err := analyst.ListSeals(ctx, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	var batches int
	shared := false
	for _, s := range seals {
		batches += s.Batches
		shared = shared || s.Batches > 1
	}
	list := env.anchors(t, contract.RoleAnalyst)
	p0, err := list.List(ctx, flowStream(t, ctx, env), 0, 0, -1)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d seals on the ledger for %d batches (%d + %d listed)", len(seals), batches, len(p0), len(anchors))
	if !shared || len(seals) >= batches {
		t.Errorf("%d seals for %d batches: want fewer seals than batches, some holding several", len(seals), batches)
	}
	for _, a := range slices.Concat(p0, anchors) {
		if a.Seal == "" || a.Broken != "" || a.TxID == "" {
			t.Fatalf("anchor %s: seal %q, tx %q, broken %q; want sealed, with the seal's tx", a.ID, a.Seal, a.TxID, a.Broken)
		}
	}

	// A record's proof leads to its seal's root, which the ledger holds.
	target := anchors[1]
	proof, err := integrity.Prove(ctx, analyst, env.kafka, env.topics.Leaves, env.topics.Flows, "", 1, target.FirstOffset+7)
	if err != nil {
		t.Fatal(err)
	}
	if proof.Seal == nil || proof.Seal.ID != target.Seal || proof.Seal.BatchCount < 1 {
		t.Fatalf("proof of a sealed record: seal %+v, want %s", proof.Seal, target.Seal)
	}
	if err := proof.Check(); err != nil {
		t.Fatal(err)
	}
	onLedger, err := analyst.GetSeal(ctx, proof.Seal.ID)
	if err != nil || onLedger.Root != proof.Seal.Root {
		t.Fatalf("seal %s on the ledger: %+v, %v; the proof claims root %s", proof.Seal.ID, onLedger, err, proof.Seal.Root)
	}
	forged := *proof.Seal
	forged.Batch.Count++
	if err := (&integrity.RecordProof{Stream: proof.Stream, Partition: proof.Partition, Offset: proof.Offset, TimestampMs: proof.TimestampMs,
		Key: proof.Key, Value: proof.Value, AnchorID: proof.AnchorID, MerkleRoot: proof.MerkleRoot, LeafIndex: proof.LeafIndex,
		LeafCount: proof.LeafCount, LeafHash: proof.LeafHash, AuditPath: proof.AuditPath, Seal: &forged}).Check(); err == nil {
		t.Error("a proof whose sealed batch was changed still checks")
	}

	// Alter target's descriptor in its seal's index record: it now claims
	// another root, as if an attacker had forged a record of its range and
	// re-hashed it. Delete the record of a later seal of partition 1.
	var victim integrity.Anchor
	for _, a := range anchors[2:] {
		if a.Seal != target.Seal && a.LastOffset < anchors[len(anchors)-1].FirstOffset {
			victim = a
			break
		}
	}
	if victim.ID == "" {
		t.Fatalf("no anchor of partition 1 in a later seal with anchors after it: %+v", anchors)
	}
	index := list.Index()
	alterSealedBatch(t, ctx, env, index.Topic(), target.Seal, target.ID)
	w := &kafka.Writer{Addr: env.kafka.Addr(), Topic: index.Topic(), Balancer: &kafka.Hash{}, Transport: env.kafka.Transport(), RequiredAcks: kafka.RequireAll, BatchTimeout: time.Millisecond}
	if err := w.WriteMessages(ctx, kafka.Message{Key: []byte("@seal/" + victim.Seal)}); err != nil {
		t.Fatal(err)
	}
	w.Close()

	var alerts []contract.Alert
	var altered, gap bool
	for !(altered && gap) {
		if ctx.Err() != nil {
			t.Fatalf("integrity alerts %+v: want one for the altered seal's batch %s and one for the gap %s left", alerts, target.ID, victim.ID)
		}
		time.Sleep(100 * time.Millisecond)
		if alerts, err = analyst.ListAlerts(ctx, contract.ListAlertsArgs{Kind: contract.AlertIntegrity}); err != nil {
			t.Fatal(err)
		}
		altered, gap = false, false
		for _, a := range alerts {
			ev := a.Evidence
			altered = altered || (ev.Partition == 1 && slices.Contains(ev.AnchorIDs, target.ID) && strings.Contains(ev.Detail, "does not hash"))
			gap = gap || (ev.Partition == 1 && len(ev.Offsets) == 2 && ev.Offsets[0] <= victim.FirstOffset && ev.Offsets[1] >= victim.LastOffset &&
				strings.Contains(ev.Detail, "between anchored ranges"))
		}
	}
	// A seal on the ledger whose index record never reached Kafka (or was
	// deleted before the audit saw it): an alert naming it.
	orphan := contract.Seal{ID: contract.NewSealID(time.Now(), "orphan"), Root: proof.Seal.Root, Batches: 2, Records: 200,
		FirstTimestamp: time.Now().Add(-time.Minute).UTC(), LastTimestamp: time.Now().UTC()}
	if _, err := env.as(contract.RoleService).SealBatches(ctx, orphan); err != nil {
		t.Fatal(err)
	}
	for found := false; !found; {
		if ctx.Err() != nil {
			t.Fatalf("no integrity alert for seal %s, which the batch index does not hold", orphan.ID)
		}
		time.Sleep(100 * time.Millisecond)
		if alerts, err = analyst.ListAlerts(ctx, contract.ListAlertsArgs{Kind: contract.AlertIntegrity}); err != nil {
			t.Fatal(err)
		}
		for _, a := range alerts {
			found = found || strings.Contains(a.Evidence.Detail, "seal "+orphan.ID+" on the ledger")
		}
	}
	rs, err := integrity.Replay(ctx, analyst, integrity.ReplayRequest{Kafka: env.kafka, Topic: env.topics.Flows, LeafTopic: env.topics.Leaves, Partition: 1, From: 0, To: -1})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rs {
		switch {
		case r.AnchorID == target.ID && r.Status != integrity.RangeMismatched:
			t.Errorf("replay: the altered seal's batch %s is %s", r.AnchorID, r.Status)
		case r.FirstOffset <= victim.FirstOffset && r.LastOffset >= victim.LastOffset && r.Status != integrity.RangeUnanchored:
			t.Errorf("replay: the deleted seal's offsets %d..%d are %s", r.FirstOffset, r.LastOffset, r.Status)
		case r.AnchorID != target.ID && r.Status == integrity.RangeMismatched:
			t.Errorf("replay: %s (%d..%d) is mismatched: %s", r.AnchorID, r.FirstOffset, r.LastOffset, r.Detail)
		}
	}
}

// alterSealedBatch rewrites a seal's record in the batch index with one
// batch's Merkle root replaced, its leaf in the record left as it was.
func alterSealedBatch(t *testing.T, ctx context.Context, env *embeddedDefault, topic, seal, anchorID string) {
	t.Helper()
	r := env.kafka.Reader(kafka.ReaderConfig{Topic: topic, Partition: 0, MaxWait: 100 * time.Millisecond})
	defer r.Close()
	var rec struct {
		Batches []map[string]any `json:"batches"`
		Leaves  []string         `json:"leaves"`
	}
	found := false
	for !found {
		m, err := r.ReadMessage(ctx)
		if err != nil {
			t.Fatalf("seal %s not found in %s: %v", seal, topic, err)
		}
		if string(m.Key) == "@seal/"+seal {
			found = true
			if err := json.Unmarshal(m.Value, &rec); err != nil {
				t.Fatal(err)
			}
		}
	}
	altered := false
	for _, b := range rec.Batches {
		if b["id"] == anchorID {
			other := [32]byte{1}
			b["merkle_root"], altered = hex.EncodeToString(other[:]), true
		}
	}
	if !altered {
		t.Fatalf("seal %s does not hold %s", seal, anchorID)
	}
	v, err := json.Marshal(rec)
	if err != nil {
		t.Fatal(err)
	}
	w := &kafka.Writer{Addr: env.kafka.Addr(), Topic: topic, Balancer: &kafka.Hash{}, Transport: env.kafka.Transport(), RequiredAcks: kafka.RequireAll, BatchTimeout: time.Millisecond}
	defer w.Close()
	if err := w.WriteMessages(ctx, kafka.Message{Key: []byte("@seal/" + seal), Value: v}); err != nil {
		t.Fatal(err)
	}
}

// TestBatchIndexLetsGoOfExpiredSeals checks that the batch index follows
// the retained history: a seal's record goes once every batch it holds had
// its leaf hashes deleted (the audit found them expired), not before.
func TestBatchIndexLetsGoOfExpiredSeals(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	env := startEmbeddedDefault(t, 1)
	if err := pipeline.EnsureStateTopic(ctx, env.kafka, 1, env.topics.Leaves); err != nil {
		t.Fatal(err)
	}
	index := integrity.NewLeafTopic(env.kafka, env.topics.Leaves)
	defer index.Close()
	x := integrity.NewAnchors(env.as(contract.RoleService), index)
	t0 := time.Date(2026, 11, 26, 0, 0, 0, 0, time.UTC)
	var batches []contract.Anchor
	for i, p := range []int32{0, 1, 0} {
		leaves := [][32]byte{{byte(i), 1}, {byte(i), 2}}
		root := integrity.MerkleRoot(leaves)
		a := contract.Anchor{Stream: "iot.flows@x", Partition: p, FirstOffset: int64(10 * i), LastOffset: int64(10*i + 1), Count: 2,
			MerkleRoot: hex.EncodeToString(root[:]), FirstTimestamp: t0, LastTimestamp: t0}
		a.ID = contract.AnchorID(a.Stream, a.Partition, a.FirstOffset, a.LastOffset)
		if err := index.Put(ctx, a.ID, leaves); err != nil {
			t.Fatal(err)
		}
		batches = append(batches, a)
	}
	seal, err := integrity.NewSeal(t0, batches)
	if err != nil {
		t.Fatal(err)
	}
	if err := index.PutSeal(ctx, seal.ID, batches); err != nil {
		t.Fatal(err)
	}
	if _, err := env.as(contract.RoleService).SealBatches(ctx, seal); err != nil {
		t.Fatal(err)
	}
	// A record under an id no seal could have, and one never sealed: no
	// reader believes them, and neither stops the listing.
	if err := index.PutSeal(ctx, "not/a seal", batches); err != nil {
		t.Fatal(err)
	}
	if err := index.PutSeal(ctx, contract.NewSealID(t0, "never"), batches[:1]); err != nil {
		t.Fatal(err)
	}
	listed, err := x.List(ctx, "iot.flows@x", 0, 0, -1)
	if err != nil || len(listed) != 2 || listed[1].Seal != seal.ID || listed[1].Broken != "" {
		t.Fatalf("partition 0 lists %+v, %v: want its two sealed batches", listed, err)
	}
	for i, a := range batches {
		if err := index.Forget(ctx, a.ID); err != nil {
			t.Fatal(err)
		}
		missing, err := x.MissingSeals(ctx, []string{seal.ID})
		if err != nil {
			t.Fatal(err)
		}
		if has, last := len(missing) == 0, i == len(batches)-1; has == last {
			t.Fatalf("after forgetting %d of %d batches the index holds the seal: %v", i+1, len(batches), has)
		}
	}
	if listed, err := x.List(ctx, "iot.flows@x", 0, 0, -1); err != nil || len(listed) != 0 {
		t.Errorf("partition 0 lists %+v, %v after its seal expired", listed, err)
	}
}

// TestAnchorsBeforeSealsStillVerify checks that a ledger written before
// seals keeps verifying: a range anchored on its own under the bare topic
// name (before streams carried ids) and one anchored with AnchorBatches
// under the stream are listed beside sealed ones, replay verified, and a
// record of them is proven to the anchor's root with no seal.
func TestAnchorsBeforeSealsStillVerify(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	env := startEmbeddedDefault(t, 1)
	writeMeterFlows(t, ctx, env, 0, 300)
	r := env.kafka.Reader(kafka.ReaderConfig{Topic: env.topics.Flows, Partition: 0, MaxWait: 100 * time.Millisecond})
	defer r.Close()
	var leaves [][32]byte
	var times []time.Time
	for len(leaves) < 300 {
		m, err := r.ReadMessage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		leaves = append(leaves, integrity.LeafHash(m.Offset, m.Time.UnixMilli(), m.Key, m.Value))
		times = append(times, m.Time)
	}
	stream := flowStream(t, ctx, env)
	anchor := func(stream string, first, last int64) contract.Anchor {
		root := integrity.MerkleRoot(leaves[first : last+1])
		return contract.Anchor{Stream: stream, Partition: 0, FirstOffset: first, LastOffset: last, Count: last - first + 1,
			MerkleRoot: hex.EncodeToString(root[:]), FirstTimestamp: times[first].UTC(), LastTimestamp: times[last].UTC()}
	}
	service := env.as(contract.RoleService)
	bare, err := service.AnchorBatch(ctx, anchor(env.topics.Flows, 0, 149))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := service.AnchorBatches(ctx, []contract.Anchor{anchor(stream, 150, 299)}); err != nil {
		t.Fatal(err)
	}
	rs, err := integrity.Replay(ctx, env.as(contract.RoleAnalyst), integrity.ReplayRequest{Kafka: env.kafka, Topic: env.topics.Flows, Partition: 0, From: 0, To: -1})
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 2 || rs[0].Status != integrity.RangeVerified || rs[1].Status != integrity.RangeVerified || rs[0].Seal != "" || rs[1].LastOffset != 299 {
		t.Fatalf("replay of anchors written before seals: %+v", rs)
	}
	got, err := env.anchors(t, contract.RoleAnalyst).Get(ctx, bare.ID)
	if err != nil || got.TxID != bare.TxID || got.Seal != "" {
		t.Fatalf("anchor %s: %+v, %v", bare.ID, got, err)
	}
	proof, err := integrity.Prove(ctx, env.as(contract.RoleAnalyst), env.kafka, "", env.topics.Flows, "", 0, 160)
	if err != nil {
		t.Fatal(err)
	}
	if proof.Seal != nil || proof.Check() != nil || proof.AnchorID != contract.AnchorID(stream, 0, 150, 299) {
		t.Fatalf("proof of a record anchored before seals: %+v", proof)
	}
}
