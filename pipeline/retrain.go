package pipeline

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"time"

	"github.com/chainwatch/chainwatch/ledgerclient"
	"github.com/chainwatch/chainwatch/ledgerclient/contract"
	"github.com/chainwatch/chainwatch/models"
	"github.com/chainwatch/chainwatch/models/features"
	"github.com/chainwatch/chainwatch/pipeline/integrity"
	"github.com/chainwatch/chainwatch/pipeline/kafkaconn"
)

// Scheduled retraining: every period, each profile's model is trained
// again on the latest verified history, judged against the active model on
// the windows held back from training (labelled by analysts' verdicts), and
// registered with the figures and the decision in its ledger record; it is
// promoted only when it is not worse by the rule below.
//
// It acts as an operator: the ledger lets the service itself promote only a
// profile's first model, so that a compromised service cannot swap the
// models that judge it. `chainwatch retrain` runs it with the operator's
// identity.

// RetrainConfig configures scheduled retraining. The zero value is off.
type RetrainConfig struct {
	// Every is the period between rounds; zero (the default) turns
	// scheduled retraining off.
	Every time.Duration `yaml:"every"`
	// History is the span of verified history each candidate trains on,
	// ending Holdout before the newest record. Default 24h.
	History time.Duration `yaml:"history"`
	// Holdout is the newest span of history, held back from training, on
	// which the candidate and the active model are compared. Default 2h.
	Holdout time.Duration `yaml:"holdout"`
	// RecallTolerance is how much lower than the active model's the
	// candidate's recall of windows analysts marked true positive may be.
	// Default 0.05.
	RecallTolerance float64 `yaml:"recall_tolerance"`
}

// WithDefaults fills zero fields but Every.
func (c RetrainConfig) WithDefaults() RetrainConfig {
	if c.History == 0 {
		c.History = 24 * time.Hour
	}
	if c.Holdout == 0 {
		c.Holdout = 2 * time.Hour
	}
	if c.RecallTolerance == 0 {
		c.RecallTolerance = 0.05
	}
	return c
}

// Validate reports the first invalid field, named as its key.
func (c RetrainConfig) Validate() error {
	c = c.WithDefaults()
	switch {
	case c.Every < 0:
		return fmt.Errorf("every: must not be negative, got %s", c.Every)
	case c.History < time.Hour:
		return fmt.Errorf("history: at least 1h of history to train on, got %s", c.History)
	case c.Holdout < 10*time.Minute:
		return fmt.Errorf("holdout: at least 10m held back to compare on, got %s", c.Holdout)
	case c.RecallTolerance < 0 || c.RecallTolerance > 1:
		return fmt.Errorf("recall_tolerance: must be in [0, 1], got %g", c.RecallTolerance)
	}
	return nil
}

// RetrainRequest is what a round needs.
type RetrainRequest struct {
	Config   RetrainConfig
	Detector DetectorConfig // forest settings, budget and incident rule
	Kafka    *kafkaconn.Cluster
	// Ledger acts as an operator: it registers and promotes.
	Ledger   *ledgerclient.Client
	Registry *Registry
	Store    *ModelStore // where candidates are saved and shared
	Topic    string
	// LeafTopic holds the batch index and leaf hashes (Topics.Leaves;
	// empty: the default).
	LeafTopic string
	Window    WindowConfig
	// Profiles to retrain; empty means every profile with an active model.
	Profiles []string
}

// RetrainDecision is one profile's outcome of a round.
type RetrainDecision struct {
	Profile   string    `json:"profile"`
	Candidate string    `json:"candidate,omitempty"`
	Active    string    `json:"active"`
	Since     time.Time `json:"trained_since"`
	Until     time.Time `json:"trained_until"`
	// HeldOut is the end of the comparison span, which starts at Until.
	HeldOut        time.Time `json:"held_out_until"`
	CandidateScore *Figures  `json:"candidate_figures,omitempty"`
	ActiveScore    *Figures  `json:"active_figures,omitempty"`
	Promoted       bool      `json:"promoted"`
	Reason         string    `json:"reason"`
}

// notWorse is the promotion rule: no more false incidents on the held-back
// windows than the active model, and — when analysts marked windows there
// true positive — a recall of them no lower than the active model's by
// more than tolerance.
func notWorse(cand, active Figures, tolerance float64) (bool, string) {
	if cand.FalseIncidents > active.FalseIncidents {
		return false, fmt.Sprintf("more false incidents on the held-back windows: %d against %d", cand.FalseIncidents, active.FalseIncidents)
	}
	if cand.Recall != nil && active.Recall != nil && *cand.Recall < *active.Recall-tolerance {
		return false, fmt.Sprintf("lower recall of true positives: %.3f against %.3f (tolerance %.3f)", *cand.Recall, *active.Recall, tolerance)
	}
	return true, fmt.Sprintf("not worse: %d false incidents against %d", cand.FalseIncidents, active.FalseIncidents)
}

