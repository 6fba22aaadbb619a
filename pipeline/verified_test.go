package pipeline

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/chainwatch/chainwatch/ledgerclient"
	"github.com/chainwatch/chainwatch/ledgerclient/contract"
	"github.com/chainwatch/chainwatch/ledgerclient/embedded"
	"github.com/chainwatch/chainwatch/models"
	"github.com/chainwatch/chainwatch/models/features"
	"github.com/chainwatch/chainwatch/pipeline/integrity"
)

// TestFirstModelWaitsForVerifiedHistory checks that a profile whose
// warm-up history cannot be verified yet gets no model and keeps warming
// up; once verification runs it trains on the windows whose records
// verify, leaving out those over a range changed since it was anchored,
// and cites the anchors that verified.
func TestFirstModelWaitsForVerifiedHistory(t *testing.T) {
	led, err := embedded.Open(filepath.Join(t.TempDir(), "ledger"), embedded.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer led.Close()
	store := &ModelStore{Dir: t.TempDir(), Ledger: ledgerclient.New(led.Client(embedded.LocalCaller(contract.RoleService)))}
	// The verifier runs in the background (it waits for the anchoring
	// stage): what it is asked and told goes through a lock.
	var mu sync.Mutex
	verified := false
	var asked []integrity.OffsetRange
	verifier := func(_ context.Context, ranges []integrity.OffsetRange) ([]string, []integrity.OffsetRange, error) {
		mu.Lock()
		defer mu.Unlock()
		asked = ranges
		if !verified {
			return nil, nil, errors.New("iot.flows/0 is not anchored up to offset 119 after 2m0s")
		}
		// Records 0..19 (the first ten windows) were changed after they
		// were anchored: left out, the rest trains.
		return []string{"iot.flows/0/20-139"}, []integrity.OffsetRange{{Partition: 0, First: 0, Last: 19}}, nil
	}
	metrics := NewMetrics(prometheus.NewRegistry())
	d := NewDetector(DetectorConfig{Warmup: time.Hour, MinTrainingWindows: 10}, store, verifier, "iot.flows",
		metrics, slog.New(slog.NewTextHandler(io.Discard, nil)))
	d.verifyRetry = 0 // retry at the next window, not 10 s later
	t0 := time.Date(2026, 11, 24, 0, 0, 0, 0, time.UTC)
	window := func(i int) *ClosedWindow {
		var v features.Vector
		v[features.Flows] = float64(3 + i%4)
		return &ClosedWindow{DeviceID: "m-1", Profile: "meter", Start: t0.Add(time.Duration(i) * time.Minute),
			End: t0.Add(time.Duration(i+1) * time.Minute), Vector: v, Partition: 0, FirstOffset: int64(i * 2), LastOffset: int64(i*2 + 1)}
	}
	score := func(i int) {
		if _, err := d.ScoreWindows(context.Background(), []ClosedWindow{*window(i)}, nil); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Millisecond) // the background verification's turn
	}
	for i := range 70 {
		score(i)
	}
	if d.Model("meter") != nil {
		t.Fatal("a model was trained on unverified history")
	}
	mu.Lock()
	if len(asked) != 1 || asked[0].First != 0 || asked[0].Last < 119 {
		t.Fatalf("verifier asked for %+v, want partition 0 from offset 0 through the warm-up", asked)
	}
	verified = true
	mu.Unlock()
	// The next windows start a verification and collect its result.
	for i := 70; i < 100 && d.Model("meter") == nil; i++ {
		score(i)
	}
	m := d.Model("meter")
	if m == nil || len(m.TrainingData) != 1 || m.TrainingData[0] != "iot.flows/0/20-139" {
		t.Fatalf("model after verification: %+v", m)
	}
	if n := testutil.ToFloat64(metrics.TrainingExcluded.WithLabelValues("meter")); n != 10 {
		t.Errorf("%v windows excluded from training, want the 10 over records 0..19", n)
	}
}

