package models

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/chainwatch/chainwatch/models/iforest"
)

func trainingData(n int, seed uint64) []float64 {
	rng := rand.New(rand.NewPCG(seed, 0))
	data := make([]float64, 0, n*3)
	for range n {
		data = append(data, 10+rng.NormFloat64(), 100+10*rng.NormFloat64(), rng.Float64())
	}
	return data
}

func trainTestModel(t *testing.T) *Model {
	t.Helper()
	m, err := Train(trainingData(2000, 1), []string{"a", "b", "c"}, TrainOptions{
		Forest:        iforest.Config{Seed: 5, Trees: 50},
		Contamination: 0.02,
		Profile:       "meter",
		TrainingData:  []string{"anchor:iot.flows/0/0-1999"},
		Now:           func() time.Time { return time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC) },
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestArtifactRoundTripAndHash(t *testing.T) {
	m := trainTestModel(t)
	path := filepath.Join(t.TempDir(), "m.cwm")
	if err := m.Save(path); err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(path)
	sum := sha256.Sum256(raw)
	if got := hex.EncodeToString(sum[:]); got != m.Hash() {
		t.Fatalf("Hash() = %s, sha256 of file = %s", m.Hash(), got)
	}
	back, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if back.Hash() != m.Hash() || back.Profile != "meter" || back.Calibration != m.Calibration || back.TrainingRows != 2000 {
		t.Fatalf("metadata changed in round trip: %+v", back.Metadata)
	}
	x := []float64{10, 100, 0.5}
	if back.Score(x) != m.Score(x) {
		t.Fatal("loaded model scores differently")
	}
	// Same model, same bytes: the hash is a stable identity.
	again, _ := back.MarshalBinary()
	if string(again) != string(raw) {
		t.Fatal("re-encoding a loaded model changed its bytes")
	}
}

func TestArtifactRejectsCorruptAndForeign(t *testing.T) {
	m := trainTestModel(t)
	raw, _ := m.MarshalBinary()
	for _, at := range []int{9, 40, len(raw) / 2, len(raw) - 1} {
		bad := append([]byte(nil), raw...)
		bad[at] ^= 0x01
		if _, err := Unmarshal(bad); !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrNotModel) {
			t.Errorf("flipped byte %d: err = %v, want ErrCorrupt", at, err)
		}
	}
	if _, err := Unmarshal(raw[:len(raw)-10]); !errors.Is(err, ErrCorrupt) {
		t.Errorf("truncated: err = %v", err)
	}
	if _, err := Unmarshal([]byte("PK\x03\x04 a zip file, not a model")); !errors.Is(err, ErrNotModel) {
		t.Errorf("foreign: err = %v", err)
	}
}

func TestCalibration(t *testing.T) {
	scores := make([]float64, 1000)
	for i := range scores {
		scores[i] = float64(i) / 1000 // 0.000 … 0.999
	}
	c, err := Calibrate(scores, 0.05)
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(c.Threshold-0.949) > 0.002 || math.Abs(c.Medium-0.987) > 0.002 || c.High != 0.999 {
		t.Fatalf("calibration %+v, want threshold≈0.949, medium≈0.987, high=0.999", c)
	}
	if c.Anomalous(0.9) || !c.Anomalous(0.95) {
		t.Error("threshold decision wrong")
	}
	for score, want := range map[float64]Confidence{0.96: ConfidenceLow, 0.99: ConfidenceMedium, 1.0: ConfidenceHigh} {
		if got := c.Confidence(score); got != want {
			t.Errorf("Confidence(%v) = %s, want %s", score, got, want)
		}
	}
	if _, err := Calibrate(scores, 0.7); err == nil {
		t.Error("contamination 0.7 accepted")
	}
	// A model's own calibration flags about its contamination share.
	m := trainTestModel(t)
	data := trainingData(2000, 1)
	flagged := 0
	for r := range 2000 {
		if m.Calibration.Anomalous(m.Score(data[r*3 : r*3+3])) {
			flagged++
		}
	}
	if flagged < 30 || flagged > 50 {
		t.Errorf("model flags %d of 2000 training rows, want about 2%% (40)", flagged)
	}
}

func TestExplainNamesTheDeviatingFeatureWithItsBaseline(t *testing.T) {
	m := trainTestModel(t)
	top := m.Explain([]float64{10, 400, 0.5}, 2)
	if len(top) != 2 || top[0].Feature != "b" || top[0].Value != 400 {
		t.Fatalf("explanation %+v, want feature b first", top)
	}
	if math.Abs(top[0].Baseline-100) > 2 {
		t.Errorf("baseline of b = %v, want its training median ≈ 100", top[0].Baseline)
	}
}
