package pipeline

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/chainwatch/chainwatch/ledgerclient/contract"
	"github.com/chainwatch/chainwatch/models"
	"github.com/chainwatch/chainwatch/models/features"
	"github.com/chainwatch/chainwatch/models/iforest"
	"github.com/chainwatch/chainwatch/pipeline/incidents"
	"github.com/chainwatch/chainwatch/pipeline/integrity"
)

// DetectorConfig sets how windows are scored, when anomalous windows
// become incidents and how a profile's first model is trained. The zero
// value means the documented defaults.
type DetectorConfig struct {
	// Warmup is the span of event time whose windows train a profile's
	// first model when the ledger has none. Default 24h: one whole daily
	// cycle, so that night and day traffic are both normal to the model.
	Warmup time.Duration `yaml:"warmup"`
	// MinTrainingWindows is the fewest windows a first model trains on,
	// however long the warm-up has run. Default 256.
	MinTrainingWindows int `yaml:"min_training_windows"`
	// FalseAlertsPer1000DeviceHours is the false-incident budget the
	// thresholds are placed for (models.Budget): the rate a SOC plans
	// staffing by. Default 1.
	FalseAlertsPer1000DeviceHours float64 `yaml:"false_alerts_per_1000_device_hours"`
	// Incident is the hysteresis that groups anomalous windows: K of the
	// last N open an incident (one extreme window opens one alone), M
	// quiet windows close it. Defaults 2, 3, 5.
	Incident incidents.Rule `yaml:"incident"`
	// Trees, Subsample, Extension and Seed are the forest's hyperparameters
	// (models/iforest.Config). Defaults: the paper's 100 trees of ψ = 256,
	// axis-parallel splits.
	Trees     int    `yaml:"trees"`
	Subsample int    `yaml:"subsample"`
	Extension int    `yaml:"extension"`
	Seed      uint64 `yaml:"seed"`
	// TopFeatures is how many contributing features an alert lists. Default 3.
	TopFeatures int `yaml:"top_features"`
	// ModelPoll is how often the ledger is asked whether a profile's
	// active model changed (promoted by an operator, or trained first by
	// another instance); a changed one is swapped in without a restart.
	// A model one instance promotes reaches the others within this.
	// Default 5s (a read of the ledger's state, no transaction); negative
	// turns it off.
	ModelPoll time.Duration `yaml:"model_poll"`
	// WindowSize is the windows' length, which turns the budget per
	// device-hour into one per window; the service sets it from
	// window.size. Default 1m.
	WindowSize time.Duration `yaml:"-"`
}

