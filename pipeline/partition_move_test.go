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
	"github.com/chainwatch/chainwatch/simulator"
)

// TestPartitionsMovingBetweenInstancesChangeNoAlert runs the same simulated
// traffic through two deployments with the same models: one instance alone
// (the reference), and a consumer group whose partitions move twice while
// it runs — a second instance joins, then the first leaves. The moved
// partitions resume from the state store (device histories, watermarks,
// windows closed early), so the group must raise exactly the reference's
// alerts, each once on its alerts topic.
func TestPartitionsMovingBetweenInstancesChangeNoAlert(t *testing.T) {
	if testing.Short() {
		t.Skip("runs three services")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	env := startEmbeddedDefault(t, 4)
	log := testLogger(t)
	models := filepath.Join(env.dir, "models")
	start := time.Date(2026, 11, 20, 0, 0, 0, 0, time.UTC)
	simulate := func(cfg simulator.Config) {
		t.Helper()
		cfg.Kafka, cfg.Seed, cfg.Devices, cfg.Speed = env.kafka, 11, 16, -1
		sim, err := simulator.New(cfg, log)
		if err != nil {
			t.Fatal(err)
		}
		if err := sim.Register(ctx, env.as(contract.RoleManufacturer), env.as(contract.RoleOperator)); err != nil {
			t.Fatal(err)
		}
		if _, err := sim.Run(ctx); err != nil {
			t.Fatal(err)
		}
	}
	service := func(name string, topics pipeline.Topics) *pipeline.Service {
		t.Helper()
		topics.Alerts, topics.State = name+".alerts", name+".state"
		svc := pipeline.NewService(pipeline.ServiceConfig{
			Kafka: env.kafka, Topics: topics, ModelDir: models,
			OutboxPath: filepath.Join(env.dir, fmt.Sprintf("outbox-%s-%d.db", name, time.Now().UnixNano())),
			Detect:     pipeline.DetectConfig{GroupID: name + "-detect", CommitInterval: 100 * time.Millisecond},
			Telemetry:  pipeline.TelemetryConfig{GroupID: name + "-telemetry"},
			Detector:   pipeline.DetectorConfig{Warmup: 2 * time.Hour, Seed: 1},
		}, env.as(contract.RoleService), prometheus.NewRegistry(), log)
		if err := svc.Start(ctx); err != nil {
			t.Fatal(err)
		}
		return svc
	}
	stop := func(svc *pipeline.Service) {
		t.Helper()
		sctx, scancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer scancel()
		if err := svc.Shutdown(sctx); err != nil {
			t.Fatalf("shutdown: %v", err)
		}
	}

	// Models for every profile, trained on three attack-free hours in a
	// topic of their own and registered on the ledger.
	train := pipeline.Topics{Flows: "train.flows", Telemetry: "train.telemetry"}
	if err := pipeline.EnsureTopics(ctx, env.kafka, 4, 1, train.Flows, train.Telemetry); err != nil {
		t.Fatal(err)
	}
	simulate(simulator.Config{Topic: train.Flows, TelemetryTopic: train.Telemetry, Start: start.Add(-3 * time.Hour), History: 3 * time.Hour, Duration: time.Minute})
	trainer := service("train", train)
	for _, p := range simulator.Profiles {
		for {
			if m, err := env.as(contract.RoleAnalyst).GetActiveModel(ctx, p.Name); err == nil && m.Hash != "" {
				break
			}
			if ctx.Err() != nil {
				t.Fatalf("no model for %s: %v", p.Name, ctx.Err())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	stop(trainer)

	// The traffic under test arrives in three parts, with attacks and
	// trust scenarios.
	part := func(first bool) {
		cfg := simulator.Config{Start: start, History: -1, Duration: 40 * time.Minute, Resume: !first,
			FirstAttackAfter: 4 * time.Minute, AttackEvery: 9 * time.Minute, FirstTrustAfter: 6 * time.Minute, TrustEvery: 9 * time.Minute}
		simulate(cfg)
	}
	flows := pipeline.Topics{}
	part(true)
	first := service("moving", flows)
	settle(t, ctx, first)
	second := service("moving", flows) // takes half of the partitions over
	settle(t, ctx, first, second)
	part(false)
	settle(t, ctx, first, second)
	stop(first) // its partitions move to the second
	settle(t, ctx, second)
	part(false)
	settle(t, ctx, second)
	stop(second)

	reference := service("reference", flows)
	settle(t, ctx, reference)
	stop(reference)

	want := alertIDs(t, ctx, env.brokers[0], "reference.alerts")
	got := alertIDs(t, ctx, env.brokers[0], "moving.alerts")
	for id, n := range got {
		if n > 1 {
			t.Errorf("alert %s is on the moving group's alerts topic %d times", id, n)
		}
	}
	missing, extra := 0, 0
	for id := range want {
		if _, ok := got[id]; !ok {
			missing++
		}
	}
	for id := range got {
		if _, ok := want[id]; !ok {
			extra++
		}
	}
	t.Logf("reference: %d alerts; moving group: %d (%d missing, %d extra)", len(want), len(got), missing, extra)
	if len(want) == 0 {
		t.Fatal("the reference raised no alert: nothing was compared")
	}
	if missing > 0 || extra > 0 {
		t.Fatalf("the moving group raised %d alerts the reference did not and missed %d of its %d", extra, missing, len(want))
	}
}

// settle waits until the services have consumed everything in reach: their
// combined record count has stopped moving for a while.
func settle(t *testing.T, ctx context.Context, svcs ...*pipeline.Service) {
	t.Helper()
	count := func() (n int64) {
		for _, s := range svcs {
			n += s.Metrics().Summary.RecordsConsumed.Load()
		}
		return n
	}
	last, since := count(), time.Now()
	for time.Since(since) < 2*time.Second || last == 0 {
		if ctx.Err() != nil {
			t.Fatal("services did not settle")
		}
		time.Sleep(50 * time.Millisecond)
		if n := count(); n != last {
			last, since = n, time.Now()
		}
	}
}

// alertIDs counts each alert id on an alerts topic.
func alertIDs(t *testing.T, ctx context.Context, broker, topic string) map[string]int {
	t.Helper()
	conn, err := kafka.Dial("tcp", broker)
	if err != nil {
		t.Fatal(err)
	}
	parts, err := conn.ReadPartitions(topic)
	conn.Close()
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]int{}
	for _, p := range parts {
		last := countPartition(t, broker, topic, p.ID)
		if last == 0 {
			continue
		}
		r := kafka.NewReader(kafka.ReaderConfig{Brokers: []string{broker}, Topic: topic, Partition: p.ID, MaxWait: 50 * time.Millisecond})
		for {
			m, err := r.ReadMessage(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for _, h := range m.Headers {
				if h.Key == "chainwatch-alert-id" {
					ids[string(h.Value)]++
				}
			}
			if m.Offset >= last-1 {
				break
			}
		}
		r.Close()
	}
	return ids
}
