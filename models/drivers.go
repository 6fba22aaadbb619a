package models

import (
	"cmp"
	"slices"

	"github.com/chainwatch/chainwatch/models/features"
)

// Drivers accumulates what drove a run of a device's windows: the windows
// an incident's opening rule counted, and the incident's own since. An
// incident opened by several windows (the sustained rule's six of ten, the
// persistent rule's three of four, the evidence rule's three) is then
// explained by them, not by its last window alone, which may be the least
// unusual of them.
//
// Each window w adds its features' shares s_j(w) of Σ z² over its
// suspicious deviations (ExplainDeviation), weighted by its level L_w, so
// that a feature's share of the run is the level-weighted mean of its
// shares,
//
//	S_j = Σ_w L_w·s_j(w) / Σ_w L_w,
//
// which sums to 1 over the features when every window had a suspicious
// deviation (a window raised by the forest's score alone adds to the
// denominator only). Each feature keeps its value and the device's
// baseline in the window where its share was largest: the window that
// shows it best. 244 bytes (256 as allocated); a device holds one only
// while it has windows that count towards an incident.
type Drivers struct {
	weight   [features.Count]float32 // Σ_w L_w·s_j(w)
	best     [features.Count]float32 // the largest s_j(w) so far
	value    [features.Count]float32 // x_j in that window
	baseline [features.Count]float32 // the baseline's x_j then
	total    float32                 // Σ_w L_w
}

// Add counts a window: b the baseline it was judged against, v its
// features, r its deviations and level its L.
func (d *Drivers) Add(b *DeviceBaseline, v *features.Vector, r []float64, level float64) {
	if level <= 0 {
		return
	}
	shares := deviationShares(r)
	d.total += float32(level)
	for j, s := range shares {
		if s <= 0 {
			continue
		}
		d.weight[j] += float32(level * s)
		if float32(s) > d.best[j] {
			d.best[j], d.value[j], d.baseline[j] = float32(s), float32(v[j]), float32(unscaled(j, float64(b.Mean[j])))
		}
	}
}

// Top returns the n features with the largest shares S_j of the run,
// largest first (fewer if fewer had any), or nil when no window counted
// had a suspicious deviation (or d is nil).
func (d *Drivers) Top(n int) []Contribution {
	if d == nil {
		return nil
	}
	var idx []int
	for j, w := range d.weight {
		if w > 0 {
			idx = append(idx, j)
		}
	}
	slices.SortStableFunc(idx, func(a, b int) int { return cmp.Compare(d.weight[b], d.weight[a]) })
	out := make([]Contribution, 0, min(n, len(idx)))
	for _, j := range idx[:min(n, len(idx))] {
		out = append(out, Contribution{Feature: features.Names[j], Value: float64(d.value[j]), Baseline: float64(d.baseline[j]),
			Share: float64(d.weight[j] / d.total)})
	}
	if len(out) == 0 {
		return nil
	}
	return out
}