// WithDefaults fills zero fields.
func (c DetectorConfig) WithDefaults() DetectorConfig {
	if c.Warmup == 0 {
		c.Warmup = 24 * time.Hour
	}
	if c.MinTrainingWindows == 0 {
		c.MinTrainingWindows = 256
	}
	if c.FalseAlertsPer1000DeviceHours == 0 {
		c.FalseAlertsPer1000DeviceHours = 1
	}
	c.Incident = c.Incident.WithDefaults()
	if c.ModelPoll == 0 {
		c.ModelPoll = 5 * time.Second
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
	if c.WindowSize == 0 {
		c.WindowSize = time.Minute
	}
	return c
}

// Budget is the models.Budget the configuration asks for.
func (c DetectorConfig) Budget() models.Budget {
	return models.Budget{FalseAlertsPer1000DeviceHours: c.FalseAlertsPer1000DeviceHours,
		WindowSeconds: c.WindowSize.Seconds(), K: c.Incident.K, N: c.Incident.N, M: c.Incident.M}
}

// Validate names the first unusable field.
func (c DetectorConfig) Validate() error {
	c = c.WithDefaults()
	switch {
	case c.Warmup < 0:
		return fmt.Errorf("warmup: must be positive, got %s", c.Warmup)
	case c.MinTrainingWindows < 2:
		return fmt.Errorf("min_training_windows: must be at least 2, got %d", c.MinTrainingWindows)
	case !(c.FalseAlertsPer1000DeviceHours > 0 && c.FalseAlertsPer1000DeviceHours <= 1e6):
		return fmt.Errorf("false_alerts_per_1000_device_hours: must be in (0, 1e6], got %v", c.FalseAlertsPer1000DeviceHours)
	case c.TopFeatures < 1 || c.TopFeatures > features.Count:
		return fmt.Errorf("top_features: must be in [1, %d], got %d", features.Count, c.TopFeatures)
	}
	if err := c.Incident.Validate(); err != nil {
		return fmt.Errorf("incident.%w", err)
	}
	if err := (iforest.Config{Trees: c.Trees, Subsample: c.Subsample, Extension: c.Extension}).Validate(models.ResidualDims); err != nil {
		return fmt.Errorf("trees/subsample/extension: %w", err)
	}
	return nil
}

// Detector scores closed windows with their profile's behaviour model
// against each device's own baseline, and groups anomalous windows into
// incidents. It is where a score becomes an alert. Until a profile has a
// model, its windows feed warm-up training instead.
type Detector struct {
	cfg      DetectorConfig
	store    *ModelStore
	verifier integrity.HistoryVerifier // nil: train without proving the history (tests)
	metrics  *Metrics
	log      *slog.Logger
	topic    string
	watch    *watchedDevices
	// verifyRetry is how long a profile waits to verify its warm-up
	// history again after verification could not run.
	verifyRetry time.Duration

	// shared maps each profile with an active model to what the model
	// tells the time features (profileView), copied on write under mu,
	// read without it as windows are observed.
	shared atomic.Pointer[map[string]*features.Profile]

	mu       sync.Mutex
	profiles map[string]*profileState
	// batch buffers, reused under mu
	batchData     []float64
	batchScores   []float64
	batchWindows  []*ClosedWindow
	batchVerdicts []Verdict
	batchJudged   []models.Judgement
	batchIndex    []int64
	batchNovel    []bool
	batchBases    []*models.DeviceBaseline
	batchSeen     map[string]struct{}
	events        []incidents.Event
}

type profileState struct {
	model *models.Model
	// refused is why the ledger's active model cannot be used (another
	// feature schema); the profile's windows are then counted, not scored.
	refused error
	checked bool // asked the ledger for an active model
	warm    []warmRow
	// peers counts which destinations the warm-up's devices share
	// (models.Behaviour.Peers).
	peers features.PeerCounter
	// warmingView is the profile as its warm-up windows are observed:
	// sharing what peers counted so far (features.Warming).
	warmingView *features.Profile
	warmFrom    time.Time
	warmTo      time.Time
	// held are windows past the warm-up span, scored once the model exists.
	held     heldWindows
	heldFull bool // maxHeldWindows reached, and said so
	// fleet groups what most of the profile's devices do at once.
	fleet fleetJudge
	// partTo is, per partition, the end of its newest window.
	// Partitions are read at their own pace — one can be an hour of
	// event time ahead of another when the service starts on a backlog —
	// and the warm-up is complete only when every one of them covers it:
	// a model trained once the fastest did would judge the others'
	// devices before it had seen any of their traffic.
	partTo map[int32]time.Time
	// refusedHash is a promoted model Refresh refused, not tried again.
	refusedHash string
	// unavailable is why the ledger's active model is not loaded yet: its
	// artifact is in neither the model directory nor the model topic.
	// Refresh tries again; meanwhile the profile's windows are counted,
	// not scored. missingHash is the hash last logged as missing.
	unavailable error
	missingHash string
	// epoch counts the models swapped in after the first: a device whose
	// baseline was learned under an earlier one (deviceState.epoch behind)
	// starts it again from the new model's profile prior at its next
	// window, since a promoted model says what normal is now.
	epoch uint32
	// extend lengthens the warm-up span when history that no longer
	// verifies was left out; retryAt delays verification after it
	// failed to run.
	extend  time.Duration
	retryAt time.Time
	// verifying receives the result of the warm-up history's
	// verification, which runs in the background (it waits for the
	// anchoring stage to seal the warm-up's records, then re-reads and
	// hashes them): meanwhile the profile's windows are held and every
	// other profile is scored. verifyRows is how many warm-up rows it
	// covers.
	verifying  chan verification
	verifyRows int
	// drift compares live windows with the model's training data.
	drift *models.DriftTracker
	// scored, scores, warming and held are the profile's series of
	// WindowsScored, Scores, WarmupWindows and WindowsHeld, looked up
	// once rather than at every window.
	scored    prometheus.Counter
	scores    prometheus.Observer
	warming   prometheus.Gauge
	heldGauge prometheus.Gauge
	// seeds are the baselines training left for the warm-up devices,
	// taken by each device's state at its first scored window.
	seeds map[string]models.DeviceBaseline
}

// warmRow is one warm-up window. Rows are sorted by (device, start) before
// training, so the model does not depend on how partitions interleaved.
type warmRow struct {
	start       int64
	device      string
	vector      features.Vector
	partition   int32
	first, last int64 // offsets of the window's records
	// others are the window's records on other partitions
	// (ClosedWindow.Others).
	others []integrity.OffsetRange
	// peerRow numbers the window in the profile's PeerCounter.
	peerRow int
}

// NewDetector returns a detector over the given model store. With a
// verifier, a first model trains only once its warm-up windows' records are
// proven untampered against their anchors.
func NewDetector(cfg DetectorConfig, store *ModelStore, verifier integrity.HistoryVerifier, topic string, metrics *Metrics, log *slog.Logger) *Detector {
	cfg = cfg.WithDefaults()
	cfg.Incident = IncidentRule(cfg)
	return &Detector{cfg: cfg, store: store, verifier: verifier, metrics: metrics, log: log, topic: topic,
		watch: newWatchedDevices(metrics), verifyRetry: verifyRetry, profiles: map[string]*profileState{}}
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

// Unscorable lists the profiles whose windows are not being scored because
// their active model is refused or its artifact cannot be found, each with
// the reason; /readyz reports them.
func (d *Detector) Unscorable() map[string]string {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := map[string]string{}
	for name, p := range d.profiles {
		switch {
		case p.refused != nil:
			out[name] = p.refused.Error()
		case p.unavailable != nil:
			out[name] = p.unavailable.Error()
		}
	}
	return out
}

// Verdict is the judgement of one closed window: the incident events it
// raises, if any, and whether the device's history may learn from it.
type Verdict struct {
	Alerts []*contract.Alert
	Learn  bool
	// Held is set when the window waits for its profile's first model:
	// the detector keeps its window (the caller must not recycle it),
	// observes and judges it once the model exists (scoreHeld).
	Held bool
}

// observe computes a window's vector in its device's context, with its
// profile's shared destinations, unless that was done already (a window
// read from history, or given a vector in a test).
func (d *Detector) observe(cw *ClosedWindow) {
	if cw.window == nil || cw.observed {
		return
	}
	cw.observe(d.profileView)
}

// observeWarming observes a training window of a profile still warming
// up, counting its destinations towards the profile's shared ones first,
// so that it is observed with what the profile shares so far
// (features.Warming), as the model will judge live windows with what it
// shares.
func (d *Detector) observeWarming(p *profileState, cw *ClosedWindow) {
	p.peers.Add(stableHash(cw.DeviceID), cw.window)
	if cw.window == nil || cw.observed {
		return
	}
	if p.warmingView == nil {
		p.warmingView = features.Warming(&p.peers)
	}
	cw.observeAs(p.warmingView)
}

// ScoreWindows judges closed windows, appending one Verdict per window to
// out in order. Windows of profiles with a model are scored together with
// the forest's batch scorer: a partition's watermark closes hundreds at
// once, and scoring them in lockstep is several times faster than one by
// one. Each window's device baseline and incident state live in the
// window's device state and advance here.
//
// A device's windows are observed (features.Device.Observe), judged and,
// when normal, taught to its destination history one after another: a
// batch holding several windows of one device (a backlog, a device's
// parts joined at once) is taken in runs of distinct devices, so that each
// window is observed against the history its predecessors left, whatever
// the batches were. The caller recycles the windows, but need not teach
// the history again.
func (d *Detector) ScoreWindows(ctx context.Context, windows []ClosedWindow, out []Verdict) ([]Verdict, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	first := len(out)
	for range windows {
		out = append(out, Verdict{Learn: true})
	}
	for lo := 0; lo < len(windows); {
		hi := lo + d.distinctDevices(windows[lo:])
		if err := d.scoreDistinct(ctx, windows[lo:hi], out[first+lo:first+hi]); err != nil {
			return out, err
		}
		// Each window normal enough teaches its own device's destination
		// history; the run's devices are distinct, so over the cores.
		run, verdicts := windows[lo:hi], out[first+lo:first+hi]
		_ = inRuns(len(run), runtime.GOMAXPROCS(0), func(a, b int) error {
			for i := a; i < b; i++ {
				if v := verdicts[i]; v.Learn && !v.Held && run[i].window != nil {
					run[i].state.feat.Learn(run[i].window)
				}
			}
			return nil
		})
		lo = hi
	}
	return out, nil
}

// distinctDevices returns the length of the longest prefix of ws in which
// no device has two windows and every window has the first's index (at
// least 1): the detection stage hands windows over in window order, and a
// run is then one window index of the devices, as in JudgeOffline.
func (d *Detector) distinctDevices(ws []ClosedWindow) int {
	if d.batchSeen == nil {
		d.batchSeen = map[string]struct{}{}
	}
	clear(d.batchSeen)
	for i := range ws {
		if _, ok := d.batchSeen[ws[i].DeviceID]; ok || ws[i].Index != ws[0].Index {
			return i
		}
		d.batchSeen[ws[i].DeviceID] = struct{}{}
	}
	return len(ws)
}

// scoreDistinct is ScoreWindows for windows of distinct devices, filling
// out (one verdict per window, preset to learn).
func (d *Detector) scoreDistinct(ctx context.Context, windows []ClosedWindow, out []Verdict) error {
	// Group the windows to score by profile; warm-up windows go their way.
	byProfile := map[string][]int{}
	for i := range windows {
		cw := &windows[i]
		p, err := d.profile(ctx, cw.Profile)
		if err != nil {
			return err
		}
		if p.refused != nil {
			d.observe(cw)
			d.metrics.WindowsUnscored.WithLabelValues(cw.Profile, "model_refused").Inc()
			continue
		}
		if p.unavailable != nil {
			d.observe(cw)
			d.metrics.WindowsUnscored.WithLabelValues(cw.Profile, "model_unavailable").Inc()
			continue
		}
		if p.model != nil && p.held.Len() > 0 {
			// A model arrived from the ledger (promoted elsewhere) while
			// windows were held: they are judged now, in time order.
			alerts, err := d.scoreHeld(ctx, p)
			if err != nil {
				return err
			}
			out[i].Alerts = append(out[i].Alerts, alerts...)
		}
		if p.model == nil {
			held, kept, err := d.warmUp(ctx, cw, p)
			// Held: observed and judged later, with the model; its
			// destinations join the history only if it is then judged
			// normal. Kept: the window is the detector's now.
			out[i].Learn, out[i].Held = !held, kept
			if err != nil {
				return err
			}
			if p.model != nil && p.held.Len() > 0 {
				alerts, err := d.scoreHeld(ctx, p)
				if err != nil {
					return err
				}
				out[i].Alerts = append(out[i].Alerts, alerts...)
			}
			continue
		}
		byProfile[cw.Profile] = append(byProfile[cw.Profile], i) // observed as judged
	}
	for profile, idx := range byProfile {
		d.batchWindows = d.batchWindows[:0]
		for _, i := range idx {
			d.batchWindows = append(d.batchWindows, &windows[i])
		}
		verdicts, err := d.judge(ctx, d.profiles[profile], d.batchWindows)
		if err != nil {
			return err
		}
		for k, i := range idx {
			out[i] = verdicts[k]
		}
	}
	return nil
}

// judge scores windows of one profile that has a model, at most one per
// device, with the forest's batch scorer, and returns their verdicts (valid
// until the next call). A device's windows are judged one after another as
// in training (prequentially): ScoreWindows and scoreHeld hand a batch over
// in runs in which each device appears once, observed, judged and learnt
// before its next window, so that every window is judged against the
// baseline and history its device's earlier windows taught.
func (d *Detector) judge(ctx context.Context, p *profileState, ws []*ClosedWindow) ([]Verdict, error) {
	d.batchVerdicts = d.batchVerdicts[:0]
	if err := d.judgeRun(ctx, p, ws); err != nil {
		return nil, err
	}
	d.watch.publish(time.Now())
	return d.batchVerdicts, nil
}

// judgeRun judges windows of distinct devices together, appending their
// verdicts to d.batchVerdicts. Each window is observed here, if it was not
// already (features.Device.Observe).
func (d *Detector) judgeRun(ctx context.Context, p *profileState, ws []*ClosedWindow) error {
	const dims = models.ResidualDims
	m := p.model
	n := len(ws)
	d.batchData = slices.Grow(d.batchData[:0], n*dims)[:n*dims]
	d.batchScores = slices.Grow(d.batchScores[:0], n)[:n]
	d.batchJudged = slices.Grow(d.batchJudged[:0], n)[:n]
	d.batchIndex = slices.Grow(d.batchIndex[:0], n)[:n]
	d.batchNovel = slices.Grow(d.batchNovel[:0], n)[:n]
	d.batchBases = slices.Grow(d.batchBases[:0], n)[:n]
	// The baselines first, in order: a device's first judged window takes
	// its trained baseline out of the profile's seeds.
	for k, cw := range ws {
		d.batchBases[k], d.batchIndex[k] = d.baseline(p, cw), cw.Index
	}
	// Observing a window, its deviations, the forest's score and the
	// verdict touch only the window, its device's state and the model,
	// which nothing changes while mu is held; the devices are distinct. So
	// a batch of a few hundred windows or more (a minute of a busy
	// partition; the windows held for a first model) is split over the
	// cores in contiguous runs: the detect stage is one goroutine, and this
	// is most of a window's cost.
	err := inRuns(n, runtime.GOMAXPROCS(0), func(lo, hi int) error {
		for k := lo; k < hi; k++ {
			d.observe(ws[k])
			m.Residuals(d.batchBases[k], &ws[k].Vector, d.batchData[k*dims:(k+1)*dims])
		}
		if err := m.Forest().ScoreBatch(d.batchScores[lo:hi], d.batchData[lo*dims:hi*dims]); err != nil {
			return err
		}
		for k := lo; k < hi; k++ {
			r := d.batchData[k*dims : (k+1)*dims]
			j := m.Judge(r, d.batchScores[k])
			d.batchJudged[k] = j
			// Only a raised window's novelty counts in an episode (fleetJudge.add).
			d.batchNovel[k] = raised(j) && novelWindow(m, d.batchBases[k], &ws[k].Vector, r)
		}
		return nil
	})
	if err != nil {
		return err
	}
	for k, cw := range ws {
		r, j := d.batchData[k*dims:(k+1)*dims], d.batchJudged[k]
		p.scored.Inc()
		p.scores.Observe(j.Score)
		d.metrics.Summary.WindowsScored.Add(1)
		if d.log.Enabled(ctx, slog.LevelDebug) {
			top := m.ExplainDeviation(&cw.state.baseline, &cw.Vector, r, 1)
			d.log.Debug("window judged", "device", cw.DeviceID, "window", cw.Start.Format(time.RFC3339), "level", j.Level,
				"score", j.Score, "anomalous", j.Anomalous, "extreme", j.Extreme, "own_anomalous", j.OwnAnomalous,
				"persistent", j.Persistent, "elevated", j.Elevated, "evidence", j.Evidence, "top_feature", top[0].Feature,
				"value", top[0].Value, "baseline", top[0].Baseline)
		}
		if p.drift != nil {
			if psi, ok := p.drift.Observe(&cw.Vector); ok {
				for f, v := range psi {
					d.metrics.FeatureDrift.WithLabelValues(cw.Profile, features.Names[f]).Set(v)
				}
			}
		}
		if j.Anomalous || d.watch.watching(cw.DeviceID) {
			d.watch.window(cw.DeviceID, cw.Profile, j.Score, j.Anomalous, m.ExplainDeviation(&cw.state.baseline, &cw.Vector, r, 3), time.Now())
		}
	}
	// The profile's fleet episode is tallied over the whole run before any
	// device's incident moves, so that whether the profile moved as a
	// whole does not depend on the order the run's devices come in.
	var fleet []*contract.Alert
	explain := func(i int, dr *models.Drivers) {
		dr.Add(d.batchBases[i], &ws[i].Vector, d.batchData[i*dims:(i+1)*dims], d.batchJudged[i].Level)
	}
	p.fleet.tally(d.cfg.Incident, d.batchIndex, d.batchData, d.batchNovel, d.batchJudged, explain, func(k int, ev incidents.Event) {
		fleet = append(fleet, d.fleetAlert(p, ws[k], m.Hash(), d.batchJudged[k].Score, ev))
	})
	for k, cw := range ws {
		r, j := d.batchData[k*dims:(k+1)*dims], d.batchJudged[k]
		// The incident's explanation is against the baseline the window
		// was judged by, before the window teaches it.
		alerts, learn := d.incident(p, cw, m, j, r, d.batchNovel[k])
		if k == 0 {
			alerts = append(fleet, alerts...)
		}
		if j.Anomalous {
			d.metrics.AnomalousWindows.WithLabelValues(cw.Profile).Inc()
		}
		if learn || cw.state.baseline.Young() {
			m.Learn(&cw.state.baseline, &cw.Vector)
			cw.state.baseline.LearnRaised(j)
		}
		d.batchVerdicts = append(d.batchVerdicts, Verdict{Alerts: alerts, Learn: j.Learn})
	}
	return nil
}

// Settle trains the first model of every profile whose warm-up history
// finished verifying in the background — or starts the verification of a
// warm-up that is complete but waits for one (a retry, or a warm-up
// lengthened after history that no longer verifies was left out) — and
// scores the windows it held, returning the alerts they raise. The
// detection stage calls it at each commit, and after every poll while
// Verifying (polling every 50 ms meanwhile), so that a backlog read to its
// end before the verification finished is still judged, with no further
// record to prompt it, as soon as the verification ends.
func (d *Detector) Settle(ctx context.Context) ([]*contract.Alert, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []*contract.Alert
	for _, name := range slices.Sorted(maps.Keys(d.profiles)) {
		p := d.profiles[name]
		if p.model != nil || len(p.warm) == 0 || (p.verifying != nil && len(p.verifying) == 0) {
			continue // trained, never warmed, or still verifying
		}
		if err := d.tryTrain(ctx, name, p); err != nil {
			return out, err
		}
		if p.model != nil && p.held.Len() > 0 {
			alerts, err := d.scoreHeld(ctx, p)
			if err != nil {
				return out, err
			}
			out = append(out, alerts...)
		}
	}
	return out, nil
}

// Verifying reports whether a profile's first model waits on the
// verification of its warm-up history, which Settle finishes.
func (d *Detector) Verifying() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, p := range d.profiles {
		if p.model == nil && p.verifying != nil {
			return true
		}
	}
	return false
}

// maxHeldWindows bounds the windows held back while a profile warms up
// (about 250 bytes each): a backlog read far ahead on some partitions
// beyond that is not scored, and the log says so.
const maxHeldWindows = 200_000

// scoreHeld scores, in time order, the windows a profile held back while
// its first model trained, and returns the alerts they raise.
func (d *Detector) scoreHeld(ctx context.Context, p *profileState) ([]*contract.Alert, error) {
	held := p.held
	p.held = heldWindows{}
	profile := held.At(0).Profile
	d.metrics.WindowsHeld.WithLabelValues(profile).Set(0)
	d.metrics.Summary.WindowsHeld.Add(-int64(held.Len()))
	// Sorted by reference: a window is a few hundred bytes, and there can
	// be a hundred thousand of them.
	order := make([]*ClosedWindow, held.Len())
	for i := range order {
		order[i] = held.At(i)
	}
	slices.SortStableFunc(order, func(a, b *ClosedWindow) int {
		if c := a.Start.Compare(b.Start); c != 0 {
			return c
		}
		return strings.Compare(a.DeviceID, b.DeviceID)
	})
	// Minute by minute: each device has at most one window in a minute,
	// and its window of the next minute is observed after this one has
	// been judged and, if normal, has taught the device's history, as
	// live windows are.
	var alerts []*contract.Alert
	ws := make([]*ClosedWindow, 0, 256)
	for lo := 0; lo < len(order); {
		hi := lo
		ws = ws[:0]
		for ; hi < len(order) && order[hi].Start.Equal(order[lo].Start); hi++ {
			ws = append(ws, order[hi]) // observed as judged
		}
		verdicts, err := d.judge(ctx, p, ws)
		if err != nil {
			return nil, err
		}
		for _, v := range verdicts {
			alerts = append(alerts, v.Alerts...)
		}
		// The minute's devices are distinct: each window teaches its own
		// device's history, over the cores.
		_ = inRuns(len(ws), runtime.GOMAXPROCS(0), func(lo, hi int) error {
			for k := lo; k < hi; k++ {
				d.learnHeld(ws[k], verdicts[k].Learn)
			}
			return nil
		})
		lo = hi
	}
	d.log.Info("scored the windows held back past the warm-up span", "profile", profile, "windows", held.Len(), "alerts", len(alerts))
	return alerts, nil
}

// learnHeld finishes with a held window, whose window the detector kept:
// when learn is set its destinations join the device's history, as the
// stage's release does for the windows it scores.
func (d *Detector) learnHeld(cw *ClosedWindow, learn bool) {
	if learn && cw.window != nil {
		cw.state.feat.Learn(cw.window)
	}
	cw.window = nil
}

// baseline returns the window's device baseline, started on first use from
// the baseline training left for the device, or else the profile prior.
func (d *Detector) baseline(p *profileState, cw *ClosedWindow) *models.DeviceBaseline {
	if cw.state == nil { // a window scored on its own (tests)
		cw.state = newDeviceState(cw.DeviceID, cw.Profile)
	}
	b := &cw.state.baseline
	switch {
	case cw.state.epoch != p.epoch:
		// Learned under a model since replaced: the promoted model's
		// normal is learned afresh, as a new device's is.
		cw.state.epoch = p.epoch
		p.model.StartBaseline(b)
	case !b.Started():
		if seed, ok := p.seeds[cw.DeviceID]; ok {
			*b = seed
			delete(p.seeds, cw.DeviceID)
		} else {
			p.model.StartBaseline(b)
		}
	}
	return b
}

// incident advances the device's incident state with a judged window and
// returns the alerts its events raise, and whether the window is to teach
// the device's baseline. A device incident that opens while the profile's
// fleet episode is open, on a window the episode explains, is absorbed into
// the episode: none of its events is reported (fleetJudge.advance).
func (d *Detector) incident(p *profileState, cw *ClosedWindow, m *models.Model, j models.Judgement, r []float64, novel bool) ([]*contract.Alert, bool) {
	var out []*contract.Alert
	st := cw.state
	if counts(d.cfg.Incident, j) {
		if st.drivers == nil {
			st.drivers = new(models.Drivers)
		}
		st.drivers.Add(&st.baseline, &cw.Vector, r, j.Level)
	}
	events, joined, opening, learn := p.fleet.advance(d.cfg.Incident, m, &st.incident, incidentWindow(cw.Index, j, m, &st.baseline), j, r, novel, d.events[:0])
	if joined {
		d.metrics.FleetAbsorbed.WithLabelValues(cw.Profile).Inc()
	}
	if opening {
		out = append(out, d.fleetAlert(p, cw, m.Hash(), j.Score, p.fleet.Opening()))
	}
	for _, ev := range events {
		a := d.incidentAlert(cw.DeviceID, cw.Profile, m.Hash(), ev)
		a.Evidence.Partition, a.Evidence.Offsets = cw.Partition, []int64{cw.FirstOffset, cw.LastOffset}
		for _, o := range cw.Others {
			a.Evidence.More = append(a.Evidence.More, contract.PartitionOffsets{Partition: o.Partition, Offsets: []int64{o.First, o.Last}})
		}
		closed := ev.Status == incidents.Closed
		if !closed {
			// What drove the incident's windows, or this window's
			// deviations when none of them had a suspicious one.
			top := st.drivers.Top(d.cfg.TopFeatures)
			if top == nil {
				top = m.ExplainDeviation(&st.baseline, &cw.Vector, r, d.cfg.TopFeatures)
			}
			for _, c := range top {
				a.Features = append(a.Features, contract.Contribution(c))
			}
		}
		out = append(out, a)
		if closed {
			st.drivers = nil
		}
	}
	if st.incident.Quiet(d.cfg.Incident) {
		st.drivers = nil
	}
	return out, learn
}

// FleetDevice is the device id a fleet episode's alerts carry: the
// profile, marked as one.
func FleetDevice(profile string) string { return "profile:" + profile }

// fleetAlert is the alert that reports a fleet episode's opening or
// closing (incidents.Fleet), made by the window cw (its score score) that
// tipped the count.
func (d *Detector) fleetAlert(p *profileState, cw *ClosedWindow, modelHash string, score float64, ev incidents.Event) *contract.Alert {
	a := d.incidentAlert(FleetDevice(cw.Profile), cw.Profile, modelHash, ev)
	a.Score, a.Confidence = score, string(models.ConfidenceMedium)
	a.Evidence.Partition, a.Evidence.Offsets = cw.Partition, []int64{cw.FirstOffset, cw.LastOffset}
	switch ev.Status {
	case incidents.Opened:
		a.Evidence.Detail = fmt.Sprintf("%d of %d %s devices judged in one window were raised together: the profile as a whole changed behaviour (a schedule, a change pushed to every device, or an attack on all of them). Device incidents opened while this lasts are grouped here when the shared change explains them, not reported one by one; a device that also moved elsewhere, met new hosts or sent flood- or scan-shaped traffic is reported on its own",
			p.fleet.Raised, p.fleet.Judged, cw.Profile)
		a.Incident.OpenedBy = "fleet"
		// What the raised devices of the opening minute did, each feature
		// shown on the device where it stood out most.
		for _, c := range p.fleet.drivers.Top(d.cfg.TopFeatures) {
			a.Features = append(a.Features, contract.Contribution(c))
		}
	case incidents.Closed:
		a.Evidence.Detail = fmt.Sprintf("no more than a quarter of the %s devices raised for %d windows in a row; %d device incidents were grouped in this episode",
			cw.Profile, d.cfg.Incident.WithDefaults().M, ev.Windows)
	}
	d.log.Info("fleet episode "+string(ev.Status), "profile", cw.Profile, "raised", p.fleet.Raised, "judged", p.fleet.Judged,
		"absorbed", ev.Windows, "first_window", time.Unix(0, ev.First*int64(d.cfg.WindowSize)).UTC())
	return a
}

// incidentWindow is a judged window as the incident rules see it, with the
// counts the persistent and sustained rules ask of the device of baseline b
// (models.Model.RuleKFor).
func incidentWindow(index int64, j models.Judgement, m *models.Model, b *models.DeviceBaseline) incidents.Window {
	level := incidents.Normal
	// Anomalous only by a damped count an earlier window's event left
	// (and not extreme): the event was counted in its own window.
	lingering := j.Anomalous && !j.OwnAnomalous && !j.Extreme
	if j.Anomalous && !lingering {
		switch j.Confidence {
		case models.ConfidenceHigh:
			level = incidents.High
		case models.ConfidenceMedium:
			level = incidents.Medium
		default:
			level = incidents.Low
		}
	}
	w := incidents.Window{Index: index, Level: level, Score: j.Score, Elevated: j.Elevated, Persistent: j.Persistent,
		Evidence: j.Evidence, Lingering: lingering}
	w.SustainedK, w.PersistentK = m.RuleKFor(b)
	return w
}

// incidentAlert is the alert that reports one incident event.
func (d *Detector) incidentAlert(device, profile, modelHash string, ev incidents.Event) *contract.Alert {
	size := d.cfg.WindowSize
	start := time.Unix(0, ev.First*int64(size)).UTC()
	id := contract.IncidentID(contract.AlertBehaviour, device, start)
	return &contract.Alert{
		ID:   contract.IncidentEventID(id, string(ev.Status), ev.Seq),
		Kind: contract.AlertBehaviour, DeviceID: device, Profile: profile,
		WindowStart: start, WindowEnd: time.Unix(0, (ev.Last+1)*int64(size)).UTC(),
		Score: ev.PeakScore, Confidence: string(levelConfidence(ev.PeakLevel)), ModelHash: modelHash,
		Evidence: contract.Evidence{Topic: d.topic},
		Incident: &contract.Incident{ID: id, Status: string(ev.Status), Seq: ev.Seq, Windows: ev.Windows, OpenedBy: string(ev.OpenedBy)},
	}
}

func levelConfidence(l incidents.Level) models.Confidence {
	switch l {
	case incidents.High:
		return models.ConfidenceHigh
	case incidents.Medium:
		return models.ConfidenceMedium
	}
	return models.ConfidenceLow
}

// ExpireIncidents closes the open incidents of a partition's devices that
// have had M quiet windows by the partition's watermark, whether or not
// they sent anything since: a device that falls silent still gets its
// incident closed.
func (d *Detector) ExpireIncidents(p *partitionWindows, waiting func(deviceID string) bool, out []*contract.Alert) []*contract.Alert {
	d.mu.Lock()
	defer d.mu.Unlock()
	closedThrough := (p.watermark-p.wait())/p.size - 1 // newest window the watermark has closed
	for _, st := range p.devices {
		if !st.incident.Open() || waiting(st.id) {
			// A device with windows waiting for its parts on other
			// partitions, or for the other partitions to be done
			// with their index, is not quiet: they are judged first.
			continue
		}
		out = d.expire(p, st, closedThrough, out)
	}
	// Devices whose incident was open when the partition was taken over,
	// and which have sent nothing here since: restored only once the
	// checkpointed incident has been silent long enough to close.
	for id, o := range p.resumedOpen {
		if !waiting(id) && d.cfg.Incident.Silent(o.Last, closedThrough) {
			out = d.expire(p, p.track(id, o.Profile), closedThrough, out)
		}
	}
	return out
}

// expire closes st's incident if the device has been silent through
// closedThrough, appending the closing alert.
func (d *Detector) expire(p *partitionWindows, st *deviceState, closedThrough int64, out []*contract.Alert) []*contract.Alert {
	absorbed := st.incident.Absorbed()
	d.events = st.incident.Expire(d.cfg.Incident, closedThrough, d.events[:0])
	if absorbed && len(d.events) > 0 {
		st.dirty = true
		return out // part of a fleet episode: not reported
	}
	for _, ev := range d.events {
		hash := ""
		if ps := d.profiles[st.profile]; ps != nil && ps.model != nil {
			hash = ps.model.Hash()
		}
		a := d.incidentAlert(st.id, st.profile, hash, ev)
		a.Evidence.Partition = p.partition
		out = append(out, a)
		st.dirty = true
	}
	return out
}

// Refresh asks the ledger for the active model of every profile this
// detector has seen and swaps in any that changed — a model an operator
// promoted, or one another instance of the group trained first — without a
// restart. The artifact must be in the model store and hash to the hash the
// ledger registers; one that is missing, altered or of another feature
// schema is refused (logged once, counted) and the current model keeps
// scoring. Windows go on being scored during the swap: it happens between
// batches, under the detector's lock.
func (d *Detector) Refresh(ctx context.Context) {
	d.mu.Lock()
	names := make([]string, 0, len(d.profiles))
	for name, p := range d.profiles {
		if p.checked {
			names = append(names, name)
		}
	}
	d.mu.Unlock()
	slices.Sort(names)
	for _, name := range names {
		rec, err := d.store.Ledger.GetActiveModel(ctx, name)
		if errors.Is(err, contract.ErrNotFound) {
			continue
		}
		if err != nil {
			d.log.Warn("active model not checked", "profile", name, "err", err)
			continue
		}
		d.mu.Lock()
		p := d.profiles[name]
		same := p.model != nil && p.model.Hash() == rec.Hash || p.refusedHash == rec.Hash
		d.mu.Unlock()
		if same {
			continue
		}
		m, err := d.store.Load(ctx, rec.Hash)
		if err == nil {
			err = m.CheckSchema()
		}
		d.mu.Lock()
		switch {
		case errors.Is(err, ErrArtifactMissing):
			// Not refused: the instance that has it shares it when it
			// loads it, or an operator registers it again.
			if p.model == nil {
				p.unavailable = err
			}
			if p.missingHash != rec.Hash {
				p.missingHash = rec.Hash
				d.log.Error("the active model's artifact is in neither the model directory nor the model topic; trying again (register it with 'chainwatch models register FILE')",
					"profile", name, "hash", rec.Hash, "err", err, "current", p.model != nil)
			}
		case err != nil:
			p.refusedHash = rec.Hash
			d.metrics.ModelsRefused.WithLabelValues(name).Inc()
			d.log.Error("promoted model refused; the current one keeps scoring", "profile", name, "hash", rec.Hash, "err", err)
		default:
			from := "none"
			if p.model != nil {
				from = p.model.Hash()
			}
			if p.model != nil {
				p.epoch++
			}
			p.refused, p.unavailable, p.warm, p.partTo = nil, nil, nil, nil
			d.activate(name, p, m, "promoted on the ledger; swapped in without a restart (was "+from+")")
		}
		d.mu.Unlock()
	}
}

// newProfile adds a profile's state.
func (d *Detector) newProfile(name string) *profileState {
	p := &profileState{scored: d.metrics.WindowsScored.WithLabelValues(name), scores: d.metrics.Scores.WithLabelValues(name),
		warming: d.metrics.WarmupWindows.WithLabelValues(name), heldGauge: d.metrics.WindowsHeld.WithLabelValues(name)}
	d.profiles[name] = p
	return p
}

// FleetStates returns the fleet episode state (fleetJudge.MarshalBinary)
// of every profile that has tallied a window, for the state store.
func (d *Detector) FleetStates() map[string][]byte {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := map[string][]byte{}
	for name, p := range d.profiles {
		if p.fleet.Newest() == 0 {
			continue
		}
		if b, err := p.fleet.MarshalBinary(); err == nil {
			out[name] = b
		}
	}
	return out
}

// RestoreFleets takes the fleet episode states a restarted service left in
// the state store, for the profiles that have tallied no window yet; it
// returns how many it restored and logs those it cannot read.
func (d *Detector) RestoreFleets(states map[string][]byte) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := 0
	for name, b := range states {
		p := d.profiles[name]
		if p == nil {
			p = d.newProfile(name)
		}
		if p.fleet.Newest() != 0 {
			continue
		}
		if err := p.fleet.UnmarshalBinary(b); err != nil {
			d.log.Warn("fleet episode state not restored: the profile's episode starts afresh", "profile", name, "err", err)
			continue
		}
		n++
	}
	return n
}

