// Package eval measures how well anomaly scores separate labelled anomalies
// from normal rows: ROC AUC, average precision, precision at k and the ROC
// curve, and draws the curve as a PNG. Labels are true for anomalies and
// higher scores mean more anomalous.
package eval

import (
	"errors"
	"fmt"
	"slices"
	"sort"

	"gonum.org/v1/gonum/stat"
)

// Result is the summary `chainwatch evaluate` prints.
type Result struct {
	Rows      int     `json:"rows"`
	Anomalies int     `json:"anomalies"`
	AUC       float64 `json:"auc"`
	AP        float64 `json:"average_precision"`
	// PrecisionAtK is the precision among the K highest scores, with K the
	// number of anomalies unless the caller chose another.
	PrecisionAtK float64 `json:"precision_at_k"`
	K            int     `json:"k"`
}

// ErrOneClass is returned when the labels hold only one class, for which
// ranking metrics are undefined.
var ErrOneClass = errors.New("eval: labels contain only one class")

// Evaluate computes the summary metrics; k ≤ 0 means k = number of anomalies.
func Evaluate(scores []float64, labels []bool, k int) (Result, error) {
	if len(scores) != len(labels) {
		return Result{}, fmt.Errorf("eval: %d scores for %d labels", len(scores), len(labels))
	}
	pos := 0
	for _, l := range labels {
		if l {
			pos++
		}
	}
	if pos == 0 || pos == len(labels) {
		return Result{}, ErrOneClass
	}
	if k <= 0 {
		k = pos
	}
	return Result{
		Rows: len(scores), Anomalies: pos,
		AUC: AUC(scores, labels), AP: AveragePrecision(scores, labels),
		PrecisionAtK: PrecisionAtK(scores, labels, k), K: k,
	}, nil
}

// AUC is the area under the ROC curve, computed exactly as the
// Mann–Whitney U statistic with mid-ranks for tied scores:
//
//	AUC = (R₊ − n₊(n₊+1)/2) / (n₊ n₋)
//
// where R₊ is the sum of the anomalies' ranks (Hanley & McNeil 1982).
func AUC(scores []float64, labels []bool) float64 {
	n := len(scores)
	idx := make([]int, n)
	for i := range idx {
		idx[i] = i
	}
	sort.Slice(idx, func(a, b int) bool { return scores[idx[a]] < scores[idx[b]] })
	var rankSum float64
	pos := 0
	for i := 0; i < n; {
		j := i
		for j < n && scores[idx[j]] == scores[idx[i]] {
			j++
		}
		mid := float64(i+j+1) / 2 // mean of ranks i+1 … j
		for _, r := range idx[i:j] {
			if labels[r] {
				rankSum += mid
				pos++
			}
		}
		i = j
	}
	neg := n - pos
	return (rankSum - float64(pos)*float64(pos+1)/2) / (float64(pos) * float64(neg))
}

// AveragePrecision is Σₙ (Rₙ − Rₙ₋₁) Pₙ over the distinct score thresholds
// from the highest down, scikit-learn's definition (no interpolation).
func AveragePrecision(scores []float64, labels []bool) float64 {
	idx := descending(scores)
	pos := 0
	for _, l := range labels {
		if l {
			pos++
		}
	}
	ap, tp, prevRecall := 0.0, 0, 0.0
	for i := 0; i < len(idx); {
		j := i
		for j < len(idx) && scores[idx[j]] == scores[idx[i]] {
			if labels[idx[j]] {
				tp++
			}
			j++
		}
		recall := float64(tp) / float64(pos)
		ap += (recall - prevRecall) * float64(tp) / float64(j)
		prevRecall = recall
		i = j
	}
	return ap
}

// PrecisionAtK is the share of anomalies among the k highest scores.
func PrecisionAtK(scores []float64, labels []bool, k int) float64 {
	idx := descending(scores)
	k = min(k, len(idx))
	if k <= 0 {
		return 0
	}
	hit := 0
	for _, i := range idx[:k] {
		if labels[i] {
			hit++
		}
	}
	return float64(hit) / float64(k)
}

// ROC returns the curve's false- and true-positive rates, from (0,0) at the
// highest cutoff to (1,1), using gonum's stat.ROC.
func ROC(scores []float64, labels []bool) (fpr, tpr []float64) {
	y := slices.Clone(scores)
	classes := slices.Clone(labels)
	stat.SortWeightedLabeled(y, classes, nil)
	tpr, fpr, _ = stat.ROC(nil, y, classes, nil)
	return fpr, tpr
}

func descending(scores []float64) []int {
	idx := make([]int, len(scores))
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(a, b int) bool { return scores[idx[a]] > scores[idx[b]] })
	return idx
}
