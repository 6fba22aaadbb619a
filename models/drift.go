package models

import (
	"math"
	"slices"

	"github.com/chainwatch/chainwatch/models/features"
)

// DriftBins is one feature's training distribution for the population
// stability index: the upper edges of its bins (deciles of the feature in
// training, ties merged, so a mostly-zero count has few bins)
// and the share of training windows in each bin, the last bin being above
// the last edge.
type DriftBins struct {
	Edges    []float64 `json:"edges"`
	Expected []float64 `json:"expected"`
}

// driftBinsOf computes a feature's bins from its training values.
func driftBinsOf(values []float64) DriftBins {
	sorted := slices.Clone(values)
	slices.Sort(sorted)
	var edges []float64
	for q := 1; q < 10; q++ {
		e := sorted[min(len(sorted)*q/10, len(sorted)-1)]
		if len(edges) == 0 || e > edges[len(edges)-1] {
			edges = append(edges, e)
		}
	}
	if len(edges) > 0 && edges[len(edges)-1] >= sorted[len(sorted)-1] {
		edges = edges[:len(edges)-1] // no value above the last edge: one bin fewer
	}
	b := DriftBins{Edges: edges, Expected: make([]float64, len(edges)+1)}
	for _, v := range sorted {
		b.Expected[b.bin(v)]++
	}
	for i := range b.Expected {
		b.Expected[i] /= float64(len(sorted))
	}
	return b
}

// bin is the index of the bin holding v.
func (b DriftBins) bin(v float64) int {
	i, _ := slices.BinarySearch(b.Edges, v) // first edge ≥ v
	return i
}

// psiEpsilon stands in for an empty bin's share, which would make the
// index infinite.
const psiEpsilon = 1e-4

// PSI is the population stability index of observed bin counts against
// the expected shares: Σ (a − e)·ln(a/e) over the bins, a the observed
// share (Karakoulas, "Empirical validation of retail credit-scoring
// models", RMA Journal 2004; Yurdakul & Naranjo, "Statistical properties
// of the population stability index", J. Risk Model Validation 14(4),
// 2020). The usual reading: below 0.1 stable, 0.1–0.25 a moderate shift,
// above 0.25 a significant one.
func PSI(expected, counts []float64) float64 {
	var n float64
	for _, c := range counts {
		n += c
	}
	if n == 0 {
		return 0
	}
	var psi float64
	for i, e := range expected {
		a := max(counts[i]/n, psiEpsilon)
		e = max(e, psiEpsilon)
		psi += (a - e) * math.Log(a/e)
	}
	return psi
}

// DriftWindows is how many sampled live windows of a profile one drift
// reading compares with its model's training distribution, and
// DriftSampleEvery the sampling: every fourth window, which keeps the cost
// off the scoring path (binning every window of every feature cost ~8 % of
// end-to-end throughput) while 500 windows in at most ten bins still give
// about fifty per bin.
const (
	DriftWindows     = 500
	DriftSampleEvery = 4
)

// DriftTracker compares a profile's live windows with its model's
// training distribution, DriftWindows at a time (tumbling batches). Not
// safe for concurrent use.
type DriftTracker struct {
	model  *Model
	counts [][]float64
	n      int
	seen   int
}

// NewDriftTracker tracks drift against m; nil if m carries no training
// distribution (a model trained before drift was recorded).
func NewDriftTracker(m *Model) *DriftTracker {
	if m == nil || m.Behaviour == nil || len(m.Behaviour.Drift) != features.Count {
		return nil
	}
	t := &DriftTracker{model: m, counts: make([][]float64, features.Count)}
	for j, b := range m.Behaviour.Drift {
		t.counts[j] = make([]float64, len(b.Expected))
	}
	return t
}

// Observe adds a live window (one in DriftSampleEvery is counted). When a
// batch is complete it returns the
// PSI of every feature (indexed as features.Names) and true, and starts
// the next batch.
func (t *DriftTracker) Observe(v *features.Vector) ([]float64, bool) {
	t.seen++
	if t.seen%DriftSampleEvery != 0 {
		return nil, false
	}
	bins := t.model.Behaviour.Drift
	for j := range features.Count {
		t.counts[j][bins[j].bin(v[j])]++
	}
	t.n++
	if t.n < DriftWindows {
		return nil, false
	}
	psi := make([]float64, features.Count)
	for j := range features.Count {
		psi[j] = PSI(bins[j].Expected, t.counts[j])
		clear(t.counts[j])
	}
	t.n = 0
	return psi, true
}

// Drift is the PSI of every feature (indexed as features.Names) of the
// given windows — all of them, unsampled — against the model's training
// distribution: what `chainwatch models drift` reports for a period. It
// returns nil when the model carries no training distribution.
func (m *Model) Drift(vs []features.Vector) []float64 {
	if m == nil || m.Behaviour == nil || len(m.Behaviour.Drift) != features.Count || len(vs) == 0 {
		return nil
	}
	psi := make([]float64, features.Count)
	for j, b := range m.Behaviour.Drift {
		counts := make([]float64, len(b.Expected))
		for i := range vs {
			counts[b.bin(vs[i][j])]++
		}
		psi[j] = PSI(b.Expected, counts)
	}
	return psi
}