// profile returns a profile's state, asking the ledger once for its active
// model.
func (d *Detector) profile(ctx context.Context, name string) (*profileState, error) {
	p := d.profiles[name]
	if p == nil {
		p = d.newProfile(name)
	}
	if !p.checked {
		m, err := d.store.Active(ctx, name)
		if errors.Is(err, ErrArtifactMissing) {
			// Promoted elsewhere, its artifact not shared (yet): the
			// profile's windows are counted, not scored, until Refresh
			// finds it; warming up a model of its own would be refused.
			p.checked, p.unavailable = true, err
			d.log.Error("the active model's artifact is in neither the model directory nor the model topic; windows of this profile are not scored until it is (register it with 'chainwatch models register FILE')",
				"profile", name, "err", err)
			return p, nil
		}
		if err != nil {
			return nil, err
		}
		p.checked = true
		if m != nil {
			if err := m.CheckSchema(); err != nil {
				// The service cannot replace an operator's model by itself,
				// and must not judge windows with one that cannot read them:
				// this profile goes unscored, loudly, and the rest runs on.
				p.refused = err
				d.log.Error("active model refused; windows of this profile are not scored until a model of this build's feature schema is promoted (or start from a fresh data directory)",
					"profile", name, "err", err)
			} else {
				d.activate(name, p, m, "loaded from the ledger's active model")
			}
		}
	}
	return p, nil
}

