package models

import (
	"fmt"
	"slices"
	"time"

	"gonum.org/v1/gonum/stat"

	"github.com/chainwatch/chainwatch/models/iforest"
)

// Algorithm names as they appear in artifacts.
const (
	AlgorithmIsolationForest         = "isolation-forest"
	AlgorithmExtendedIsolationForest = "extended-isolation-forest"
)

// Hyperparameters record how the forest was grown.
type Hyperparameters struct {
	Trees     int    `json:"trees"`
	Subsample int    `json:"subsample"`
	Extension int    `json:"extension"`
	Seed      uint64 `json:"seed"`
}

// Metadata is the self-describing part of an artifact, stored as JSON.
type Metadata struct {
	Algorithm       string             `json:"algorithm"`
	Profile         string             `json:"profile,omitempty"`
	Features        []string           `json:"features"`
	Hyperparameters Hyperparameters    `json:"hyperparameters"`
	Calibration     Calibration        `json:"calibration"`
	Baselines       []Baseline         `json:"baselines"`
	TrainingRows    int                `json:"training_rows"`
	TrainingData    []string           `json:"training_data,omitempty"`
	Metrics         map[string]float64 `json:"metrics,omitempty"`
	CreatedAt       time.Time          `json:"created_at"`
	// Behaviour is set on the behaviour models the service trains and
	// scores with (behaviour.go); a model trained from a CSV has none.
	Behaviour *Behaviour `json:"behaviour,omitempty"`
}

// Model is a trained, calibrated forest with its metadata. It is immutable
// and safe for concurrent use.
type Model struct {
	Metadata
	forest *iforest.Forest
	hash   string
}

// TrainOptions configure Train. The zero value trains the paper's forest
// with 1% contamination.
type TrainOptions struct {
	Forest iforest.Config
	// Contamination is the share of training rows expected to be anomalous;
	// it sets the alert threshold. Zero means 0.01.
	Contamination float64
	Profile       string
	// TrainingData names what the rows came from (ledger anchor ids, a
	// file's SHA-256), so that anyone can fetch and check them.
	TrainingData []string
	// Now stamps CreatedAt; nil means time.Now.
	Now func() time.Time
}

// Train fits a forest on n rows of row-major data with one column per name,
// calibrates it on its own training scores and records baselines.
func Train(data []float64, names []string, opts TrainOptions) (*Model, error) {
	d := len(names)
	if d == 0 {
		return nil, fmt.Errorf("models: no feature names")
	}
	if opts.Contamination == 0 {
		opts.Contamination = 0.01
	}
	forest, err := iforest.Fit(data, d, opts.Forest)
	if err != nil {
		return nil, fmt.Errorf("models: fit: %w", err)
	}
	n := len(data) / d
	scores := make([]float64, n)
	if err := forest.ScoreBatchParallel(scores, data, max(opts.Forest.Workers, 1)); err != nil {
		return nil, err
	}
	cal, err := Calibrate(scores, opts.Contamination)
	if err != nil {
		return nil, err
	}
	metrics := trainingMetrics(scores, cal)
	m := &Model{
		Metadata: Metadata{
			Algorithm: algorithmOf(forest),
			Profile:   opts.Profile,
			Features:  slices.Clone(names),
			Hyperparameters: Hyperparameters{
				Trees: forest.Trees(), Subsample: forest.Subsample(),
				Extension: forest.Extension(), Seed: opts.Forest.Seed,
			},
			Calibration:  cal,
			Baselines:    baselines(data, d),
			TrainingRows: n,
			TrainingData: slices.Clone(opts.TrainingData),
			Metrics:      metrics,
			CreatedAt:    createdAt(opts.Now),
		},
		forest: forest,
	}
	if _, err := m.MarshalBinary(); err != nil { // sets m.hash
		return nil, err
	}
	return m, nil
}

// algorithmOf names the forest's algorithm as artifacts record it.
func algorithmOf(f *iforest.Forest) string {
	if f.Extension() > 0 {
		return AlgorithmExtendedIsolationForest
	}
	return AlgorithmIsolationForest
}

// createdAt stamps an artifact: now, from the given clock or the system's,
// to the millisecond.
func createdAt(now func() time.Time) time.Time {
	if now == nil {
		now = time.Now
	}
	return now().UTC().Truncate(time.Millisecond)
}

// trainingMetrics summarises the training scores: where the bulk lies and
// what share of the training rows the calibrated threshold flags.
func trainingMetrics(scores []float64, cal Calibration) map[string]float64 {
	sorted := slices.Clone(scores)
	slices.Sort(sorted)
	flagged := 0
	sum := 0.0
	for _, s := range scores {
		sum += s
		if cal.Anomalous(s) {
			flagged++
		}
	}
	return map[string]float64{
		"train_score_mean":    sum / float64(len(scores)),
		"train_score_p50":     stat.Quantile(0.5, stat.Empirical, sorted, nil),
		"train_score_p99":     stat.Quantile(0.99, stat.Empirical, sorted, nil),
		"train_flagged_share": float64(flagged) / float64(len(scores)),
	}
}

// Forest is the underlying isolation forest.
func (m *Model) Forest() *iforest.Forest { return m.forest }

// Hash is the hex SHA-256 of the model's artifact file: its identity on the
// ledger and in alerts, checkable with sha256sum.
func (m *Model) Hash() string { return m.hash }

// Score returns s(x, ψ) for one row in the model's feature order.
func (m *Model) Score(x []float64) float64 { return m.forest.Score(x) }

// Contribution is one feature's part in an anomaly score.
type Contribution struct {
	Feature  string  `json:"feature"`
	Value    float64 `json:"value"`
	Baseline float64 `json:"baseline"`
	// Share of the isolation credited to this feature, in [0, 1].
	Share float64 `json:"share"`
}

// Explain returns the top features that drove the isolation of x, largest
// share first, each with its value and training median.
func (m *Model) Explain(x []float64, top int) []Contribution {
	shares := make([]float64, len(m.Features))
	m.forest.Explain(x, shares)
	out := make([]Contribution, len(shares))
	for j, s := range shares {
		out[j] = Contribution{Feature: m.Features[j], Value: x[j], Baseline: m.Baselines[j].Median, Share: s}
	}
	slices.SortStableFunc(out, func(a, b Contribution) int {
		switch {
		case a.Share > b.Share:
			return -1
		case a.Share < b.Share:
			return 1
		}
		return 0
	})
	return out[:min(top, len(out))]
}
