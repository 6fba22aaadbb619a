package pipeline_test

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/chainwatch/chainwatch/ledgerclient/contract"
	"github.com/chainwatch/chainwatch/pipeline"
	"github.com/chainwatch/chainwatch/pipeline/integrity"
	"github.com/chainwatch/chainwatch/simulator"
)

// TestIntegrityFindingInWarmupDoesNotStopDetection: a record of the
// warm-up history is served changed after it was anchored (the embedded
// broker's forgery hook, as a compromised broker would), so the finding is
// there before any model exists. The first models still train — on the
// windows whose records verify, the changed range left out — every profile
// gets one, windows are scored, and the audit raises the integrity alert.
func TestIntegrityFindingInWarmupDoesNotStopDetection(t *testing.T) {
	if testing.Short() {
		t.Skip("service run")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	env := startEmbeddedDefault(t, 2)
	start := time.Date(2026, 11, 20, 0, 0, 0, 0, time.UTC)
	sim, err := simulator.New(simulator.Config{Kafka: env.kafka, Devices: 16, Seed: 9, Speed: -1,
		History: 3 * time.Hour, Duration: 40 * time.Minute, Start: start, FirstAttackAfter: 24 * time.Hour, TrustEvery: -1}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := sim.Register(ctx, env.as(contract.RoleManufacturer), env.as(contract.RoleOperator)); err != nil {
		t.Fatal(err)
	}
	st, err := sim.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Offset 200 of partition 0 is early in the warm-up history.
	if err := env.broker.ForgeRecord(ctx, env.topics.Flows, 0, 200, func(v []byte) []byte {
		out := append([]byte(nil), v...)
		out[len(out)-3] ^= 1
		return out
	}); err != nil {
		t.Fatal(err)
	}
	svc := env.startService(t, ctx, pipeline.ServiceConfig{
		Detector: pipeline.DetectorConfig{Warmup: 2 * time.Hour, Seed: 1},
		Audit:    pipeline.AuditConfig{Interval: time.Second}})
	m := svc.Metrics()
	for m.Summary.RecordsConsumed.Load() < st.Records && ctx.Err() == nil {
		time.Sleep(50 * time.Millisecond)
	}
	var integrityAlerts []contract.Alert
	for ctx.Err() == nil {
		integrityAlerts, err = env.as(contract.RoleAnalyst).ListAlerts(ctx, contract.ListAlertsArgs{Kind: contract.AlertIntegrity})
		if err != nil {
			t.Fatal(err)
		}
		// The first models train as each profile's warm-up verifies, in
		// the background: wait for every profile to be judging.
		scoring := 0
		for _, p := range []string{"meter", "camera", "plc", "gateway"} {
			if testutil.ToFloat64(m.WindowsScored.WithLabelValues(p)) > 0 {
				scoring++
			}
		}
		if len(integrityAlerts) > 0 && scoring == 4 && m.Summary.WindowsHeld.Load() == 0 {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	excluded := 0.0
	for _, p := range []string{"meter", "camera", "plc", "gateway"} {
		excluded += testutil.ToFloat64(m.TrainingExcluded.WithLabelValues(p))
	}
	t.Logf("%d windows scored, %v warm-up windows excluded, %d integrity alerts", m.Summary.WindowsScored.Load(), excluded, len(integrityAlerts))
	if m.Summary.WindowsScored.Load() == 0 {
		t.Fatal("no window scored: the integrity finding stopped detection")
	}
	if excluded == 0 {
		t.Error("no warm-up window was left out, though a range of them no longer verifies")
	}
	if len(integrityAlerts) == 0 {
		t.Error("the audit raised no integrity alert for the changed record")
	}
	for _, p := range []string{"meter", "camera", "plc", "gateway"} {
		if n := testutil.ToFloat64(m.WindowsScored.WithLabelValues(p)); n == 0 {
			t.Errorf("profile %s scored no window", p)
		}
	}

	// Reading the same history back for a data scientist (features
	// export, train) leaves out exactly the windows the forged record is
	// in, lists its range, and gives the same windows on every read.
	reg2, err := pipeline.SnapshotRegistry(ctx, env.as(contract.RoleAnalyst))
	if err != nil {
		t.Fatal(err)
	}
	read := func() ([]pipeline.HistoryWindow, pipeline.HistoryReport) {
		var ws []pipeline.HistoryWindow
		rep, err := pipeline.ReadHistory(ctx, pipeline.HistoryRequest{Kafka: env.kafka, Ledger: env.as(contract.RoleAnalyst), Registry: reg2,
			Topic: env.topics.Flows, Since: start, Until: start.Add(3 * time.Hour)}, func(w *pipeline.HistoryWindow) error {
			c := *w
			c.Anchors = append([]string(nil), w.Anchors...)
			ws = append(ws, c)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return ws, rep
	}
	first, rep := read()
	again, _ := read()
	t.Logf("history read back: %d windows, %d excluded, ranges %+v", rep.Windows, rep.ExcludedWindows, rep.Excluded)
	if len(rep.Excluded) != 1 || rep.Excluded[0].Partition != 0 || rep.Excluded[0].FirstOffset > 200 || rep.Excluded[0].LastOffset < 200 ||
		rep.Excluded[0].Status != integrity.RangeMismatched {
		t.Errorf("excluded ranges %+v, want the one anchored range of partition 0 holding offset 200", rep.Excluded)
	}
	if rep.ExcludedWindows == 0 || len(first) == 0 {
		t.Errorf("%d windows read, %d excluded", len(first), rep.ExcludedWindows)
	}
	bad := rep.Excluded[0]
	for _, w := range first {
		if len(w.Anchors) == 0 {
			t.Fatalf("window %+v names no anchor", w)
		}
		if w.Partition == bad.Partition && w.FirstOffset <= bad.LastOffset && bad.FirstOffset <= w.LastOffset {
			t.Fatalf("window of %s at %s has records in the forged range", w.Device, w.Start)
		}
	}
	if len(again) != len(first) {
		t.Fatalf("two reads of the same history: %d and %d windows", len(first), len(again))
	}
	for i := range first {
		if first[i].Device != again[i].Device || first[i].Start != again[i].Start || first[i].Vector != again[i].Vector {
			t.Fatalf("two reads of the same history differ at window %d: %+v and %+v", i, first[i], again[i])
		}
	}
}