// RetrainRound runs one round for every profile asked (or with an active
// model) and returns a decision per profile. A profile that cannot be
// retrained (too little verified history) gets a decision saying why; an
// error means the round could not run.
func RetrainRound(ctx context.Context, req RetrainRequest) ([]RetrainDecision, error) {
	cfg := req.Config.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("retrain.%w", err)
	}
	win := req.Window.WithDefaults()
	dc := req.Detector
	dc.WindowSize = win.Size
	dc = dc.WithDefaults()
	profiles := req.Profiles
	if len(profiles) == 0 {
		listed, err := req.Ledger.ListModels(ctx, "")
		if err != nil {
			return nil, err
		}
		seen := map[string]bool{}
		for _, m := range listed {
			if m.Active && !seen[m.Profile] {
				seen[m.Profile] = true
				profiles = append(profiles, m.Profile)
			}
		}
	}
	newest, err := NewestEventTime(ctx, req.Kafka, req.Topic)
	if err != nil {
		return nil, err
	}
	until := newest.Add(-cfg.Holdout).Truncate(win.Size)
	heldOut := newest.Truncate(win.Size)
	labels, err := LoadLabels(ctx, req.Ledger, "")
	if err != nil {
		return nil, err
	}
	var out []RetrainDecision
	for _, profile := range profiles {
		d := RetrainDecision{Profile: profile, Since: until.Add(-cfg.History), Until: until, HeldOut: heldOut}
		active, err := req.Store.Active(ctx, profile)
		if err != nil {
			return out, err
		}
		if active == nil {
			d.Reason = "no active model: the service trains the first one"
			out = append(out, d)
			continue
		}
		d.Active = active.Hash()
		hist := HistoryRequest{Kafka: req.Kafka, Ledger: req.Ledger, Registry: req.Registry, Topic: req.Topic, LeafTopic: req.LeafTopic,
			Since: d.Since, Until: d.Until, Profile: profile, Window: win}
		cand, series, _, err := TrainOnHistory(ctx, hist, dc)
		if errors.Is(err, models.ErrTooFewWindows) {
			d.Reason = err.Error()
			out = append(out, d)
			continue
		}
		if err != nil {
			return out, err
		}
		d.Candidate = cand.Hash()
		if cand.Hash() == active.Hash() {
			d.Reason = "the active model is what this history trains"
			out = append(out, d)
			continue
		}
		// The held-back windows, each device's baseline as the training
		// history leaves it under each model.
		held := hist
		held.Since, held.Until = until, heldOut
		var eval []OfflineSeries
		var labs [][]Label
		index := map[string]int{}
		if _, err := ReadHistory(ctx, held, func(w *HistoryWindow) error {
			i, ok := index[w.Device]
			if !ok {
				i = len(eval)
				index[w.Device] = i
				eval = append(eval, OfflineSeries{Device: w.Device})
				labs = append(labs, nil)
			}
			eval[i].Vectors = append(eval[i].Vectors, w.Vector)
			eval[i].Index = append(eval[i].Index, w.Start.UnixNano()/int64(win.Size))
			labs[i] = append(labs[i], labels.Of(w.Device, w.Start, w.End))
			return nil
		}); err != nil {
			return out, err
		}
		if len(eval) == 0 {
			d.Reason = "no verified held-back window to compare on"
			out = append(out, d)
			continue
		}
		rule := IncidentRule(dc)
		candFig, err := MeasureOffline(cand, "candidate", rule, eval, labs, trainedSeeds(cand, series), win.Size, 0)
		if err != nil {
			return out, err
		}
		d.CandidateScore = &candFig
		var activeFig Figures
		if refused := active.CheckSchema(); refused != nil {
			// An active model this build cannot read (one of an older
			// feature schema, after an upgrade) judges nothing: the
			// service leaves its profile unscored, so any model trained
			// here is better.
			d.Promoted, d.Reason = true, fmt.Sprintf("the active model cannot judge this build's windows, so the candidate replaces it: %v", refused)
		} else {
			activeSeeds, err := TrainingSeeds(ctx, hist, active)
			if err != nil {
				return out, err
			}
			if activeFig, err = MeasureOffline(active, "active", rule, eval, labs, activeSeeds, win.Size, 0); err != nil {
				return out, err
			}
			d.ActiveScore = &activeFig
			d.Promoted, d.Reason = notWorse(candFig, activeFig, cfg.RecallTolerance)
		}

		// The decision and its figures go into the candidate's ledger
		// record (its artifact stays what the history trains).
		if err := req.Store.Save(ctx, cand); err != nil {
			return out, fmt.Errorf("save candidate of %s: %w", profile, err)
		}
		metrics := maps.Clone(cand.Metrics)
		if metrics == nil {
			metrics = map[string]float64{}
		}
		decided := 0.0
		if d.Promoted {
			decided = 1
		}
		metrics["retrain_promoted"] = decided
		metrics["retrain_held_out_windows"] = float64(len(candFig.scores))
		metrics["retrain_false_incidents_per_1000_device_hours"] = candFig.FalseIncidentsPer1000D
		metrics["retrain_false_alerts_per_1000_device_hours"] = candFig.FalseAlertsPer1000DH
		if d.ActiveScore != nil {
			metrics["retrain_active_false_incidents_per_1000_device_hours"] = activeFig.FalseIncidentsPer1000D
			metrics["retrain_active_false_alerts_per_1000_device_hours"] = activeFig.FalseAlertsPer1000DH
		}
		if candFig.Recall != nil && activeFig.Recall != nil {
			metrics["retrain_recall"], metrics["retrain_active_recall"] = *candFig.Recall, *activeFig.Recall
		}
		if _, err := req.Ledger.RegisterModel(ctx, contract.Model{Hash: cand.Hash(), Profile: profile, Algorithm: cand.Algorithm,
			TrainingAnchors: cand.TrainingData, Metrics: metrics}); err != nil {
			return out, fmt.Errorf("register candidate of %s: %w", profile, err)
		}
		if d.Promoted {
			if _, err := req.Ledger.PromoteModel(ctx, cand.Hash()); err != nil {
				return out, fmt.Errorf("promote candidate of %s: %w", profile, err)
			}
		}
		out = append(out, d)
	}
	return out, nil
}

