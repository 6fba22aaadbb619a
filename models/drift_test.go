package models

import (
	"math"
	"testing"
)

// TestPSIKnownValues checks the index against values computed by hand.
func TestPSIKnownValues(t *testing.T) {
	e := []float64{0.25, 0.25, 0.25, 0.25}
	if got := PSI(e, []float64{25, 25, 25, 25}); got != 0 {
		t.Errorf("identical distributions: %v", got)
	}
	// (0.4−0.25)ln(0.4/0.25) + (0.1−0.25)ln(0.1/0.25) + 2·0 = 0.15·ln1.6 + 0.15·ln2.5
	want := 0.15*math.Log(1.6) + 0.15*math.Log(2.5)
	if got := PSI(e, []float64{40, 10, 25, 25}); math.Abs(got-want) > 1e-12 {
		t.Errorf("PSI %v, want %v", got, want)
	}
	// An empty observed bin counts as psiEpsilon, not as infinity.
	if got := PSI(e, []float64{50, 50, 0, 0}); math.IsInf(got, 0) || got < 1 {
		t.Errorf("empty bins: %v", got)
	}
}

// TestDriftBinsMergeTies: a mostly-zero count gets few bins, deciles of a
// continuous feature ten, and every training value falls in a bin whose
// share is what the edges say.
func TestDriftBinsMergeTies(t *testing.T) {
	zeros := make([]float64, 1000)
	for i := 900; i < 1000; i++ {
		zeros[i] = float64(i - 899)
	}
	b := driftBinsOf(zeros)
	// Deciles 1–9 are 0 except the ninth (the 901st value, 1): edges 0 and 1.
	if len(b.Edges) != 2 || b.Edges[0] != 0 || b.Edges[1] != 1 ||
		math.Abs(b.Expected[0]-0.9) > 1e-12 || math.Abs(b.Expected[1]-0.001) > 1e-12 || math.Abs(b.Expected[2]-0.099) > 1e-12 {
		t.Errorf("mostly-zero feature: %+v", b)
	}
	uniform := make([]float64, 1000)
	for i := range uniform {
		uniform[i] = float64(i)
	}
	b = driftBinsOf(uniform)
	if len(b.Expected) != 10 {
		t.Fatalf("%d bins for a continuous feature, want 10", len(b.Expected))
	}
	for i, e := range b.Expected {
		if math.Abs(e-0.1) > 0.0011 {
			t.Errorf("bin %d share %v, want 0.1", i, e)
		}
	}
	if got := PSI(b.Expected, []float64{100, 100, 100, 100, 100, 100, 100, 100, 100, 100}); got > 1e-4 {
		t.Errorf("the training distribution drifts from itself: %v", got)
	}
}
