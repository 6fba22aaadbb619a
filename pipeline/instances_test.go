package pipeline_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/chainwatch/chainwatch/ledgerclient/contract"
	"github.com/chainwatch/chainwatch/pipeline"
	"github.com/chainwatch/chainwatch/simulator"
)

// TestEveryInstanceScoresWithTheGroupsModels runs two instances of one
// consumer group on one ledger, each with a model directory of its own
// (as on two machines). The first trains and promotes every profile's
// first model; the second joins, takes half of the partitions and must
// score their windows with those models, fetched from the model topic,
// without training its own. A model an operator promotes later must reach
// both without a restart.
func TestEveryInstanceScoresWithTheGroupsModels(t *testing.T) {
	if testing.Short() {
		t.Skip("runs two services")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	env := startEmbeddedDefault(t, 4)
	log := testLogger(t)
	start := time.Date(2026, 11, 20, 0, 0, 0, 0, time.UTC)
	simulate := func(cfg simulator.Config) {
		t.Helper()
		cfg.Seed, cfg.Devices = 5, 16
		env.simulate(t, ctx, cfg)
	}
	service := func(name string) (*pipeline.Service, string) {
		t.Helper()
		dir := filepath.Join(env.dir, name)
		svc := pipeline.NewService(pipeline.ServiceConfig{
			Kafka: env.kafka, ModelDir: filepath.Join(dir, "models"),
			OutboxPath: filepath.Join(dir, "outbox.db"),
			Detect:     pipeline.DetectConfig{GroupID: "group-detect", CommitInterval: 100 * time.Millisecond},
			Telemetry:  pipeline.TelemetryConfig{GroupID: "group-telemetry"},
			Detector:   pipeline.DetectorConfig{Warmup: 2 * time.Hour, Seed: 1, ModelPoll: 200 * time.Millisecond},
		}, env.as(contract.RoleService), prometheus.NewRegistry(), log)
		if err := svc.Start(ctx); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			sctx, scancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer scancel()
			_ = svc.Shutdown(sctx)
		})
		return svc, filepath.Join(dir, "models")
	}
	analyst := env.as(contract.RoleAnalyst)
	active := func(profile string) string {
		m, err := analyst.GetActiveModel(ctx, profile)
		if err != nil {
			return ""
		}
		return m.Hash
	}

	// The first instance warms up on three hours and promotes a model per
	// profile.
	simulate(simulator.Config{Start: start.Add(-3 * time.Hour), History: 3 * time.Hour, Duration: time.Minute})
	first, _ := service("first")
	settle(t, ctx, first)
	for _, p := range simulator.Profiles {
		for active(p.Name) == "" {
			if ctx.Err() != nil {
				t.Fatalf("no model for %s", p.Name)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}

	// The second joins with an empty model directory; new traffic arrives
	// on every partition.
	second, secondModels := service("second")
	settle(t, ctx, first, second)
	simulate(simulator.Config{Start: start, History: -1, Duration: 20 * time.Minute, Resume: true})
	settle(t, ctx, first, second)

	for name, svc := range map[string]*pipeline.Service{"first": first, "second": second} {
		scored := svc.Metrics().Summary.WindowsScored.Load()
		t.Logf("%s instance: %d records, %d windows scored", name, svc.Metrics().Summary.RecordsConsumed.Load(), scored)
		if scored == 0 {
			t.Errorf("the %s instance scored no window", name)
		}
		if bad := svc.Unscorable(); len(bad) > 0 {
			t.Errorf("the %s instance cannot score %v", name, bad)
		}
	}
	if second.Metrics().Summary.RecordsConsumed.Load() == 0 {
		t.Fatal("the second instance took no partition: nothing was shown")
	}
	// The second trained nothing of its own: it scored with the group's
	// models, fetched from the model topic into its directory.
	for _, p := range simulator.Profiles {
		switch second.ModelHash(p.Name) {
		case "":
			continue // no device of this profile on its partitions
		case active(p.Name):
		default:
			t.Errorf("%s: the second instance scores with %s, the ledger's active model is %s", p.Name, second.ModelHash(p.Name), active(p.Name))
		}
		store := pipeline.ModelStore{Dir: secondModels}
		if _, err := store.Load(ctx, active(p.Name)); err != nil {
			t.Errorf("%s: the second instance scores with the active model but its directory does not hold it: %v", p.Name, err)
		}
	}

	// An operator promotes a new model of one profile from a machine of
	// their own: it reaches both instances through the ledger and the
	// model topic.
	profile := simulator.Profiles[0].Name
	cur, err := (&pipeline.ModelStore{Dir: filepath.Join(env.dir, "first", "models")}).Load(ctx, active(profile))
	if err != nil {
		t.Fatal(err)
	}
	cur.CreatedAt = cur.CreatedAt.Add(time.Hour) // another artifact, another hash
	topic := pipeline.NewModelTopic(env.kafka, pipeline.Topics{}.WithDefaults().Models)
	defer topic.Close()
	operatorStore := &pipeline.ModelStore{Dir: t.TempDir(), Share: topic}
	if err := operatorStore.Save(ctx, cur); err != nil {
		t.Fatal(err)
	}
	operator := env.as(contract.RoleOperator)
	if _, err := operator.RegisterModel(ctx, contract.Model{Hash: cur.Hash(), Profile: profile, Algorithm: cur.Algorithm}); err != nil {
		t.Fatal(err)
	}
	if _, err := operator.PromoteModel(ctx, cur.Hash()); err != nil {
		t.Fatal(err)
	}
	promoted := time.Now()
	for name, svc := range map[string]*pipeline.Service{"first": first, "second": second} {
		for svc.ModelHash(profile) != cur.Hash() {
			if ctx.Err() != nil {
				t.Fatalf("the %s instance never swapped in the promoted model", name)
			}
			time.Sleep(50 * time.Millisecond)
		}
		t.Logf("%s instance runs the promoted model %.1f s after the promotion", name, time.Since(promoted).Seconds())
	}
}
