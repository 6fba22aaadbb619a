package models

import (
	"fmt"
	"slices"

	"gonum.org/v1/gonum/stat"
)

// Confidence grades how far beyond the alert threshold a score lies.
type Confidence string

const (
	ConfidenceLow    Confidence = "low"
	ConfidenceMedium Confidence = "medium"
	ConfidenceHigh   Confidence = "high"
)

// Calibration maps scores to alert decisions. It is derived from the scores
// of the training rows, so it carries the same meaning for every model:
//
//	Threshold = Q(1 − c)     a score at or above it raises an alert
//	Medium    = Q(1 − c/4)   rarer than a quarter of the alerting share
//	High      = max training score: beyond anything in the baseline
//
// where Q is the empirical quantile of the training scores and c the
// contamination, the share of training rows expected to be anomalous.
type Calibration struct {
	Contamination float64 `json:"contamination"`
	Threshold     float64 `json:"threshold"`
	Medium        float64 `json:"medium"`
	High          float64 `json:"high"`
}

// Calibrate derives a Calibration from training scores.
func Calibrate(scores []float64, contamination float64) (Calibration, error) {
	if !(contamination > 0 && contamination < 0.5) {
		return Calibration{}, fmt.Errorf("models: contamination must be in (0, 0.5), got %v", contamination)
	}
	if len(scores) == 0 {
		return Calibration{}, fmt.Errorf("models: no training scores to calibrate on")
	}
	sorted := slices.Clone(scores)
	slices.Sort(sorted)
	c := Calibration{
		Contamination: contamination,
		Threshold:     stat.Quantile(1-contamination, stat.Empirical, sorted, nil),
		Medium:        stat.Quantile(1-contamination/4, stat.Empirical, sorted, nil),
		High:          sorted[len(sorted)-1],
	}
	// Keep the bands ordered even for tiny or tied training sets.
	c.Medium = max(c.Medium, c.Threshold)
	c.High = max(c.High, c.Medium)
	return c, nil
}

// Anomalous reports whether score raises an alert.
func (c Calibration) Anomalous(score float64) bool { return score >= c.Threshold }

// Confidence grades an alerting score.
func (c Calibration) Confidence(score float64) Confidence {
	switch {
	case score > c.High:
		return ConfidenceHigh
	case score >= c.Medium:
		return ConfidenceMedium
	default:
		return ConfidenceLow
	}
}
