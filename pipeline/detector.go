package pipeline

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/chainwatch/chainwatch/ledgerclient/contract"
	"github.com/chainwatch/chainwatch/models"
	"github.com/chainwatch/chainwatch/models/features"
	"github.com/chainwatch/chainwatch/models/iforest"
)

// DetectorConfig sets how windows are scored and how a profile's first
// model is trained. The zero value means the documented defaults.
type DetectorConfig struct {
	// Warmup is the span of event time whose windows train a profile's
	// first model when the ledger has none. Default 24h: one whole daily
	// cycle, so that night and day traffic are both normal to the model.
	Warmup time.Duration `yaml:"warmup"`
	// MinTrainingWindows is the fewest windows a first model trains on,
	// however long the warm-up has run. Default 256.
	MinTrainingWindows int `yaml:"min_training_windows"`
	// Contamination is the share of warm-up windows assumed anomalous; it
	// places the alert threshold. Default 0.005.
	Contamination float64 `yaml:"contamination"`
	// Trees, Subsample, Extension and Seed are the forest's hyperparameters
	// (models/iforest.Config). Defaults: the paper's 100 trees of ψ = 256,
	// axis-parallel splits.
	Trees     int    `yaml:"trees"`
	Subsample int    `yaml:"subsample"`
	Extension int    `yaml:"extension"`
	Seed      uint64 `yaml:"seed"`
	// TopFeatures is how many contributing features an alert lists. Default 3.
	TopFeatures int `yaml:"top_features"`
}

// WithDefaults fills zero fields.
func (c DetectorConfig) WithDefaults() DetectorConfig {
	if c.Warmup == 0 {
		c.Warmup = 24 * time.Hour
	}
	if c.MinTrainingWindows == 0 {
		c.MinTrainingWindows = 256
	}
	if c.Contamination == 0 {
		c.Contamination = 0.005
	}
	if c.TopFeatures == 0 {
		c.TopFeatures = 3
	}
	if c.Trees == 0 {
		c.Trees = 100
	}
	if c.Subsample == 0 {
		c.Subsample = 256
	}
	return c
}

// Validate names the first unusable field.
func (c DetectorConfig) Validate() error {
	c = c.WithDefaults()
	switch {
	case c.Warmup < 0:
		return fmt.Errorf("warmup: must be positive, got %s", c.Warmup)
	case c.MinTrainingWindows < 2:
		return fmt.Errorf("min_training_windows: must be at least 2, got %d", c.MinTrainingWindows)
	case !(c.Contamination > 0 && c.Contamination < 0.5):
		return fmt.Errorf("contamination: must be in (0, 0.5), got %v", c.Contamination)
	case c.TopFeatures < 1 || c.TopFeatures > features.Count:
		return fmt.Errorf("top_features: must be in [1, %d], got %d", features.Count, c.TopFeatures)
	}
	if err := (iforest.Config{Trees: c.Trees, Subsample: c.Subsample, Extension: c.Extension}).Validate(features.Count); err != nil {
		return fmt.Errorf("trees/subsample/extension: %w", err)
	}
	return nil
}

// Detector scores closed windows with their profile's model and turns
// scores above the calibrated threshold into alerts. It is where a score
// becomes an alert. Until a profile has a model, its windows feed warm-up
// training instead.
type Detector struct {
	cfg      DetectorConfig
	store    *ModelStore
	verifier HistoryVerifier // nil: train without proving the history (tests)
	metrics  *Metrics
	log      *slog.Logger
	topic    string

	mu       sync.Mutex
	profiles map[string]*profileState
	// batch buffers, reused under mu
	batchData   []float64
	batchScores []float64
}

type profileState struct {
	model    *models.Model
	checked  bool // asked the ledger for an active model
	warm     []warmRow
	warmFrom time.Time
	warmTo   time.Time
}

// warmRow is one warm-up window. Rows are sorted by (start, device) before
// training, so the model does not depend on how partitions interleaved.
type warmRow struct {
	start       int64
	device      string
	vector      features.Vector
	partition   int32
	first, last int64 // offsets of the window's records
}

// NewDetector returns a detector over the given model store.
// NewDetector returns a detector over the given model store. With a
// verifier, a first model trains only once its warm-up windows' records are
// proven untampered against their anchors.
func NewDetector(cfg DetectorConfig, store *ModelStore, verifier HistoryVerifier, topic string, metrics *Metrics, log *slog.Logger) *Detector {
	return &Detector{cfg: cfg.WithDefaults(), store: store, verifier: verifier, metrics: metrics, log: log, topic: topic, profiles: map[string]*profileState{}}
}

