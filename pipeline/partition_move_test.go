package pipeline_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
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
	g := newGroupHarness(t, ctx, nil)
	flows := pipeline.Topics{}
	g.part(true)
	first := g.service("moving", flows)
	settle(t, ctx, first)
	second := g.service("moving", flows) // takes half of the partitions over
	settle(t, ctx, first, second)
	g.part(false)
	settle(t, ctx, first, second)
	g.stop(first) // its partitions move to the second
	settle(t, ctx, second)
	g.part(false)
	settle(t, ctx, second)
	g.stop(second)

	reference := g.service("reference", flows)
	settle(t, ctx, reference)
	g.stop(reference)
	sameAlerts(t, ctx, g.env.brokers[0], "reference.alerts", "moving.alerts")
}

// TestRestartsWithRecordsNotKeyedChangeNoAlert runs traffic produced
// round-robin — every device's records on every partition — through one
// instance stopped and started again twice, while devices' windows wait
// for their parts from other partitions (assembly.go), and through one
// instance that reads it all at once. The restarted instance resumes the
// waiting windows from its checkpoints and must raise exactly the
// reference's alerts, each once.
func TestRestartsWithRecordsNotKeyedChangeNoAlert(t *testing.T) {
	if testing.Short() {
		t.Skip("runs four services")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	g := newGroupHarness(t, ctx, &kafka.RoundRobin{})
	flows := pipeline.Topics{}
	for i := range 3 {
		g.part(i == 0)
		svc := g.service("restarted", flows)
		settle(t, ctx, svc)
		g.stop(svc)
	}
	reference := g.service("reference", flows)
	settle(t, ctx, reference)
	if n := testutil.ToFloat64(reference.Metrics().SplitDevices); n < 16 {
		t.Fatalf("%v devices on several partitions: the records were keyed after all", n)
	}
	g.stop(reference)
	sameAlerts(t, ctx, g.env.brokers[0], "reference.alerts", "restarted.alerts")
}

// TestRestartDuringAFleetEpisodeChangesNoAlert runs a fleet of 48 whose
// 12 PLCs all triple their traffic 34 minutes in — a fleet episode, open
// for about a quarter of an hour — through one instance stopped at minute
// 40 and started again, and through one instance that reads it all at
// once. The restarted instance resumes the episode from the state store
// and must raise exactly the reference's alerts: without it, it opened the
// episode again and reported PLCs the episode had absorbed (6 alerts the
// reference did not raise, 1 missed).
func TestRestartDuringAFleetEpisodeChangesNoAlert(t *testing.T) {
	if testing.Short() {
		t.Skip("runs three services")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	g := newGroupHarnessOf(t, ctx, nil, 48)
	flows := pipeline.Topics{}
	g.shift = &simulator.Shift{Profile: "plc", After: 34 * time.Minute, Factor: 3}
	g.part(true)
	svc := g.service("restarted", flows)
	settle(t, ctx, svc)
	g.stop(svc)
	g.shift.After = 0 // from the resumed part's start on
	g.part(false)
	svc = g.service("restarted", flows)
	settle(t, ctx, svc)
	g.stop(svc)

	reference := g.service("reference", flows)
	settle(t, ctx, reference)
	g.stop(reference)
	absorbed := testutil.ToFloat64(reference.Metrics().FleetAbsorbed.WithLabelValues("plc"))
	t.Logf("the PLCs' fleet episode absorbed %v of their incidents", absorbed)
	if absorbed == 0 {
		t.Fatal("the PLCs' step opened no fleet episode that absorbed an incident: the restart was not tested during one")
	}
	sameAlerts(t, ctx, g.env.brokers[0], "reference.alerts", "restarted.alerts")
}

// groupHarness runs simulated traffic through services sharing an
// embedded default, with models for every profile trained beforehand on
// three attack-free hours of their own topic and active on the ledger.
type groupHarness struct {
	t        *testing.T
	ctx      context.Context
	env      *embeddedDefault
	models   string
	balancer kafka.Balancer
	start    time.Time
	devices  int
	// shift is the simulator's Shift for the parts under test.
	shift *simulator.Shift
}

func newGroupHarness(t *testing.T, ctx context.Context, balancer kafka.Balancer) *groupHarness {
	return newGroupHarnessOf(t, ctx, balancer, 16)
}

// newGroupHarnessOf is newGroupHarness for a fleet of devices devices.
func newGroupHarnessOf(t *testing.T, ctx context.Context, balancer kafka.Balancer, devices int) *groupHarness {
	env := startEmbeddedDefault(t, 4)
	g := &groupHarness{t: t, ctx: ctx, env: env, models: filepath.Join(env.dir, "models"), balancer: balancer,
		start: time.Date(2026, 11, 20, 0, 0, 0, 0, time.UTC), devices: devices}
	train := pipeline.Topics{Flows: "train.flows", Telemetry: "train.telemetry"}
	if err := pipeline.EnsureTopics(ctx, env.kafka, 4, 1, train.Flows, train.Telemetry); err != nil {
		t.Fatal(err)
	}
	g.simulate(simulator.Config{Topic: train.Flows, TelemetryTopic: train.Telemetry, Start: g.start.Add(-3 * time.Hour), History: 3 * time.Hour, Duration: time.Minute})
	trainer := g.service("train", train)
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
	g.stop(trainer)
	return g
}

// part produces 40 minutes of the traffic under test, with attacks and
// trust scenarios, the first part or the next.
func (g *groupHarness) part(first bool) {
	g.simulate(simulator.Config{Start: g.start, History: -1, Duration: 40 * time.Minute, Resume: !first,
		FirstAttackAfter: 4 * time.Minute, AttackEvery: 9 * time.Minute, FirstTrustAfter: 6 * time.Minute, TrustEvery: 9 * time.Minute,
		Shift: g.shift})
}

// simulate produces the harness's fleet, seed 11, as fast as it can.
func (g *groupHarness) simulate(cfg simulator.Config) {
	g.t.Helper()
	cfg.Kafka, cfg.Seed, cfg.Devices, cfg.Speed, cfg.Balancer = g.env.kafka, 11, g.devices, -1, g.balancer
	sim, err := simulator.New(cfg, testLogger(g.t))
	if err != nil {
		g.t.Fatal(err)
	}
	if err := sim.Register(g.ctx, g.env.as(contract.RoleManufacturer), g.env.as(contract.RoleOperator)); err != nil {
		g.t.Fatal(err)
	}
	if _, err := sim.Run(g.ctx); err != nil {
		g.t.Fatal(err)
	}
}

// service starts an instance of the group name, writing its alerts and
// state to topics of its own.
func (g *groupHarness) service(name string, topics pipeline.Topics) *pipeline.Service {
	g.t.Helper()
	topics.Alerts, topics.State = name+".alerts", name+".state"
	svc := pipeline.NewService(pipeline.ServiceConfig{
		Kafka: g.env.kafka, Topics: topics, ModelDir: g.models,
		OutboxPath: filepath.Join(g.env.dir, fmt.Sprintf("outbox-%s-%d.db", name, time.Now().UnixNano())),
		Detect:     pipeline.DetectConfig{GroupID: name + "-detect", CommitInterval: 100 * time.Millisecond},
		Telemetry:  pipeline.TelemetryConfig{GroupID: name + "-telemetry"},
		Detector:   pipeline.DetectorConfig{Warmup: 2 * time.Hour, Seed: 1},
	}, g.env.as(contract.RoleService), prometheus.NewRegistry(), testLogger(g.t))
	if err := svc.Start(g.ctx); err != nil {
		g.t.Fatal(err)
	}
	return svc
}

func (g *groupHarness) stop(svc *pipeline.Service) {
	g.t.Helper()
	sctx, scancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer scancel()
	if err := svc.Shutdown(sctx); err != nil {
		g.t.Fatalf("shutdown: %v", err)
	}
}

// sameAlerts fails the test unless the alerts topic got holds each alert of
// want exactly once, and nothing else.
func sameAlerts(t *testing.T, ctx context.Context, broker, want, got string) {
	t.Helper()
	w := alertIDs(t, ctx, broker, want)
	g := alertIDs(t, ctx, broker, got)
	for id, n := range g {
		if n > 1 {
			t.Errorf("alert %s is on %s %d times", id, got, n)
		}
	}
	missing, extra := 0, 0
	for id := range w {
		if _, ok := g[id]; !ok {
			missing++
		}
	}
	for id := range g {
		if _, ok := w[id]; !ok {
			extra++
		}
	}
	t.Logf("%s: %d alerts; %s: %d (%d missing, %d extra)", want, len(w), got, len(g), missing, extra)
	if len(w) == 0 {
		t.Fatal("the reference raised no alert: nothing was compared")
	}
	if missing > 0 || extra > 0 {
		t.Fatalf("%s raised %d alerts %s did not and missed %d of its %d", got, extra, want, missing, len(w))
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