// trainedSeeds are the baselines m's training would leave each device of
// series.
func trainedSeeds(m *models.Model, series []models.DeviceSeries) map[string]models.DeviceBaseline {
	seeds := make(map[string]models.DeviceBaseline, len(series))
	for _, s := range series {
		seeds[s.Device] = m.TrainedBaseline(s.Vectors)
	}
	return seeds
}

// TrainingSeeds are the baselines m's training left each device, so that a
// model judges a device against the normal it learnt for it, as the service
// does: the windows of the span of the anchors m records as its training
// data are read again (req gives the topic, the profile and the rest;
// its period is replaced). A model whose training data name no anchor of
// this ledger (trained from a CSV) has none: nil, and its devices start
// from their lead-in.
func TrainingSeeds(ctx context.Context, req HistoryRequest, m *models.Model) (map[string]models.DeviceBaseline, error) {
	var from, to time.Time
	index := integrity.NewLeafTopic(req.Kafka, req.LeafTopic)
	defer index.Close()
	anchors := integrity.NewAnchors(req.Ledger, index)
	for _, id := range m.TrainingData {
		a, err := anchors.Get(ctx, id)
		if err != nil {
			continue // not an anchor: a CSV digest, a warm-up reference
		}
		if from.IsZero() || a.FirstTimestamp.Before(from) {
			from = a.FirstTimestamp
		}
		if a.LastTimestamp.After(to) {
			to = a.LastTimestamp
		}
	}
	if from.IsZero() || !to.After(from) {
		return nil, nil
	}
	size := req.Window.WithDefaults().Size
	req.Since, req.Until = from.Truncate(size), to.Truncate(size)
	series := map[string][]features.Vector{}
	if _, err := ReadHistory(ctx, req, func(w *HistoryWindow) error {
		series[w.Device] = append(series[w.Device], w.Vector)
		return nil
	}); err != nil {
		return nil, fmt.Errorf("training windows of %s: %w", m.Hash(), err)
	}
	seeds := make(map[string]models.DeviceBaseline, len(series))
	for d, vs := range series {
		seeds[d] = m.TrainedBaseline(vs)
	}
	return seeds, nil
}

// NewestEventTime is the newest record timestamp of a topic's partitions:
// of records, not of a transactional producer's commit markers
// (integrity.NewestRecord).
func NewestEventTime(ctx context.Context, cluster *kafkaconn.Cluster, topic string) (time.Time, error) {
	parts, err := TopicPartitions(ctx, cluster, topic)
	if err != nil {
		return time.Time{}, err
	}
	var newest time.Time
	for _, p := range parts {
		conn, err := cluster.DialLeader(ctx, topic, int(p))
		if err != nil {
			return time.Time{}, err
		}
		first, end, err := conn.ReadOffsets()
		conn.Close()
		if err != nil {
			return time.Time{}, fmt.Errorf("topic %s/%d: %w", topic, p, err)
		}
		if end <= first {
			continue
		}
		rec, err := integrity.NewestRecord(ctx, cluster, topic, p, first, end)
		if err != nil {
			return time.Time{}, err
		}
		if rec != nil && rec.Timestamp.After(newest) {
			newest = rec.Timestamp
		}
	}
	if newest.IsZero() {
		return newest, fmt.Errorf("topic %s holds no record", topic)
	}
	return newest, nil
}