// warmUp collects a window for the profile's first model and trains it once
// the warm-up span and minimum row count are reached.
//
// Only windows within the warm-up span — Warmup of event time from the
// earliest window seen — train the model. A window past it (a partition
// read ahead of the others) is held back and reported as held: it is
// scored, in time order, once the model exists, so neither does an attack
// after the warm-up teach the model nor does it go unscored.
func (d *Detector) warmUp(ctx context.Context, cw *ClosedWindow, p *profileState) (held, kept bool, err error) {
	if p.partTo == nil {
		p.partTo = map[int32]time.Time{}
	}
	if cw.End.After(p.partTo[cw.Partition]) {
		p.partTo[cw.Partition] = cw.End
	}
	span := d.cfg.Warmup + p.extend
	if !p.warmFrom.IsZero() && !cw.Start.Before(p.warmFrom.Add(span)) {
		held = true
		if p.held.Len() < maxHeldWindows {
			// Observed when the model exists, so that its new
			// destinations are judged against the profile's shared
			// ones (a device's windows past the span are all held,
			// so its windows are still observed in order).
			kept = true
			p.held.Add(cw)
			p.heldGauge.Inc()
			d.metrics.Summary.WindowsHeld.Add(1)
		} else {
			d.observe(cw) // not scored, but its device's context moves on
			if !p.heldFull {
				p.heldFull = true
				d.log.Warn("too many windows past the warm-up span while the first model waits for the slowest partition; later ones are not scored",
					"profile", cw.Profile, "held", p.held.Len())
			}
		}
	} else {
		d.observeWarming(p, cw)
		p.warm = append(p.warm, warmRow{start: cw.Start.UnixNano(), device: cw.DeviceID, vector: cw.Vector,
			partition: cw.Partition, first: cw.FirstOffset, last: cw.LastOffset, others: cw.Others, peerRow: p.peers.Rows()})
		if p.warmFrom.IsZero() || cw.Start.Before(p.warmFrom) {
			p.warmFrom = cw.Start
		}
		if cw.End.After(p.warmTo) {
			p.warmTo = cw.End
		}
	}
	p.warming.Set(float64(len(p.warm)))
	return held, kept, d.tryTrain(ctx, cw.Profile, p)
}

