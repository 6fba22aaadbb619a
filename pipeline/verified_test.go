package pipeline

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/chainwatch/chainwatch/ledgerclient"
	"github.com/chainwatch/chainwatch/ledgerclient/contract"
	"github.com/chainwatch/chainwatch/ledgerclient/embedded"
	"github.com/chainwatch/chainwatch/models/features"
)

// TestFirstModelWaitsForVerifiedHistory checks that a profile whose
// warm-up history does not verify gets no model, keeps warming up, and
// trains as soon as its history does verify — citing the anchors.
func TestFirstModelWaitsForVerifiedHistory(t *testing.T) {
	led, err := embedded.Open(filepath.Join(t.TempDir(), "ledger"), embedded.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer led.Close()
	store := &ModelStore{Dir: t.TempDir(), Ledger: ledgerclient.New(led.Client(embedded.LocalCaller(contract.RoleService)))}
	verified := false
	var asked []OffsetRange
	verifier := func(_ context.Context, ranges []OffsetRange) ([]string, error) {
		asked = ranges
		if !verified {
			return nil, errors.New("iot.flows/0 0..99 is mismatched")
		}
		return []string{"iot.flows/0/0-99"}, nil
	}
	d := NewDetector(DetectorConfig{Warmup: time.Hour, MinTrainingWindows: 10}, store, verifier, "iot.flows",
		NewMetrics(prometheus.NewRegistry()), slog.New(slog.NewTextHandler(io.Discard, nil)))
	t0 := time.Date(2026, 11, 24, 0, 0, 0, 0, time.UTC)
	window := func(i int) *ClosedWindow {
		var v features.Vector
		v[features.Flows] = float64(3 + i%4)
		return &ClosedWindow{DeviceID: "m-1", Profile: "meter", Start: t0.Add(time.Duration(i) * time.Minute),
			End: t0.Add(time.Duration(i+1) * time.Minute), Vector: v, Partition: 0, FirstOffset: int64(i * 2), LastOffset: int64(i*2 + 1)}
	}
	for i := range 70 {
		if _, err := d.ScoreWindows(context.Background(), []ClosedWindow{*window(i)}, nil); err != nil {
			t.Fatal(err)
		}
	}
	if d.Model("meter") != nil {
		t.Fatal("a model was trained on unverified history")
	}
	if len(asked) != 1 || asked[0].First != 0 || asked[0].Last < 119 {
		t.Fatalf("verifier asked for %+v, want partition 0 from offset 0 through the warm-up", asked)
	}
	verified = true
	if _, err := d.ScoreWindows(context.Background(), []ClosedWindow{*window(70)}, nil); err != nil {
		t.Fatal(err)
	}
	m := d.Model("meter")
	if m == nil || len(m.TrainingData) != 1 || m.TrainingData[0] != "iot.flows/0/0-99" {
		t.Fatalf("model after verification: %+v", m)
	}
}
