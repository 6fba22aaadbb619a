package pipeline

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/chainwatch/chainwatch/models"
	"github.com/chainwatch/chainwatch/models/eval"
	"github.com/chainwatch/chainwatch/models/features"
	"github.com/chainwatch/chainwatch/models/iforest"
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
// with. The sustained, persistent and evidence rules' levels are fitted by
// the model to exactly their statistics, so their window counts come from
// there, not from configuration.
func IncidentRule(cfg DetectorConfig) incidents.Rule {
	r := cfg.WithDefaults().Incident
	r.SK, r.SN = models.SustainedK, models.SustainedN
	r.PK, r.PN = models.PersistentK, models.PersistentN
	r.EN = models.EvidenceN
	return r.WithDefaults()
}

// JudgeOffline judges every series with m and returns one judgement per
// window, series after series, and the number of incidents opened. A
// device's baseline starts from seeds (the baseline m's training left it,
// models.TrainedBaseline) when it has one there, else from its lead-in
// windows (the profile prior without any).
//
// The windows are judged as the detector judges them: each device's in
// turn, all devices' windows of one index together, tallied in the
// profile's fleet episode before any of them moves its device's incident
// (fleetJudge). A fleet episode counts as one incident, holding the windows
// of the device incidents it absorbed.
func JudgeOffline(m *models.Model, rule incidents.Rule, series []OfflineSeries, seeds map[string]models.DeviceBaseline) ([]OfflineJudgement, int, error) {
	if err := m.CheckSchema(); err != nil {
		return nil, 0, err
	}
	const dims = models.ResidualDims
	// Every window, by index and then series: (series, window) pairs.
	type at struct{ k, i int }
	var order []at
	first := make([]int, len(series)) // where each series starts in out
	baselines := make([]models.DeviceBaseline, len(series))
	total := 0
	for k, s := range series {
		if len(s.Index) != len(s.Vectors) {
			return nil, 0, fmt.Errorf("offline judgement: %s has %d windows and %d indices", s.Device, len(s.Vectors), len(s.Index))
		}
		first[k] = total
		total += len(s.Vectors)
		b, ok := seeds[s.Device]
		if !ok {
			b = m.WarmBaseline(s.LeadIn)
		}
		baselines[k] = b
		for i := range s.Vectors {
			order = append(order, at{k, i})
		}
	}
	slices.SortStableFunc(order, func(a, b at) int { return cmp.Compare(series[a.k].Index[a.i], series[b.k].Index[b.i]) })
	out := make([]OfflineJudgement, total)
	var (
		fleet   fleetJudge
		fleetID = -1 // the newest episode's incident number
		states  = make([]incidents.State, len(series))
		current = make([]int, len(series)) // each device's incident number
		rows    []float64
		scores  []float64
		js      []models.Judgement
		index   []int64
		novel   []bool
		events  []incidents.Event
		opened  int
	)
	for g := 0; g < len(order); {
		h := g
		for h < len(order) && series[order[h].k].Index[order[h].i] == series[order[g].k].Index[order[g].i] {
			h++
		}
		group := order[g:h]
		rows = slices.Grow(rows[:0], len(group)*dims)[:len(group)*dims]
		for n, w := range group {
			m.Residuals(&baselines[w.k], &series[w.k].Vectors[w.i], rows[n*dims:(n+1)*dims])
		}
		scores = slices.Grow(scores[:0], len(group))[:len(group)]
		if err := m.Forest().ScoreBatch(scores, rows); err != nil {
			return nil, 0, err
		}
		js, index, novel = js[:0], index[:0], novel[:0]
		for n, w := range group {
			j := m.Judge(rows[n*dims:(n+1)*dims], scores[n])
			js = append(js, j)
			index = append(index, series[w.k].Index[w.i])
			novel = append(novel, raised(j) && novelWindow(m, &baselines[w.k], &series[w.k].Vectors[w.i], rows[n*dims:(n+1)*dims]))
		}
		fleet.tally(rule, index, rows, novel, js, nil, func(int, incidents.Event) {})
		for n, w := range group {
			j, r := js[n], rows[n*dims:(n+1)*dims]
			var joined, opening, learn bool
			events, joined, opening, learn = fleet.advance(rule, m, &states[w.k], incidentWindow(index[n], j, m, &baselines[w.k]), j, r, novel[n], events[:0])
			if opening {
				fleetID = opened
				opened++
			}
			for _, ev := range events {
				if ev.Status == incidents.Opened {
					current[w.k] = opened
					opened++
				}
			}
			if joined {
				current[w.k] = fleetID
			}
			if learn || baselines[w.k].Young() {
				m.Learn(&baselines[w.k], &series[w.k].Vectors[w.i])
				baselines[w.k].LearnRaised(j)
			}
			oj := OfflineJudgement{Score: j.Score, Anomalous: j.Anomalous, Incident: -1}
			if states[w.k].Open() && (j.Anomalous || len(events) > 0 || joined) {
				oj.Incident = current[w.k]
			}
			out[first[w.k]+w.i] = oj
		}
		g = h
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
//
// It also returns the training windows as device series, in the order they
// trained.
func TrainOnHistory(ctx context.Context, req HistoryRequest, cfg DetectorConfig) (*models.Model, []models.DeviceSeries, HistoryReport, error) {
	if req.Profile == "" {
		return nil, nil, HistoryReport{}, errors.New("train on history: a profile is required")
	}
	cfg = cfg.WithDefaults()
	var rows []warmRow
	var peers features.PeerCounter
	rep, err := ReadHistory(ctx, req, func(w *HistoryWindow) error {
		rows = append(rows, warmRow{start: w.Start.UnixNano(), device: w.Device, vector: w.Vector,
			partition: w.Partition, first: w.FirstOffset, last: w.LastOffset})
		peers.Add(stableHash(w.Device), w.window)
		return nil
	})
	if err != nil {
		return nil, nil, rep, err
	}
	if len(rows) < cfg.MinTrainingWindows {
		return nil, nil, rep, fmt.Errorf("%w: %d verified windows of %s in the period, at least %d needed (detector.min_training_windows)",
			models.ErrTooFewWindows, len(rows), req.Profile, cfg.MinTrainingWindows)
	}
	until := req.Until.UTC()
	series := warmSeries(rows, cfg.WindowSize)
	m, _, err := models.TrainBehaviour(series, models.BehaviourOptions{
		Forest: iforest.Config{
			Trees: cfg.Trees, Subsample: cfg.Subsample, Extension: cfg.Extension,
			Seed: cfg.Seed ^ stableHash(req.Profile),
		},
		Budget:       cfg.Budget(),
		Profile:      req.Profile,
		TrainingData: rep.Anchors,
		Now:          func() time.Time { return until },
		Peers:        peers.Shared(-1),
	})
	if err != nil {
		return nil, nil, rep, fmt.Errorf("train %s on history: %w", req.Profile, err)
	}
	return m, series, rep, nil
}

// Figures is one model's evaluation on a labelled period.
type Figures struct {
	Model   string   `json:"model"`
	Role    string   `json:"role"` // candidate or active
	AUC     *float64 `json:"roc_auc"`
	AP      *float64 `json:"average_precision"`
	PAtK    *float64 `json:"precision_at_k"`
	K       int      `json:"k"`
	Recall  *float64 `json:"recall_at_budget"`
	Flagged int      `json:"anomalous_windows"`
	// FalseAlerts counts anomalous windows labelled normal (or unlabelled);
	// FalseIncidents counts incidents none of whose windows is labelled
	// anomalous.
	FalseAlerts            int     `json:"false_alerts"`
	FalseAlertsPer1000DH   float64 `json:"false_alerts_per_1000_device_hours"`
	Incidents              int     `json:"incidents"`
	FalseIncidents         int     `json:"false_incidents"`
	FalseIncidentsPer1000D float64 `json:"false_incidents_per_1000_device_hours"`

	scores []float64
	truth  []bool
}

// Curve is the model's ROC curve on the judged windows (nil when the
// labels hold one class).
func (f *Figures) Curve() eval.Curve {
	if f.AUC == nil {
		return eval.Curve{}
	}
	fpr, tpr := eval.ROC(f.scores, f.truth)
	return eval.Curve{Title: f.Role + " " + f.Model[:12], FPR: fpr, TPR: tpr, AUC: *f.AUC}
}

// MeasureOffline judges series with m as the detector would (JudgeOffline)
// and measures the judgement against labels (per series, per window;
// unlabelled windows count as normal): ranking metrics over every window,
// recall of anomalous windows at the model's threshold, false alerts and
// false incidents (incidents none of whose windows is labelled anomalous)
// per 1,000 device-hours of windows of the given size. k ≤ 0 means the
// number of anomalous windows.
func MeasureOffline(m *models.Model, role string, rule incidents.Rule, series []OfflineSeries, labels [][]Label, seeds map[string]models.DeviceBaseline, window time.Duration, k int) (Figures, error) {
	js, incidents, err := JudgeOffline(m, rule, series, seeds)
	if err != nil {
		return Figures{}, fmt.Errorf("%s model %s: %w", role, m.Hash(), err)
	}
	f := Figures{Model: m.Hash(), Role: role, Incidents: incidents}
	scores := make([]float64, 0, len(js))
	truth := make([]bool, 0, len(js))
	trueIncident := make([]bool, incidents)
	positives, caught := 0, 0
	n := 0
	for i := range series {
		for _, l := range labels[i] {
			j := js[n]
			n++
			pos := l.Anomalous()
			scores = append(scores, j.Score)
			truth = append(truth, pos)
			if pos {
				positives++
				if j.Anomalous {
					caught++
				}
				if j.Incident >= 0 {
					trueIncident[j.Incident] = true
				}
			}
			if j.Anomalous {
				f.Flagged++
				if !pos {
					f.FalseAlerts++
				}
			}
		}
	}
	for _, t := range trueIncident {
		if !t {
			f.FalseIncidents++
		}
	}
	hours := float64(len(js)) * window.Hours()
	if hours > 0 {
		f.FalseAlertsPer1000DH = Round3(float64(f.FalseAlerts) / hours * 1000)
		f.FalseIncidentsPer1000D = Round3(float64(f.FalseIncidents) / hours * 1000)
	}
	if positives > 0 {
		r := Round3(float64(caught) / float64(positives))
		f.Recall = &r
	}
	if res, err := eval.Evaluate(scores, truth, k); err == nil {
		auc, ap, pk := Round3(res.AUC), Round3(res.AP), Round3(res.PrecisionAtK)
		f.AUC, f.AP, f.PAtK, f.K = &auc, &ap, &pk, res.K
	}
	f.scores, f.truth = scores, truth
	return f, nil
}

// Round3 rounds a reported figure to three decimals.
func Round3(x float64) float64 { return math.Round(x*1000) / 1000 }