// tryTrain trains the profile's first model once its warm-up is complete
// on every partition and verified.
func (d *Detector) tryTrain(ctx context.Context, profile string, p *profileState) error {
	span := d.cfg.Warmup + p.extend
	rows := len(p.warm)
	if rows < d.cfg.MinTrainingWindows {
		return nil
	}
	for _, to := range p.partTo {
		if to.Sub(p.warmFrom) < span {
			return nil
		}
	}
	started := time.Now()
	var refs []string
	if d.verifier == nil {
		refs = []string{fmt.Sprintf("warmup:%s:%s/%s", d.topic, p.warmFrom.Format(time.RFC3339), p.warmTo.Format(time.RFC3339))}
	} else {
		// Train only on history proven untampered: the windows' records
		// must sit in anchored ranges whose roots still match.
		if p.verifying == nil {
			if time.Now().Before(p.retryAt) {
				return nil // verification failed a moment ago; not on every window
			}
			d.verifyInBackground(ctx, p)
			return nil
		}
		var res verification
		select {
		case res = <-p.verifying:
			p.verifying = nil
		default:
			return nil // still verifying: the window waits with the others
		}
		anchors, excluded, err := res.anchors, res.excluded, res.err
		if err != nil {
			p.retryAt = time.Now().Add(d.verifyRetry)
			d.log.Error("first model not trained: its warm-up history could not be verified; still warming up",
				"profile", profile, "windows", rows, "err", err, "retry_in", d.verifyRetry)
			return nil // the next verification covers every row
		}
		// Windows of the span that arrived while it ran are not among
		// the verified ranges: they do not train.
		p.warm = p.warm[:p.verifyRows]
		rows = len(p.warm)
		if len(excluded) > 0 {
			// Quarantine what no longer matches its anchors (the audit
			// raises the integrity alerts) and train on the rest.
			kept := excludeRows(p.warm, excluded)
			dropped := len(p.warm) - len(kept)
			d.metrics.TrainingExcluded.WithLabelValues(profile).Add(float64(dropped))
			d.log.Warn("warm-up history that does not verify against its anchors is left out of training",
				"profile", profile, "ranges", len(excluded), "windows_excluded", dropped, "windows_kept", len(kept), "first_range", excluded[0])
			if len(kept) < d.cfg.MinTrainingWindows {
				// Warm up for longer, by the share of the span lost, so
				// that the model still learns from about Warmup of
				// verified history; windows held past the old span
				// join the warm-up.
				more := max(time.Duration(float64(d.cfg.Warmup)*float64(dropped)/float64(len(p.warm))), d.cfg.WindowSize)
				p.extend += more
				p.warm = kept
				end := p.warmFrom.Add(d.cfg.Warmup + p.extend)
				joined := p.held.Keep(func(w *ClosedWindow) bool {
					if !w.Start.Before(end) {
						return true
					}
					// In arrival order, which is each device's window
					// order; later windows of a device stay held, so
					// none is observed before it.
					d.observeWarming(p, w)
					d.learnHeld(w, true)
					p.warm = append(p.warm, warmRow{start: w.Start.UnixNano(), device: w.DeviceID, vector: w.Vector,
						partition: w.Partition, first: w.FirstOffset, last: w.LastOffset, others: w.Others, peerRow: p.peers.Rows()})
					return false
				})
				d.metrics.Summary.WindowsHeld.Add(-int64(joined))
				d.metrics.WindowsHeld.WithLabelValues(profile).Set(float64(p.held.Len()))
				d.log.Warn("too few verified warm-up windows: the warm-up is extended to collect verified history",
					"profile", profile, "verified_windows", len(kept), "extended_by", more.String(), "warm_up", (d.cfg.Warmup + p.extend).String())
				return nil
			}
			p.warm = kept
		}
		refs = anchors
	}
	m, seeds, err := models.TrainBehaviour(warmSeries(p.warm, d.cfg.WindowSize), models.BehaviourOptions{
		Forest: iforest.Config{
			Trees: d.cfg.Trees, Subsample: d.cfg.Subsample, Extension: d.cfg.Extension,
			Seed: d.cfg.Seed ^ stableHash(profile),
		},
		Budget:       d.cfg.Budget(),
		Profile:      profile,
		TrainingData: refs,
		Peers:        p.peers.Shared(lastPeerRow(p.warm)),
	})
	if errors.Is(err, models.ErrTooFewWindows) {
		d.log.Warn("first model not trained yet: too few windows; still warming up", "profile", profile, "err", err)
		return nil
	}
	if err != nil {
		return fmt.Errorf("train first model of %s: %w", profile, err)
	}
	active, err := d.store.Bootstrap(ctx, m, refs)
	if err != nil {
		return fmt.Errorf("bootstrap model of %s: %w", profile, err)
	}
	d.log.Info("trained first model on verified warm-up traffic",
		"profile", profile, "windows", rows, "training_refs", len(refs), "event_time_span", p.warmTo.Sub(p.warmFrom).String(),
		"took", time.Since(started).Round(time.Millisecond).String(), "shared_destinations", len(m.SharedPeers()),
		"levels", fmt.Sprintf("extreme %.2f, anomalous %.2f, persistent %.2f, elevated %.2f, evidence of %d windows %.2f",
			m.Behaviour.ExtremeLevel, m.Behaviour.AnomalousLevel, m.Behaviour.PersistentLevel, m.Behaviour.SustainedLevel,
			models.EvidenceN, m.Behaviour.EvidenceLevel),
		"windows_per_device_hour", strconv.FormatFloat(m.Behaviour.WindowsPerDeviceHour, 'f', 1, 64),
		"expected_false_incidents_per_1000_device_hours", strconv.FormatFloat(m.Behaviour.ExpectedFalseIncidents(), 'f', 2, 64))
	if span := p.warmTo.Sub(p.warmFrom); span < dailyCycle {
		// Device baselines follow a gradual daily cycle; a step the
		// warm-up never showed (business hours starting, a night-time
		// backup) is judged anomalous on every device that takes it.
		d.log.Warn("first model trained on less than a day of traffic: behaviour of other hours of the day that changes abruptly (business hours, scheduled jobs) will raise incidents until a model trained on a whole day is promoted",
			"profile", profile, "event_time_span", span.String(), "setting", "detector.warmup")
	}
	if b := m.Behaviour; b != nil {
		// The levels hold the budget if their tails are fitted exactly;
		// fitted to the few episodes a short warm-up of a small fleet
		// holds, they are on average several times too low (see
		// models.Behaviour.ExpectedFalseIncidents). Twice the budget is
		// where that error stops being a rounding matter.
		budget := b.Budget.WithDefaults().FalseAlertsPer1000DeviceHours
		if exp := b.ExpectedFalseIncidents(); exp > 2*budget {
			d.log.Warn("first model's thresholds rest on little training history: expect more false incidents than the budget until a model trained on more history (a longer warm-up, a larger fleet) is promoted",
				"profile", profile, "expected_per_1000_device_hours", strconv.FormatFloat(exp, 'f', 2, 64),
				"budget", budget, "training_windows", rows, "setting", "detector.warmup")
		}
	}
	p.warm, p.partTo, p.peers = nil, nil, features.PeerCounter{}
	if active.Hash() == m.Hash() {
		p.seeds = seeds
	}
	d.activate(profile, p, active, "registered and promoted on the ledger")
	return nil
}