// Model returns the profile's active model, or nil while it warms up.
func (d *Detector) Model(profile string) *models.Model {
	d.mu.Lock()
	defer d.mu.Unlock()
	if p := d.profiles[profile]; p != nil {
		return p.model
	}
	return nil
}

// Score judges one closed window. It returns the alert the window raises,
// if any, and whether the window counts as normal behaviour the device's
// history may learn from.
func (d *Detector) Score(ctx context.Context, cw *ClosedWindow) (*contract.Alert, bool, error) {
	verdicts, err := d.ScoreWindows(ctx, []ClosedWindow{*cw}, nil)
	if err != nil {
		return nil, false, err
	}
	return verdicts[0].Alert, verdicts[0].Learn, nil
}

// Verdict is the judgement of one closed window: the alert it raises, if
// any, and whether the device's history may learn from it.
type Verdict struct {
	Alert *contract.Alert
	Learn bool
}

// ScoreWindows judges closed windows, appending one Verdict per window to
// out in order. Windows of profiles with a model are scored together with
// the forest's batch scorer: a partition's watermark closes hundreds at
// once, and scoring them in lockstep is several times faster than one by one.
func (d *Detector) ScoreWindows(ctx context.Context, windows []ClosedWindow, out []Verdict) ([]Verdict, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	first := len(out)
	for range windows {
		out = append(out, Verdict{Learn: true})
	}
	// Group the windows to score by profile; warm-up windows go their way.
	byProfile := map[string][]int{}
	for i := range windows {
		cw := &windows[i]
		p, err := d.profile(ctx, cw.Profile)
		if err != nil {
			return out, err
		}
		if p.model == nil {
			if err := d.warmUp(ctx, cw, p); err != nil {
				return out, err
			}
			continue
		}
		byProfile[cw.Profile] = append(byProfile[cw.Profile], i)
	}
	for profile, idx := range byProfile {
		p := d.profiles[profile]
		d.batchData = d.batchData[:0]
		for _, i := range idx {
			d.batchData = append(d.batchData, windows[i].Vector[:]...)
		}
		d.batchScores = append(d.batchScores[:0], make([]float64, len(idx))...)
		if err := p.model.Forest().ScoreBatch(d.batchScores, d.batchData); err != nil {
			return out, err
		}
		for k, i := range idx {
			alert := d.judge(&windows[i], p.model, d.batchScores[k])
			out[first+i] = Verdict{Alert: alert, Learn: alert == nil}
		}
	}
	return out, nil
}

// profile returns a profile's state, asking the ledger once for its active
// model.
func (d *Detector) profile(ctx context.Context, name string) (*profileState, error) {
	p := d.profiles[name]
	if p == nil {
		p = &profileState{}
		d.profiles[name] = p
	}
	if !p.checked {
		m, err := d.store.Active(ctx, name)
		if err != nil {
			return nil, err
		}
		p.checked = true
		if m != nil {
			d.activate(name, p, m, "loaded from the ledger's active model")
		}
	}
	return p, nil
}

// judge turns a window's score into an alert when it reaches the model's
// calibrated threshold, with its confidence and explanation.
func (d *Detector) judge(cw *ClosedWindow, m *models.Model, score float64) *contract.Alert {
	d.metrics.WindowsScored.WithLabelValues(cw.Profile).Inc()
	d.metrics.Scores.WithLabelValues(cw.Profile).Observe(score)
	d.metrics.Summary.WindowsScored.Add(1)
	cal := m.Calibration
	if !cal.Anomalous(score) {
		return nil
	}
	hash := m.Hash()
	alert := &contract.Alert{
		ID:          contract.AlertID(contract.AlertBehaviour, cw.DeviceID, cw.Start, cw.End, hash),
		Kind:        contract.AlertBehaviour,
		DeviceID:    cw.DeviceID,
		Profile:     cw.Profile,
		WindowStart: cw.Start,
		WindowEnd:   cw.End,
		Score:       score,
		Confidence:  string(cal.Confidence(score)),
		ModelHash:   hash,
		Evidence: contract.Evidence{
			Topic: d.topic, Partition: cw.Partition, Offsets: []int64{cw.FirstOffset, cw.LastOffset},
		},
	}
	for _, c := range m.Explain(cw.Vector[:], d.cfg.TopFeatures) {
		alert.Features = append(alert.Features, contract.Contribution(c))
	}
	return alert
}

