package pipeline_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/chainwatch/chainwatch/ledgerclient/contract"
	"github.com/chainwatch/chainwatch/models/features"
	"github.com/chainwatch/chainwatch/pipeline"
	"github.com/chainwatch/chainwatch/simulator"
)

// TestScheduledRetrainingPromotesWhatIsNotWorse: after a firmware update
// changes the cameras' traffic, a retraining round trains a candidate per
// profile on the latest verified history, compares it with the active
// model on the held-back windows, records the figures and the decision on
// the ledger and promotes the camera candidate, which the running service
// swaps in. A second round on the same history trains the same model and
// changes nothing.
func TestScheduledRetrainingPromotesWhatIsNotWorse(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the service")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	env := startEmbeddedDefault(t, 2)
	log := testLogger(t)
	t0 := time.Date(2026, 11, 3, 0, 0, 0, 0, time.UTC)
	simulate := func(cfg simulator.Config) {
		t.Helper()
		cfg.Seed, cfg.Devices, cfg.TrustEvery = 4, 16, -1
		env.simulate(t, ctx, cfg)
	}
	svc := pipeline.NewService(pipeline.ServiceConfig{
		Kafka: env.kafka, ModelDir: filepath.Join(env.dir, "models"), OutboxPath: filepath.Join(env.dir, "outbox.db"),
		Detector: pipeline.DetectorConfig{Warmup: 2 * time.Hour, Seed: 1, ModelPoll: 200 * time.Millisecond},
	}, env.as(contract.RoleService), prometheus.NewRegistry(), log)
	if err := svc.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer svc.Shutdown(context.Background())

	simulate(simulator.Config{Start: t0.Add(-3 * time.Hour), History: 3 * time.Hour, Duration: time.Minute, FirstAttackAfter: time.Hour})
	settle(t, ctx, svc)
	for _, p := range simulator.Profiles {
		for svc.ModelHash(p.Name) == "" {
			if ctx.Err() != nil {
				t.Fatalf("no first model of %s", p.Name)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	first := svc.ModelHash("camera")
	simulate(simulator.Config{Resume: true, History: -1, Duration: 3 * time.Hour, FirstAttackAfter: 4 * time.Hour,
		Shift: &simulator.Shift{Profile: "camera", Factor: 30, NewCloud: true}})
	settle(t, ctx, svc)
	waitAnchored(t, ctx, env, 2)

	operator := env.as(contract.RoleOperator)
	topic := pipeline.NewModelTopic(env.kafka, pipeline.Topics{}.WithDefaults().Models)
	defer topic.Close()
	round := func() map[string]pipeline.RetrainDecision {
		t.Helper()
		reg, err := pipeline.SnapshotRegistry(ctx, operator)
		if err != nil {
			t.Fatal(err)
		}
		ds, err := pipeline.RetrainRound(ctx, pipeline.RetrainRequest{
			Config:   pipeline.RetrainConfig{History: 2 * time.Hour, Holdout: 40 * time.Minute},
			Detector: pipeline.DetectorConfig{Seed: 1}, Kafka: env.kafka, Ledger: operator, Registry: reg,
			Store: &pipeline.ModelStore{Dir: t.TempDir(), Ledger: operator, Share: topic}, Topic: env.topics.Flows,
			Profiles: []string{"camera", "meter"},
		})
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]pipeline.RetrainDecision{}
		for _, d := range ds {
			out[d.Profile] = d
		}
		return out
	}
	decisions := round()
	cam := decisions["camera"]
	if cam.CandidateScore == nil || cam.ActiveScore == nil {
		t.Fatalf("camera: no comparison: %+v", cam)
	}
	t.Logf("camera: %s; candidate %d false incidents (%.0f per 1,000 device-hours), active %d (%.0f)", cam.Reason,
		cam.CandidateScore.FalseIncidents, cam.CandidateScore.FalseIncidentsPer1000D, cam.ActiveScore.FalseIncidents, cam.ActiveScore.FalseIncidentsPer1000D)
	t.Logf("meter: promoted %v: %s", decisions["meter"].Promoted, decisions["meter"].Reason)
	if !cam.Promoted || cam.Active != first || cam.Candidate == first {
		t.Fatalf("camera: %+v, want its candidate promoted over %s", cam, first)
	}
	if cam.ActiveScore.FalseIncidents == 0 {
		t.Errorf("the old camera model raised no false incident on the changed traffic: nothing was shown")
	}
	if decisions["meter"].CandidateScore == nil {
		t.Errorf("meter: no comparison: %+v", decisions["meter"])
	}
	// The decision and its figures are on the ledger.
	listed, err := operator.ListModels(ctx, "camera")
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, m := range listed {
		if m.Hash == cam.Candidate {
			found = true
			if !m.Active || m.Metrics["retrain_promoted"] != 1 || m.Metrics["retrain_held_out_windows"] == 0 || len(m.TrainingAnchors) == 0 {
				t.Errorf("ledger record of the camera candidate: %+v", m)
			}
		}
	}
	if !found {
		t.Fatal("the camera candidate is not registered")
	}
	for svc.ModelHash("camera") != cam.Candidate {
		if ctx.Err() != nil {
			t.Fatal("the service never swapped the promoted camera model in")
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The same history trains the same model: nothing to decide.
	if again := round()["camera"]; again.Candidate != cam.Candidate || again.Promoted {
		t.Errorf("a second round on the same history: %+v", again)
	}

	// An upgrade: the active meter model is of an older feature schema,
	// which the service refuses (the profile goes unscored). The round
	// cannot compare with it and promotes the candidate, which the service
	// swaps in.
	store := &pipeline.ModelStore{Dir: t.TempDir(), Ledger: operator, Share: topic}
	old, err := store.Active(ctx, "meter")
	if err != nil || old == nil {
		t.Fatalf("active meter model: %v", err)
	}
	old.Behaviour.Schema = features.SchemaVersion - 1
	if err := store.Save(ctx, old); err != nil {
		t.Fatal(err)
	}
	if _, err := operator.RegisterModel(ctx, contract.Model{Hash: old.Hash(), Profile: "meter", Algorithm: old.Algorithm}); err != nil {
		t.Fatal(err)
	}
	if _, err := operator.PromoteModel(ctx, old.Hash()); err != nil {
		t.Fatal(err)
	}
	meter := round()["meter"]
	t.Logf("meter after an upgrade: promoted %v: %s", meter.Promoted, meter.Reason)
	if !meter.Promoted || meter.Active != old.Hash() || meter.ActiveScore != nil || meter.CandidateScore == nil ||
		!strings.Contains(meter.Reason, "feature schema") {
		t.Fatalf("meter, its active model of an older schema: %+v, want its candidate promoted without a comparison", meter)
	}
	for svc.ModelHash("meter") != meter.Candidate {
		if ctx.Err() != nil {
			t.Fatal("the service never swapped the promoted meter model in")
		}
		time.Sleep(50 * time.Millisecond)
	}
}