// lastPeerRow is the PeerCounter row of the newest training row: the
// shared destinations are those of the windows up to it, the windows that
// train (a window that arrived while the warm-up was being verified does
// not). Windows left out as unverified in between still count: rare, and
// they name destinations at worst.
func lastPeerRow(rows []warmRow) int {
	n := 0
	for _, r := range rows {
		n = max(n, r.peerRow)
	}
	return n
}

// warmSeries groups warm-up rows into each device's windows in time order,
// devices sorted by id: the same rows always train the same model. Each
// series covers its device's first window's start to its last window's
// end (windows of length window).
func warmSeries(rows []warmRow, window time.Duration) []models.DeviceSeries {
	slices.SortFunc(rows, func(a, b warmRow) int {
		if c := strings.Compare(a.device, b.device); c != 0 {
			return c
		}
		return cmp.Compare(a.start, b.start)
	})
	var out []models.DeviceSeries
	for _, r := range rows {
		start := time.Unix(0, r.start).UTC()
		if len(out) == 0 || out[len(out)-1].Device != r.device {
			out = append(out, models.DeviceSeries{Device: r.device, From: start})
		}
		s := &out[len(out)-1]
		s.Vectors = append(s.Vectors, r.vector)
		s.To = start.Add(window)
	}
	return out
}

