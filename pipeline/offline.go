package pipeline

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/chainwatch/chainwatch/models/iforest"

	"github.com/chainwatch/chainwatch/models"
	"github.com/chainwatch/chainwatch/models/features"
	"github.com/chainwatch/chainwatch/pipeline/incidents"
)

// Offline judgement: a model judging a period of verified history the way
// the detector judges live windows — each device against its own baseline,
// learning from the windows it finds normal, its anomalous windows grouped
// into incidents by the same rule — so that `chainwatch evaluate` compares
// two models on what each would have raised.

// OfflineSeries is one device's windows of the judged period, in time
// order, and the windows before it that warm its baseline.
type OfflineSeries struct {
	Device  string
	LeadIn  []features.Vector // warm the baseline (models.WarmBaseline); not judged
	Vectors []features.Vector
	Index   []int64 // each window's number (start / window size)
}

// OfflineJudgement is a judged window.
type OfflineJudgement struct {
	Score     float64
	Anomalous bool
	// Incident numbers the incident the window belongs to (it opened it, or
	// was anomalous while it was open), counted from 0 over the whole
	// judgement; -1 when none.
	Incident int
}

// IncidentRule is the rule the detector configured by cfg groups windows
// with.
func IncidentRule(cfg DetectorConfig) incidents.Rule {
	r := cfg.WithDefaults().Incident
	r.SK, r.SN = models.SustainedK, models.SustainedN
	return r.WithDefaults()
}

// JudgeOffline judges every series with m and returns one judgement per
// window, series after series, and the number of incidents opened. A
// device's baseline starts from seeds (the baseline m's training left it,
// models.TrainedBaseline) when it has one there, else from its lead-in
// windows (the profile prior without any).
func JudgeOffline(m *models.Model, rule incidents.Rule, series []OfflineSeries, seeds map[string]models.DeviceBaseline) ([]OfflineJudgement, int, error) {
	if err := m.CheckSchema(); err != nil {
		return nil, 0, err
	}
	var out []OfflineJudgement
	r := make([]float64, models.ResidualDims)
	score := make([]float64, 1)
	var events []incidents.Event
	opened := 0
	for _, s := range series {
		if len(s.Index) != len(s.Vectors) {
			return nil, 0, fmt.Errorf("offline judgement: %s has %d windows and %d indices", s.Device, len(s.Vectors), len(s.Index))
		}
		b, ok := seeds[s.Device]
		if !ok {
			b = m.WarmBaseline(s.LeadIn)
		}
		var st incidents.State
		current := -1
		for i := range s.Vectors {
			v := &s.Vectors[i]
			m.Residuals(&b, v, r)
			if err := m.Forest().ScoreBatch(score, r); err != nil {
				return nil, 0, err
			}
			j := m.Judge(r, score[0])
			if !j.Anomalous {
				m.Learn(&b, v)
			}
			events = st.Observe(rule, incidentWindow(s.Index[i], j), events[:0])
			for _, ev := range events {
				if ev.Status == incidents.Opened {
					current = opened
					opened++
				}
			}
			oj := OfflineJudgement{Score: j.Score, Anomalous: j.Anomalous, Incident: -1}
			if st.Open() && (j.Anomalous || len(events) > 0) {
				oj.Incident = current
			}
			out = append(out, oj)
		}
	}
	return out, opened, nil
}

// TrainOnHistory trains a profile's behaviour model (req.Profile) on the
// verified windows of req's period exactly as the detector trains a first
// model on its warm-up: the same grouping of windows into device series,
// the same forest settings and budget from cfg, the seed cfg.Seed mixed
// with the profile. The artifact records the verified anchors as its
// training data and the period's end as its creation time, so the same
// history, configuration and seed always give the same artifact hash.
func TrainOnHistory(ctx context.Context, req HistoryRequest, cfg DetectorConfig) (*models.Model, HistoryReport, error) {
	if req.Profile == "" {
		return nil, HistoryReport{}, errors.New("train on history: a profile is required")
	}
	cfg = cfg.WithDefaults()
	var rows []warmRow
	rep, err := ReadHistory(ctx, req, func(w *HistoryWindow) error {
		rows = append(rows, warmRow{start: w.Start.UnixNano(), device: w.Device, vector: w.Vector,
			partition: w.Partition, first: w.FirstOffset, last: w.LastOffset})
		return nil
	})
	if err != nil {
		return nil, rep, err
	}
	if len(rows) < cfg.MinTrainingWindows {
		return nil, rep, fmt.Errorf("%w: %d verified windows of %s in the period, at least %d needed (detector.min_training_windows)",
			models.ErrTooFewWindows, len(rows), req.Profile, cfg.MinTrainingWindows)
	}
	until := req.Until.UTC()
	m, _, err := models.TrainBehaviour(warmSeries(rows), models.BehaviourOptions{
		Forest: iforest.Config{
			Trees: cfg.Trees, Subsample: cfg.Subsample, Extension: cfg.Extension,
			Seed: cfg.Seed ^ stableHash(req.Profile),
		},
		Budget:       cfg.Budget(),
		Profile:      req.Profile,
		TrainingData: rep.Anchors,
		Now:          func() time.Time { return until },
	})
	if err != nil {
		return nil, rep, fmt.Errorf("train %s on history: %w", req.Profile, err)
	}
	return m, rep, nil
}
