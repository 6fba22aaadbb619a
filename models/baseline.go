package models

import (
	"math"
	"slices"

	"gonum.org/v1/gonum/stat"
)

// Baseline is a feature's typical value in the training data, the yardstick
// an explanation measures a suspicious value against.
type Baseline struct {
	Median float64 `json:"median"`
	// MAD is the median absolute deviation from the median: a spread that
	// the anomalies themselves barely move.
	MAD float64 `json:"mad"`
}

// baselines computes each feature's Baseline over n rows of row-major data.
func baselines(data []float64, features int) []Baseline {
	n := len(data) / features
	col := make([]float64, n)
	out := make([]Baseline, features)
	for j := range features {
		for r := range n {
			col[r] = data[r*features+j]
		}
		slices.Sort(col)
		med := stat.Quantile(0.5, stat.Empirical, col, nil)
		for r := range col {
			col[r] = math.Abs(col[r] - med)
		}
		slices.Sort(col)
		out[j] = Baseline{Median: med, MAD: stat.Quantile(0.5, stat.Empirical, col, nil)}
	}
	return out
}