// dailyCycle is the span of history that shows a model every hour of the
// day.
const dailyCycle = 24 * time.Hour

// verification is the outcome of a HistoryVerifier run.
type verification struct {
	anchors  []string
	excluded []integrity.OffsetRange
	err      error
}

// verifyInBackground starts verifying the profile's warm-up rows so far;
// the profile's next window, or Settle, collects the result.
func (d *Detector) verifyInBackground(ctx context.Context, p *profileState) {
	ranges := warmRanges(p.warm)
	done := make(chan verification, 1)
	p.verifying, p.verifyRows = done, len(p.warm)
	go func() {
		anchors, excluded, err := d.verifier(ctx, ranges)
		done <- verification{anchors: anchors, excluded: excluded, err: err}
	}()
}

// verifyRetry is how long a profile waits to verify its warm-up history
// again after verification could not run (the ledger or Kafka away).
const verifyRetry = 10 * time.Second

// excludeRows keeps the warm-up rows none of whose records fall in an
// excluded range of their partition.
func excludeRows(rows []warmRow, excluded []integrity.OffsetRange) []warmRow {
	kept := rows[:0:0]
	for _, r := range rows {
		bad := false
		for _, x := range excluded {
			if x.Partition == r.partition && r.first <= x.Last && x.First <= r.last {
				bad = true
				break
			}
			for _, o := range r.others {
				if x.Partition == o.Partition && o.First <= x.Last && x.First <= o.Last {
					bad = true
				}
			}
			if bad {
				break
			}
		}
		if !bad {
			kept = append(kept, r)
		}
	}
	return kept
}