// A partition read ahead of the others: its windows past the warm-up span
// do not train the model (an attack there must not become normal), and
// they are scored, in time order, once the slower partition completes the
// warm-up.
func TestWindowsPastTheWarmupAreHeldAndScoredNotTrained(t *testing.T) {
	d := warmingDetector(t)
	t0 := time.Date(2026, 11, 24, 0, 0, 0, 0, time.UTC)
	rng := rand.New(rand.NewPCG(1, 2))
	states := map[string]*deviceState{}
	window := func(dev string, part int32, i int, flows float64) ClosedWindow {
		if states[dev] == nil {
			states[dev] = newDeviceState(dev, "meter")
		}
		var v features.Vector
		v[features.Flows] = flows
		v[features.BytesOut] = flows * 900 * math.Exp(0.2*rng.NormFloat64())
		v[features.Packets] = flows * 2
		return ClosedWindow{DeviceID: dev, Profile: "meter", Start: t0.Add(time.Duration(i) * time.Minute),
			End: t0.Add(time.Duration(i+1) * time.Minute), Index: t0.Add(time.Duration(i)*time.Minute).Unix() / 60,
			Vector: v, Partition: part, state: states[dev]}
	}
	normal := func() float64 { return float64(2 + rng.IntN(4)) }
	// Both partitions deliver their first window (a consumer fetches from
	// every partition from its first poll); then partition 0 runs two
	// hours ahead, with a flood in its second hour.
	if _, err := d.ScoreWindows(context.Background(), []ClosedWindow{window("m-slow", 1, 0, normal())}, nil); err != nil {
		t.Fatal(err)
	}
	for i := range 120 {
		flows := normal()
		if i >= 80 && i < 90 {
			flows = 400
		}
		verdicts, err := d.ScoreWindows(context.Background(), []ClosedWindow{window("m-fast", 0, i, flows)}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if i >= 60 && verdicts[0].Learn {
			t.Fatalf("window %d past the warm-up span may teach the history before it is judged", i)
		}
	}
	if d.Model("meter") != nil {
		t.Fatal("trained before the slow partition covered the warm-up span")
	}
	// Partition 1 catches up; its window at the end of the span completes
	// the warm-up, and the held windows of partition 0 are scored then.
	var alerts []*contract.Alert
	for i := 1; i <= 60; i++ {
		verdicts, err := d.ScoreWindows(context.Background(), []ClosedWindow{window("m-slow", 1, i, normal())}, nil)
		if err != nil {
			t.Fatal(err)
		}
		alerts = append(alerts, verdicts[0].Alerts...)
	}
	m := d.Model("meter")
	if m == nil {
		t.Fatal("no model once every partition covered the warm-up")
	}
	if m.TrainingRows > 2*60 {
		t.Fatalf("trained on %d rows: windows past the span were used", m.TrainingRows)
	}
	opened := 0
	for _, a := range alerts {
		if a.DeviceID == "m-fast" && a.Incident.Status == contract.IncidentOpened &&
			!a.WindowStart.Before(t0.Add(78*time.Minute)) && a.WindowStart.Before(t0.Add(90*time.Minute)) {
			opened++
		}
	}
	if opened != 1 {
		t.Fatalf("the held flood opened %d incidents, want 1 (alerts %d)", opened, len(alerts))
	}
}

// A ledger whose active model is of another feature schema (an older
// chainwatch's, or one trained from a CSV) leaves that profile unscored,
// counted and logged, and the detector running.
func TestModelOfAnotherSchemaLeavesItsProfileUnscored(t *testing.T) {
	dir := t.TempDir()
	led, err := embedded.Open(filepath.Join(dir, "ledger"), embedded.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer led.Close()
	service := ledgerclient.New(led.Client(embedded.LocalCaller(contract.RoleService)))
	store := &ModelStore{Dir: filepath.Join(dir, "models"), Ledger: service}
	rng := rand.New(rand.NewPCG(5, 5))
	rows := make([]float64, 0, 300*features.Count)
	for range 300 * features.Count {
		rows = append(rows, rng.NormFloat64())
	}
	csvModel, err := models.Train(rows, features.Names[:], models.TrainOptions{Profile: "meter"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.Bootstrap(context.Background(), csvModel, []string{"csv"}); err != nil {
		t.Fatal(err)
	}
	metrics := NewMetrics(prometheus.NewRegistry())
	d := NewDetector(DetectorConfig{}, store, nil, "iot.flows", metrics, slog.New(slog.NewTextHandler(io.Discard, nil)))
	cw := ClosedWindow{DeviceID: "m-1", Profile: "meter", Start: time.Unix(600, 0), End: time.Unix(660, 0)}
	for range 3 {
		if _, err := d.ScoreWindows(context.Background(), []ClosedWindow{cw}, nil); err != nil {
			t.Fatalf("a refused model stopped the detector: %v", err)
		}
	}
	if got := testutil.ToFloat64(metrics.WindowsUnscored.WithLabelValues("meter", "model_refused")); got != 3 {
		t.Fatalf("%v windows counted unscored, want 3", got)
	}
	if d.Model("meter") != nil {
		t.Fatal("the refused model is in use")
	}
}

// A batch holding several windows of one device — a backlog read faster
// than real time, or the windows held during a warm-up — is judged as the
// same windows minute by minute would be: each against the baseline its
// device's earlier windows taught, as in training.
func TestBatchJudgesADevicesWindowsInTurn(t *testing.T) {
	t0 := time.Date(2026, 11, 24, 0, 0, 0, 0, time.UTC)
	devices := []string{"m-1", "m-2"}
	newDetector := func() (*Detector, map[string]*deviceState) {
		d := NewDetector(DetectorConfig{Warmup: time.Hour, MinTrainingWindows: 10, Seed: 1}, ledgerModelStore(t), nil, "iot.flows",
			NewMetrics(prometheus.NewRegistry()), slog.New(slog.NewTextHandler(io.Discard, nil)))
		return d, map[string]*deviceState{}
	}
	// The same windows for both detectors: a daily ramp, and from minute
	// 100 a flood on m-2 that grows.
	window := func(states map[string]*deviceState, dev string, i int) ClosedWindow {
		if states[dev] == nil {
			states[dev] = newDeviceState(dev, "meter")
		}
		rng := rand.New(rand.NewPCG(uint64(i), uint64(len(dev)+int(dev[2]))))
		flows := float64(3+rng.IntN(4)) * (1 + float64(i)/100)
		if dev == "m-2" && i >= 100 {
			flows *= float64(i-98) * 3
		}
		var v features.Vector
		v[features.Flows] = flows
		v[features.BytesOut] = flows * 900 * math.Exp(0.2*rng.NormFloat64())
		v[features.Packets] = flows * 2
		start := t0.Add(time.Duration(i) * time.Minute)
		return ClosedWindow{DeviceID: dev, Profile: "meter", Start: start, End: start.Add(time.Minute),
			Index: start.Unix() / 60, Vector: v, state: states[dev]}
	}
	one, oneStates := newDetector()
	batch, batchStates := newDetector()
	ctx := context.Background()
	for i := range 61 { // the warm-up, one window at a time for both
		for _, dev := range devices {
			for _, d := range []struct {
				d *Detector
				s map[string]*deviceState
			}{{one, oneStates}, {batch, batchStates}} {
				if _, err := d.d.ScoreWindows(ctx, []ClosedWindow{window(d.s, dev, i)}, nil); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	if one.Model("meter") == nil || batch.Model("meter") == nil {
		t.Fatal("no model after the warm-up")
	}
	if a, b := one.Model("meter").Behaviour, batch.Model("meter").Behaviour; a.AnomalousLevel != b.AnomalousLevel || a.ExtremeLevel != b.ExtremeLevel {
		t.Fatalf("the two detectors trained different models: levels %v/%v against %v/%v", a.AnomalousLevel, a.ExtremeLevel, b.AnomalousLevel, b.ExtremeLevel)
	}
	// The alerts a detector raises on some windows, by id.
	judge := func(d *Detector, ws []ClosedWindow) []string {
		verdicts, err := d.ScoreWindows(ctx, ws, nil)
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, v := range verdicts {
			for _, a := range v.Alerts {
				ids = append(ids, a.ID)
			}
		}
		return ids
	}
	var oneAlerts []string
	var backlog []ClosedWindow
	for i := 61; i < 110; i++ {
		// A minute's windows close together, minute by minute; the
		// backlog holds them all.
		var minute []ClosedWindow
		for _, dev := range devices {
			minute = append(minute, window(oneStates, dev, i))
			backlog = append(backlog, window(batchStates, dev, i))
		}
		oneAlerts = append(oneAlerts, judge(one, minute)...)
	}
	batchAlerts := judge(batch, backlog)
	if len(oneAlerts) == 0 {
		t.Fatal("the growing flood raised no alert")
	}
	if !slices.Equal(oneAlerts, batchAlerts) {
		t.Errorf("alerts one window at a time %v, in one batch %v", oneAlerts, batchAlerts)
	}
	for _, dev := range devices {
		if oneStates[dev].baseline != batchStates[dev].baseline {
			t.Errorf("%s: baseline one window at a time %+v, in one batch %+v", dev, oneStates[dev].baseline, batchStates[dev].baseline)
		}
	}
}

// warmingDetector is a detector on an embedded ledger without a model:
// an hour's warm-up trains its first models, on 10 windows at least,
// without verifying the history.
func warmingDetector(t *testing.T) *Detector {
	t.Helper()
	return NewDetector(DetectorConfig{Warmup: time.Hour, MinTrainingWindows: 10}, ledgerModelStore(t), nil, "iot.flows",
		NewMetrics(prometheus.NewRegistry()), slog.New(slog.NewTextHandler(io.Discard, nil)))
}

// ledgerModelStore is a model store on a fresh embedded ledger, as the
// service's own identity sees it.
func ledgerModelStore(t *testing.T) *ModelStore {
	t.Helper()
	led, err := embedded.Open(filepath.Join(t.TempDir(), "ledger"), embedded.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { led.Close() })
	return &ModelStore{Dir: t.TempDir(), Ledger: ledgerclient.New(led.Client(embedded.LocalCaller(contract.RoleService)))}
}