// warmUp collects a window for the profile's first model and trains it once
// the warm-up span and minimum row count are reached.
func (d *Detector) warmUp(ctx context.Context, cw *ClosedWindow, p *profileState) error {
	p.warm = append(p.warm, warmRow{start: cw.Start.UnixNano(), device: cw.DeviceID, vector: cw.Vector,
		partition: cw.Partition, first: cw.FirstOffset, last: cw.LastOffset})
	if p.warmFrom.IsZero() || cw.Start.Before(p.warmFrom) {
		p.warmFrom = cw.Start
	}
	if cw.End.After(p.warmTo) {
		p.warmTo = cw.End
	}
	rows := len(p.warm)
	d.metrics.WarmupWindows.WithLabelValues(cw.Profile).Set(float64(rows))
	if p.warmTo.Sub(p.warmFrom) < d.cfg.Warmup || rows < d.cfg.MinTrainingWindows {
		return nil
	}
	started := time.Now()
	refs := []string{fmt.Sprintf("warmup:%s:%s/%s", d.topic, p.warmFrom.Format(time.RFC3339), p.warmTo.Format(time.RFC3339))}
	if d.verifier != nil {
		// Train only on history proven untampered: the windows' records
		// must sit in anchored ranges whose roots still match.
		anchors, err := d.verifier(ctx, warmRanges(p.warm))
		if err != nil {
			d.log.Error("first model not trained: its warm-up history is not verified; still warming up",
				"profile", cw.Profile, "windows", rows, "err", err)
			return nil
		}
		refs = anchors
	}
	slices.SortFunc(p.warm, func(a, b warmRow) int {
		if c := cmp.Compare(a.start, b.start); c != 0 {
			return c
		}
		return strings.Compare(a.device, b.device)
	})
	data := make([]float64, 0, rows*features.Count)
	for _, r := range p.warm {
		data = append(data, r.vector[:]...)
	}
	m, err := models.Train(data, features.Names[:], models.TrainOptions{
		Forest: iforest.Config{
			Trees: d.cfg.Trees, Subsample: d.cfg.Subsample, Extension: d.cfg.Extension,
			Seed: d.cfg.Seed ^ stableHash(cw.Profile),
		},
		Contamination: d.cfg.Contamination,
		Profile:       cw.Profile,
		TrainingData:  refs,
	})
	if err != nil {
		return fmt.Errorf("train first model of %s: %w", cw.Profile, err)
	}
	active, err := d.store.Bootstrap(ctx, m, refs)
	if err != nil {
		return fmt.Errorf("bootstrap model of %s: %w", cw.Profile, err)
	}
	d.log.Info("trained first model on verified warm-up traffic",
		"profile", cw.Profile, "windows", rows, "training_refs", len(refs), "event_time_span", p.warmTo.Sub(p.warmFrom).String(),
		"took", time.Since(started).Round(time.Millisecond).String())
	p.warm = nil
	d.activate(cw.Profile, p, active, "registered and promoted on the ledger")
	return nil
}

// warmRanges covers the records of the warm-up windows, per partition.
func warmRanges(rows []warmRow) []OffsetRange {
	byPartition := map[int32]*OffsetRange{}
	for _, r := range rows {
		pr := byPartition[r.partition]
		if pr == nil {
			byPartition[r.partition] = &OffsetRange{Partition: r.partition, First: r.first, Last: r.last}
			continue
		}
		pr.First, pr.Last = min(pr.First, r.first), max(pr.Last, r.last)
	}
	out := make([]OffsetRange, 0, len(byPartition))
	for _, pr := range byPartition {
		out = append(out, *pr)
	}
	slices.SortFunc(out, func(a, b OffsetRange) int { return cmp.Compare(a.Partition, b.Partition) })
	return out
}

func (d *Detector) activate(profile string, p *profileState, m *models.Model, how string) {
	p.model = m
	d.metrics.ModelInfo.WithLabelValues(profile, m.Hash(), m.Algorithm).Set(1)
	d.metrics.ModelThreshold.WithLabelValues(profile).Set(m.Calibration.Threshold)
	d.metrics.WarmupWindows.DeleteLabelValues(profile)
	d.log.Info("model active", "profile", profile, "hash", m.Hash(), "algorithm", m.Algorithm,
		"threshold", strconv.FormatFloat(m.Calibration.Threshold, 'f', 4, 64), "how", how)
}

// stableHash gives each profile its own forest seed.
func stableHash(s string) uint64 {
	h := uint64(14695981039346656037) // FNV-1a
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return h
}