// warmRanges covers the records of the warm-up windows, per partition.
func warmRanges(rows []warmRow) []integrity.OffsetRange {
	byPartition := map[int32]*integrity.OffsetRange{}
	add := func(r integrity.OffsetRange) {
		pr := byPartition[r.Partition]
		if pr == nil {
			byPartition[r.Partition] = &r
			return
		}
		pr.First, pr.Last = min(pr.First, r.First), max(pr.Last, r.Last)
	}
	for _, r := range rows {
		add(integrity.OffsetRange{Partition: r.partition, First: r.first, Last: r.last})
		for _, o := range r.others {
			add(o)
		}
	}
	out := make([]integrity.OffsetRange, 0, len(byPartition))
	for _, pr := range byPartition {
		out = append(out, *pr)
	}
	slices.SortFunc(out, func(a, b integrity.OffsetRange) int { return cmp.Compare(a.Partition, b.Partition) })
	return out
}

func (d *Detector) activate(profile string, p *profileState, m *models.Model, how string) {
	p.model = m
	shared := map[string]*features.Profile{}
	if old := d.shared.Load(); old != nil {
		maps.Copy(shared, *old)
	}
	shared[profile] = &features.Profile{Shared: m.SharedPeers()}
	d.shared.Store(&shared)
	p.drift = models.NewDriftTracker(m)
	d.metrics.ModelInfo.DeletePartialMatch(prometheus.Labels{"profile": profile}) // the model it replaces
	d.metrics.ModelInfo.WithLabelValues(profile, m.Hash(), m.Algorithm).Set(1)
	d.metrics.ModelThreshold.WithLabelValues(profile).Set(m.Calibration.Threshold)
	if m.Behaviour != nil {
		d.metrics.ModelExpected.WithLabelValues(profile).Set(m.Behaviour.ExpectedFalseIncidents())
	}
	d.metrics.ModelCreated.WithLabelValues(profile).Set(float64(m.CreatedAt.Unix()))
	d.metrics.WarmupWindows.DeleteLabelValues(profile)
	d.log.Info("model active", "profile", profile, "hash", m.Hash(), "algorithm", m.Algorithm,
		"threshold", strconv.FormatFloat(m.Calibration.Threshold, 'f', 4, 64), "how", how)
}

// profileView is what a profile's active model tells the time features
// (features.Profile: the destinations it shares, that it judges): nil
// before the profile has a model. Safe to call from any goroutine.
func (d *Detector) profileView(profile string) *features.Profile {
	if m := d.shared.Load(); m != nil {
		return (*m)[profile]
	}
	return nil
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

// runMin is the smallest batch inRuns splits: below it one goroutine does
// the whole batch sooner than several would start.
const runMin = 128

// inRuns calls fn over [0, n) in contiguous runs [lo, hi), on up to workers
// goroutines at once when n is at least runMin (runs a multiple of 64
// windows, the forest's scoring block), and returns the first error.
func inRuns(n, workers int, fn func(lo, hi int) error) error {
	if workers <= 1 || n < runMin {
		return fn(0, n)
	}
	run := (n + workers - 1) / workers
	run = (run + 63) / 64 * 64
	errs := make([]error, (n+run-1)/run)
	var wg sync.WaitGroup
	for i := range errs {
		wg.Go(func() { errs[i] = fn(i*run, min((i+1)*run, n)) })
	}
	wg.Wait()
	return errors.Join(errs...)
}
