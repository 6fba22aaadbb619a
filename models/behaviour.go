package models

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"runtime"
	"slices"
	"time"

	"github.com/chainwatch/chainwatch/models/evt"
	"github.com/chainwatch/chainwatch/models/features"
	"github.com/chainwatch/chainwatch/models/iforest"
)

// A behaviour model judges a device's windows against two baselines at once:
// the device's own normal, learnt window by window from its verified
// history, and its profile's, through an isolation forest over the
// deviations of all the profile's devices. The maths, step by step:
//
//  1. Scale. Each feature x_j is put on a scale where spread means the same
//     at every level (features.Specs): y_j = 2√(x_j + 3/8) for counts
//     (Anscombe 1948), ln(1 + x_j) for volumes, and for an entropy H the
//     count scale of its perplexity, 2√(2^H − 1 + 3/8).
//
//  2. Device baseline. Each device keeps a forecast m_j of y_j for its next
//     window, with the rise it is on, t_j, and a variance v_j of y_j over
//     its normal windows: the mean and rise by Brown's double exponential
//     smoothing with discount λ = 1/min(w, W) (Brown, Smoothing, Forecasting
//     and Prediction of Discrete Time Series, 1963; in Holt's form, level
//     gain λ(2 − λ) and trend gain λ², Gardner, "Exponential smoothing: the
//     state of the art", J. Forecasting 4, 1985, §2.2), the variance as
//     West's weighted update ("Updating mean and variance estimates", CACM
//     22, 1979, with weights 1/w):
//
//     w ← w + 1,  δ = y − m,  t ← max(0, t + λ²δ),  m ← m + λ(2 − λ)δ + t,
//     v ← (1 − 1/min(w, V))(v + δ²/min(w, V))
//
//     with m kept at or above the scale's value for 0 (a forecast never
//     falls below no traffic), starting from the profile's pooled mean and variance with the weight
//     of PriorWeight windows, so a device first seen live is judged against
//     its profile until it has a history of its own. W = BaselineWindows
//     (an hour of one-minute windows) lets the mean follow a daily cycle;
//     V = VarianceWindows (eight hours) keeps the variance steady. A plain
//     weighted mean follows a ramp a constant 1/λ − 1 windows behind it —
//     on the morning rise an hour's growth below the device's traffic, all
//     of it an upward deviation — where the discounted linear trend follows
//     a linear ramp with no lag at all (Brown's steady-state forecast error
//     on a line is 0). Only a rise is followed (t ≥ 0): the detector counts
//     upward deviations alone (step 4), so a forecast that lags a fall
//     errs on the quiet side, while one that carried a fall on past its
//     end — the night's trough, a device's lull — would put every window
//     after it above the forecast (DeviceBaseline.Trend).
//     Every window that is not anomalous teaches it — every window at all
//     while the baseline is young (fewer than YoungWeight windows, the
//     prior's counted), so that a device far from its profile's prior
//     learns its own normal — but with δ clipped at
//     HuberK standard deviations (Huber, "Robust estimation of a location
//     parameter", Ann. Math. Statist. 35, 1964): a baseline follows a
//     device whose traffic drifts, however fast, while one unusual window
//     — or an attack too slight to alert — moves it only a little. A hard
//     cut instead (no learning above some level) would freeze the baseline
//     of a device on a steep daily ramp, which then drifts ever further
//     from it.
//
//  3. Deviation. z_j = (y_j − m_j)/(s_j·√(c_j·v_j + f_j²)), where the floor
//     f_j (Floors) keeps a feature that never varied in training from
//     dividing by zero: its first change is a large deviation, not an
//     undefined one (and y_j within MeanResolution of m_j, the rounding of
//     the float32 mean, is a deviation of exactly 0); c_j is 1 but for a
//     mean over the window's flows (bytes per packet,
//     features.Spec.PerFlow), whose spread shrinks as 1/n with the n flows
//     it averages (the standard error of a mean): its v_j is kept for a
//     window of the device's usual F flows (DeviceBaseline.Flows, learnt
//     as v_j is, each window's δ² divided by its c_j) and c_j = max(1, F/n)
//     widens it for a window of fewer — a device whose flows thin out in
//     the afternoon is not judged on the bytes per packet of its busy
//     morning. It is never narrowed below 1 for a window of more flows:
//     the device's own mean moves from window to window as well, and that
//     part of the spread does not shrink with n. And the scale s_j
//     (Scales, featureScales) is the feature's own upper tail in training
//     — the 98th percentile of its upward deviations, at least 1 — so
//     that features with heavy tails in ordinary traffic and features that
//     never move count in commensurate
//     units in step 4. A count (or port entropy) that took one value in
//     every training window has no upper tail to measure; its s_j puts its
//     first step past that value where the training history does: at
//     probability 1/(2(n + 1)) over n training windows in A or B (step
//     4), Jeffreys' predictive for an event never seen
//     (calibrateConstantFeatures).
//     z grows without bound with the feature, so unlike an isolation score
//     it keeps rising past anything training saw. Time context longer than
//     a window comes from the features themselves (first contacts over the
//     last hour, recurring contact with newly seen hosts). Kitsune-style
//     damped averages of z over ≈ 10 windows (Mirsky et al., NDSS 2018)
//     were tried as extra components and left out by measurement: on the
//     detection benchmark they caught no attack sooner, and the runs of
//     elevated levels they make in ordinary traffic raised the thresholds
//     of step 6 for every attack (docs/DETECTION.md).
//
//  4. Three statistics of the upward deviations r = max(z, 0): A = their
//     max, B = Σ of their squares (several features moving together), and
//     C = the isolation-forest score of r, whose forest is grown on the
//     training windows' r (Liu, Ting & Zhou 2008): the profile's joint
//     normal, with each device's scale removed. Less of a feature than the
//     device's forecast is no evidence of an attack, and the forest, which
//     splits wherever its sample spreads, used to isolate a window by a
//     small shortfall in every window (a thermostat whose baseline expects
//     1.04 reports a minute shows −0.16 in flows in each window of one; at
//     a forest level of 2.4 while A and B stood below 1).
//
//  5. Tail probabilities. Each statistic's training distribution — computed
//     prequentially, each window judged before it teaches the baseline, as
//     live windows are — is fitted above its 98th percentile with a
//     generalised Pareto tail (package evt; SPOT, Siffer et al. KDD 2017),
//     and S_i is the tail's posterior predictive over its shape ("Predictive
//     tails" in package evt). A short warm-up leaves each tail a few
//     dozen excesses, and a fit that happens to come out light puts a
//     window a little past the training maximum at a level its data cannot
//     support; averaged over the shapes those excesses allow, such a
//     window stays moderate while one far past them still rises without
//     bound.
//     The window's anomaly level is L = max_i(−log₁₀ S_i(stat_i)) − log₁₀ 3:
//     the smallest of the three tail probabilities, Bonferroni-corrected for
//     taking the smallest. Its score in [0, 1) is L/(1 + L), monotone in L.
//
//  6. Thresholds from a false-alert budget. A budget of b false incidents
//     per 1,000 device-hours is a rate r = b/(1000·ρ) per window, where ρ
//     is how many windows a device of the profile showed per hour of
//     training (Behaviour.WindowsPerDeviceHour): a device shows a window
//     only in a minute it sent a flow, so a meter that reports every
//     quarter of an hour shows four an hour. Density follows the daily
//     cycle, so ρ is measured only on a day of history (DensityHistory),
//     where it is the day's average; on less, ρ = 3600 s/Δ for windows of length Δ,
//     the most a device can show. The rate is split five ways. A fifth
//     goes to single extreme windows: L_ext is the level exceeded with probability
//     r/5 under the exponential tail fitted to the training
//     windows' L, and at least −log₁₀(r/5), the level L's own calibration
//     gives. A fifth goes to incidents opened by k anomalous windows among
//     n. Anomalous windows cluster (a device off its baseline stays off
//     for a while), so the independence formula C(n, k)·p^k understates
//     how often k of n coincide — on our fleets by 6 to 14 times. Instead
//     the statistic the rule thresholds, O_t = min(L_t, k-th largest of the
//     last n levels), is computed along each training device's sequence,
//     dependence and all, its tail fitted the same way, and the anomalous
//     level L_w is the one O exceeds with probability r/5 (at least
//     MinAnomalousLevel). Another fifth goes to the sustained rule
//     (SustainedK windows among the last SustainedN at or above L_s): the
//     same construction with its own statistic gives L_s ≤ L_w, so a
//     moderate anomaly that lasts opens an incident although no single
//     window of it is anomalous. This is the usual remedy for clustered
//     exceedances — model the cluster statistic rather than the single
//     exceedance (see Coles, An Introduction to Statistical Modeling of
//     Extreme Values, 2001, §5.3). Between the two sits the persistent
//     rule (PersistentK windows among the last PersistentN at or above
//     L_p, fitted the same way): an anomaly held for three or four
//     minutes at a level that two windows of ordinary traffic reach
//     together now and then but three rarely do. The last fifth goes to
//     the evidence rule (EvidenceN): the sum of the last EvidenceN levels,
//     each a −log₁₀ probability, at or above L_e, the newest window
//     holding at least its even share (E_t = min(Σ L, EvidenceN·L_t),
//     fitted the same way) — a few windows each just short of the
//     anomalous level, weighed together rather than counted.
//
//     The persistent, sustained and evidence rules count windows as so
//     many pieces of evidence, so they judge each window by its own: their
//     level L'_t is L_t with the deviations of damped features (features.Spec.Damped:
//     the first-contact count, whose half-life of half an hour is longer
//     than any of their spans) left out of A and B. Otherwise one burst of
//     two ordinary first contacts, held in the damped count for an hour,
//     makes six of the next ten windows elevated and opens a sustained
//     incident on its own, which nothing in a short warm-up's training
//     sequences had calibrated. Their levels L_p, L_s and L_e stay fitted
//     to the full L, so that judged on L' ≤ L the three rules open on a subset
//     of the windows their fits counted and keep within their shares of
//     the budget; refitted to L' they fell (the damped count's lingering
//     had been part of the training statistics), and the persistent rule
//     then opened on the bursts of devices whose records arrive split
//     across partitions (docs/DETECTION.md). The extreme rule keeps the
//     full L, and the damped count its say in a fan-out too slow for one
//     window. The k-of-n rule thresholds the full L too, but counts only
//     windows anomalous by their own evidence as well — L' ≥ L_w, or a
//     host new to the device in the window (a beacon's host again, a
//     fan-out's next): one first contact, which the damped count holds
//     for half an hour, otherwise makes every window after it anomalous
//     and opens an incident on a device that never touched the host again
//     (on sparse devices, whose tails have seen few first contacts, most
//     of their false incidents). Its level, fitted to the full L, opens
//     then on a subset of the windows the fit counted.
//
//     The persistent and sustained rules ask each device its own count
//     (RuleKFor): k + round(n·(p − q)) of n, p the device's share of
//     windows at the rule's level and q the profile's, so that a device
//     raised more often than its peers — which the pooled fit weighs as a
//     few long clusters — needs the same excess over its own usual count
//     as the profile's usual device over the profile's. Asked no fewer
//     than k, every device opens on a subset of what the fit counted.
//
//     The levels' tails (of L and of the rules' statistics) are fitted
//     with the shape fixed at ξ = 0: a level is a −log₁₀ tail probability,
//     exponential in its upper tail by construction. And what the budget
//     counts is incidents, not windows: each tail is fitted to the maxima
//     of its statistic's clusters — exceedances fewer than M windows apart
//     in one device's sequence, as they would be one incident — at the
//     rate of clusters per window (runs declustering, Coles 2001, §5.3.2;
//     evt.FitClusters). Counted window by window, one device that stays
//     above the tail threshold for an hour would weigh as sixty
//     exceedances and set the profile's levels alone. For the same reason
//     the tail's threshold is lowered when the top 2 % of a statistic
//     holds fewer than evt.MinClusters clusters: on a sparse profile the
//     top of the sustained statistic was three long runs of one noisy
//     device, and a scale fitted to three excesses set that rule's level.
//
//     The levels are placed on the plug-in fits, which hold the budget
//     when the fits are exact. How far they are to be trusted is
//     ExpectedFalseIncidents: the rate they give averaged over the fits'
//     own error, several times the budget when a short warm-up of a small
//     fleet leaves each rule a handful of episodes.

// BaselineWindows is W above: the most windows a device baseline weighs,
// about an hour of one-minute windows.
const BaselineWindows = 60

// VarianceWindows is the most windows a device's variances weigh: eight
// hours. On the features' scales spread hardly depends on level (but for a
// mean over a window's flows, whose spread step 3 widens for a window of
// fewer flows than the device's usual), so the
// variance need not follow the daily cycle as the mean must, and a longer
// memory keeps its estimate from being small by chance (which would make
// ordinary windows look extreme).
const VarianceWindows = 480

// PriorWeight is how many windows the profile prior counts for in a new
// device's baseline.
const PriorWeight = 8

// YoungWeight is the weight below which a device's baseline is young
// (DeviceBaseline.Young): the profile prior's PriorWeight windows and
// features.MatureWindows of the device's own, the half hour a new device's
// destinations take to count too.
const YoungWeight = PriorWeight + features.MatureWindows

// BurnInWindows is how many of a device's first training windows only
// teach its baseline (see warmStart).
const BurnInWindows = 2

// ResidualDims is the length of r: one deviation per feature.
const ResidualDims = features.Count

// Floors are f_j above, per scale: for counts, a third of the step from
// 0 to 1 (a first-ever event stands three deviations out; for entropy,
// a second port used as much as the first); for volumes a 10 % change.
var Floors = func() [features.Count]float64 {
	var f [features.Count]float64
	for j, s := range features.Specs {
		switch s.Scale {
		case features.ScaleLog:
			f[j] = 0.1
		default: // counts and entropy, both on the count scale
			f[j] = (anscombe(1) - anscombe(0)) / 3
		}
	}
	return f
}()

func anscombe(x float64) float64 { return 2 * math.Sqrt(x+0.375) }

// scaled returns y_j for feature j.
func scaled(j int, x float64) float64 {
	switch features.Specs[j].Scale {
	case features.ScaleCount:
		return anscombe(max(x, 0))
	case features.ScaleLog:
		return math.Log1p(max(x, 0))
	default: // ScaleEntropy
		return anscombe(math.Exp2(max(x, 0)) - 1)
	}
}

// unscaled is the inverse of scaled, for showing a baseline in the
// feature's own units.
func unscaled(j int, y float64) float64 {
	switch features.Specs[j].Scale {
	case features.ScaleCount:
		return max((y/2)*(y/2)-0.375, 0)
	case features.ScaleLog:
		return math.Expm1(y)
	default: // ScaleEntropy
		return math.Log2(max((y/2)*(y/2)-0.375, 0) + 1)
	}
}

// Budget is how many false incidents a SOC accepts, and the incident rule
// the thresholds are placed for (step 6 above).
type Budget struct {
	// FalseAlertsPer1000DeviceHours is b. Default 1.
	FalseAlertsPer1000DeviceHours float64 `json:"false_alerts_per_1000_device_hours"`
	// WindowSeconds is Δ. Default 60.
	WindowSeconds float64 `json:"window_seconds"`
	// K of the last N windows anomalous open an incident. Defaults 2 of 3.
	K int `json:"k"`
	N int `json:"n"`
	// M quiet windows close an incident: exceedances of a rule's level
	// fewer than M windows apart are one incident. Default 5.
	M int `json:"m,omitempty"`
}

// WithDefaults fills zero fields.
func (b Budget) WithDefaults() Budget {
	if b.FalseAlertsPer1000DeviceHours == 0 {
		b.FalseAlertsPer1000DeviceHours = 1
	}
	if b.WindowSeconds == 0 {
		b.WindowSeconds = 60
	}
	if b.K == 0 {
		b.K = 2
	}
	if b.N == 0 {
		b.N = 3
	}
	if b.M == 0 {
		b.M = 5
	}
	return b
}

// Validate names the first unusable field.
func (b Budget) Validate() error {
	switch {
	case !(b.FalseAlertsPer1000DeviceHours > 0):
		return fmt.Errorf("false_alerts_per_1000_device_hours: must be positive, got %v", b.FalseAlertsPer1000DeviceHours)
	case b.N < 1 || b.N > 16:
		return fmt.Errorf("incident n: must be in [1, 16], got %d", b.N)
	case b.K < 1 || b.K > b.N:
		return fmt.Errorf("incident k: must be in [1, n=%d], got %d", b.N, b.K)
	case b.M < 1:
		return fmt.Errorf("incident m: must be at least 1, got %d", b.M)
	}
	return nil
}

// perWindow is the budget as a rate per window, r of step 6, for a
// profile whose devices show perHour windows a device-hour (0: unknown,
// one every Δ).
func (b Budget) perWindow(perHour float64) float64 {
	return b.FalseAlertsPer1000DeviceHours / (1000 * b.windowsPerHour(perHour))
}

// windowsPerHour is perHour, or one window every Δ when it is unknown.
func (b Budget) windowsPerHour(perHour float64) float64 {
	b = b.WithDefaults()
	if perHour > 0 {
		return perHour
	}
	return 3600 / b.WindowSeconds
}

// LearnLevel is the highest level at which a window's destinations join
// its device's history of known peers: a host seen in a window in the top
// 1 % of the tail stays new, so that a beacon too slight to alert at first
// is not learnt as a usual peer.
const LearnLevel = 2

// SustainedK and SustainedN are the sustained opening rule: SustainedK
// windows at or above SustainedLevel among a device's last SustainedN open
// an incident — a moderate anomaly that lasts (lateral movement at a slow
// pace, a beacon), which the k-of-n rule's three windows cannot see. Its
// level is fitted like the k-of-n rule's (step 6), to the SustainedK-th
// largest of the last SustainedN levels along the training sequences, and
// the budget is split among the opening rules (openingRules).
const (
	SustainedK = 6
	SustainedN = 10
)

// PersistentK and PersistentN are the persistent opening rule: PersistentK
// windows at or above PersistentLevel among a device's last PersistentN —
// an anomaly held for a few minutes (an upload, a fan-out), caught at its
// third window although none of its windows reaches the anomalous level.
const (
	PersistentK = 3
	PersistentN = 4
)

// EvidenceN is the span of the evidence opening rule: the levels of a
// device's last EvidenceN windows, summed, at or above EvidenceLevel open
// an incident, provided the newest window carries at least its even share
// of that sum. The count rules ask each window to clear a level of its own;
// the sum weighs the windows by how rare each was, so three windows that
// each fall just short of the anomalous level — a new host, the host
// again, and again — are judged together for what they are. A level is
// −log₁₀ of a tail probability, so the sum is −log₁₀ of the product of the
// windows' probabilities: Fisher's method of combining independent tests
// (Statistical Methods for Research Workers, 1925, §21.1), over a
// scan window of EvidenceN, like a scan statistic (Naus, JASA 77, 1982).
// The windows of one device are not independent, so the level is not read
// from Fisher's χ² but fitted, like every rule's, to the statistic along
// the training sequences (step 6). Its span is the k-of-n rule's default N.
const EvidenceN = 3

// openingRules is how many ways the budget is split: single extreme
// windows, k of n, persistent, sustained, evidence.
const openingRules = 5

// MinAnomalousLevel bounds the anomalous level from below whatever the
// training data: no window with a tail probability above 1 % is anomalous.
const MinAnomalousLevel = 2

// openingStatistic returns, for each window of each device's sequence
// (rows starts[d] to starts[d+1]), the statistic that the k-of-n rule
// compares with a level τ: the rule opens an incident at window t exactly
// when L_t ≥ τ and at least k of the last n levels are ≥ τ, that is when
// min(L_t, k-th largest of L_{t−n+1..t}) ≥ τ.
func openingStatistic(levels []float64, starts []int, k, n int) []float64 {
	out := make([]float64, len(levels))
	last := make([]float64, 0, n)
	for d := 0; d+1 < len(starts); d++ {
		for t := starts[d]; t < starts[d+1]; t++ {
			last = last[:0]
			for u := max(starts[d], t-n+1); u <= t; u++ {
				last = append(last, levels[u])
			}
			slices.Sort(last)
			kth := 0.0
			if len(last) >= k {
				kth = last[len(last)-k]
			}
			out[t] = min(levels[t], kth)
		}
	}
	return out
}

// evidenceStatistic returns, for each window of each device's sequence
// (rows starts[d] to starts[d+1]), the statistic that the evidence rule
// compares with a level τ: the rule opens at window t exactly when the
// sum of the last n levels is ≥ τ and n·L_t ≥ τ (the newest window
// carries at least an even share), that is when
// min(Σ L_{t−n+1..t}, n·L_t) ≥ τ.
func evidenceStatistic(levels []float64, starts []int, n int) []float64 {
	out := make([]float64, len(levels))
	for d := 0; d+1 < len(starts); d++ {
		for t := starts[d]; t < starts[d+1]; t++ {
			sum := 0.0
			for u := max(starts[d], t-n+1); u <= t; u++ {
				sum += levels[u]
			}
			out[t] = min(sum, float64(n)*levels[t])
		}
	}
	return out
}

// Behaviour is what a behaviour model adds to its artifact's metadata.
type Behaviour struct {
	// Schema is the feature schema (features.SchemaVersion) the model was
	// trained on.
	Schema int `json:"schema"`
	// PriorMean and PriorVar are the profile's pooled mean and variance of
	// each scaled feature: a new device's starting baseline.
	PriorMean []float64 `json:"prior_mean"`
	PriorVar  []float64 `json:"prior_var"`
	Floors    []float64 `json:"floors"`
	// Scales are s_j of step 3: each feature's upper-tail scale in
	// training, or for a count constant in training the scale that puts
	// its first step where the training history does
	// (calibrateConstantFeatures). Absent (models trained before them):
	// all 1.
	Scales []float64 `json:"scales,omitempty"`
	// Drift is each scaled feature's training distribution, against
	// which live windows' population stability index is measured
	// (drift.go). Absent in models trained before it.
	Drift []DriftBins `json:"drift,omitempty"`
	// Tails of the statistics A (max), B (sum of squares) and C (forest).
	MaxTail    evt.Tail `json:"max_tail"`
	SumTail    evt.Tail `json:"sum_tail"`
	ForestTail evt.Tail `json:"forest_tail"`
	Budget     Budget   `json:"budget"`
	// LevelTail is the fitted tail of the training windows' levels L;
	// OpeningTail that of the k-of-n opening statistic (step 6).
	LevelTail   evt.Tail `json:"level_tail"`
	OpeningTail evt.Tail `json:"opening_tail"`
	// AnomalousLevel and ExtremeLevel are the levels the budget places.
	AnomalousLevel float64 `json:"anomalous_level"`
	ExtremeLevel   float64 `json:"extreme_level"`
	// SustainedTail and SustainedLevel are the tail of the sustained
	// rule's statistic (the SustainedK-th largest of the last SustainedN
	// levels) and the level it places: SustainedK windows at or above it
	// among the last SustainedN open an incident. Absent (0) in models
	// trained before it: the rule is off.
	SustainedTail  evt.Tail `json:"sustained_tail,omitzero"`
	SustainedLevel float64  `json:"sustained_level,omitempty"`
	// PersistentTail and PersistentLevel are the same for the persistent
	// rule (PersistentK of the last PersistentN). Absent (0) in models
	// trained before it: the rule is off.
	PersistentTail  evt.Tail `json:"persistent_tail,omitzero"`
	PersistentLevel float64  `json:"persistent_level,omitempty"`
	// EvidenceTail and EvidenceLevel are the tail of the evidence rule's
	// statistic (the sum of the last EvidenceN levels, see
	// evidenceStatistic) and the level it places. Absent (0) in models
	// trained before it: the rule is off.
	EvidenceTail  evt.Tail `json:"evidence_tail,omitzero"`
	EvidenceLevel float64  `json:"evidence_level,omitempty"`
	// Peers are the destinations two or more of the profile's training
	// devices used (features.Peers): a device's first contact with one
	// of them is no news. Absent in models trained before them, or
	// from feature vectors alone: none are shared.
	Peers features.Peers `json:"peers,omitempty"`
	// WindowsPerDeviceHour is how many windows a device of the profile
	// showed in an hour of training (windowsPerDeviceHour): the budget,
	// counted in device-hours, is spread over that many windows. 0 in
	// models trained on less than DensityHistory, on series that did not
	// say the time they covered, or before it: one window every Δ, the
	// most a device can show.
	WindowsPerDeviceHour float64 `json:"windows_per_device_hour,omitempty"`
	// ElevatedShare and PersistentShare are the shares of the training
	// windows elevated and persistent by their own level
	// (Judgement.Elevated, Judgement.Persistent): how often the profile's
	// usual device shows one (Model.RuleKFor). Absent (0) in models trained
	// before them: every device is asked the rules' counts.
	ElevatedShare   float64 `json:"elevated_share,omitempty"`
	PersistentShare float64 `json:"persistent_share,omitempty"`
}

// SharedPeers returns the destinations the model's profile shares (nil
// for a model without them).
func (m *Model) SharedPeers() features.Peers {
	if m == nil || m.Behaviour == nil {
		return nil
	}
	return m.Behaviour.Peers
}

// ExpectedFalseIncidents is the rate of false incidents per 1,000
// device-hours that the model's levels are to be expected to give on
// traffic like its training's, once the error of the tails they were placed
// on is counted: the sum over the opening rules of each rule's tail's
// posterior predictive rate at its level (evt.Tail.PredictiveSurvival) —
// for the persistent and sustained rules, which judge a window's own level
// L' ≤ L against levels fitted to L, an upper bound. The levels are placed on plug-in fits, which hold the budget only when
// the fits are exact; a fit to the few dozen incidents' worth of episodes a
// short warm-up of a small fleet holds is as likely low as high, and the
// rate its thresholds give is on average higher than planned — about twice
// the budget with 40 episodes per rule, six times with 10. More training
// history (a longer warm-up, a larger fleet) brings it to the budget.
func (bh *Behaviour) ExpectedFalseIncidents() float64 {
	b := bh.Budget.WithDefaults()
	rate := bh.LevelTail.PredictiveSurvival(bh.ExtremeLevel) + bh.OpeningTail.PredictiveSurvival(bh.AnomalousLevel)
	if bh.PersistentLevel > 0 {
		rate += bh.PersistentTail.PredictiveSurvival(bh.PersistentLevel)
	}
	if bh.SustainedLevel > 0 {
		rate += bh.SustainedTail.PredictiveSurvival(bh.SustainedLevel)
	}
	if bh.EvidenceLevel > 0 {
		rate += bh.EvidenceTail.PredictiveSurvival(bh.EvidenceLevel)
	}
	return rate * 1000 * b.windowsPerHour(bh.WindowsPerDeviceHour)
}

// LevelScore maps an anomaly level L to the score L/(1 + L).
func LevelScore(l float64) float64 {
	l = max(l, 0)
	return l / (1 + l)
}

// DeviceBaseline is one device's own normal (step 2). Its zero value is
// "not started": start it from the model's prior. 196 bytes, kept per
// tracked device. Mean is the forecast of the device's next window.
type DeviceBaseline struct {
	Mean   [features.Count]float32
	Var    [features.Count]float32
	Weight float32
	// Elevated and Persistent are the device's shares of its windows
	// elevated and persistent by their own level (Judgement.Elevated,
	// Judgement.Persistent): its training windows' shares, then averaged
	// over the windows it learns, as Var is (LearnRaised). The sustained
	// and persistent rules ask a device that shows such windows more often
	// than its profile's usual device for as many more (Model.RuleKFor).
	Elevated, Persistent float32
	// Flows is the device's mean flows a window over the windows its
	// variances weigh (0: not yet known). A feature that is a mean over a
	// window's flows (features.Spec.PerFlow) varies more in a window of
	// fewer flows; its variance is kept for a window of Flows flows and
	// widened by Flows/n for a window of n < Flows (spreadFactor).
	Flows float32
	// Trend is the rise per window of each feature's forecast Mean, on
	// the feature's scale: Brown's discounted linear trend (step 2),
	// never below 0 — a rise is followed, a fall is not carried on.
	Trend [features.Count]float32
}

// spreadFactor is the factor by which feature j's variance in b widens
// for window v: Flows/n for a per-flow mean (features.Spec.PerFlow) in a
// window of n < Flows flows — the variance of a mean of n independent
// flows is σ²/n (the standard error of a mean) — and 1 otherwise. A window
// of more flows than usual is not judged more narrowly: the device's mean
// itself drifts from window to window, and that part of the spread does
// not shrink with n.
func (b *DeviceBaseline) spreadFactor(j int, v *features.Vector) float64 {
	if !features.Specs[j].PerFlow || b.Flows <= 0 {
		return 1
	}
	return max(1, float64(b.Flows)/max(v[features.Flows], 1))
}

// Started reports whether the baseline holds anything.
func (b *DeviceBaseline) Started() bool { return b.Weight > 0 }

// Young reports whether the baseline has learned fewer than YoungWeight
// windows, the profile prior counted: a device first seen live, or one
// whose training history held fewer than YoungWeight windows. A young
// baseline learns every window of its device, anomalous or not
// (Huber-clipped as always), the way training warms a device's baseline on
// its own first hour (warmStart): the prior is the profile's pooled guess,
// and a device far from it — a line's new PLC ten times as busy as the
// profile's usual — that learned only its normal windows would never
// learn, and stay in one incident for as long as it runs. Its windows are
// judged all the same: a device this unlike its profile opens an
// incident, which closes once the baseline has learned it.
func (b *DeviceBaseline) Young() bool { return b.Weight < YoungWeight }

// StartBaseline sets b to the model's profile prior.
func (m *Model) StartBaseline(b *DeviceBaseline) {
	*b = DeviceBaseline{Weight: PriorWeight}
	for j := range features.Count {
		b.Mean[j] = float32(m.Behaviour.PriorMean[j])
		b.Var[j] = float32(m.Behaviour.PriorVar[j])
	}
}

// HuberK is the clipping point, in standard deviations, of a deviation's
// pull on a baseline (step 2).
const HuberK = 2.5

// Learn teaches a device's baseline a window that was not anomalous
// (step 2), each feature's deviation clipped at HuberK standard deviations.
func (m *Model) Learn(b *DeviceBaseline, v *features.Vector) {
	b.Weight = min(b.Weight+1, VarianceWindows)
	am := 1 / min(float64(b.Weight), BaselineWindows)
	av := 1 / float64(b.Weight)
	floors := m.Behaviour.Floors
	for j := range features.Count {
		f := b.spreadFactor(j, v)
		c := HuberK * math.Sqrt(float64(b.Var[j])*f+floors[j]*floors[j])
		d := min(max(scaled(j, v[j])-float64(b.Mean[j]), -c), c)
		mean, trend := brown(float64(b.Mean[j]), float64(b.Trend[j]), d, am, scaled(j, 0))
		b.Mean[j], b.Trend[j] = float32(mean), float32(trend)
		b.Var[j] = float32((1 - av) * (float64(b.Var[j]) + av*d*d/f))
	}
	if b.Flows == 0 {
		b.Flows = float32(v[features.Flows])
	} else {
		b.Flows = float32(float64(b.Flows) + av*(v[features.Flows]-float64(b.Flows)))
	}
}

// brown is one step of step 2's forecast: the forecast mean and rise
// after a window that fell d above the forecast mean, at discount l, the
// forecast kept at or above the scale's least value lo (a count of 0).
func brown(mean, trend, d, l, lo float64) (float64, float64) {
	trend = max(trend+l*l*d, 0)
	return max(mean+l*(2-l)*d+trend, lo), trend
}

// LearnRaised teaches the device's shares of elevated and persistent
// windows a window its baseline has just learnt (Learn), raised or not,
// weighing it as Learn weighs the window in the variances: how often a
// device's windows are raised is a property of its spread, not of its
// level.
func (b *DeviceBaseline) LearnRaised(j Judgement) {
	w := max(b.Weight, 1)
	b.Elevated += (indicator(j.Elevated) - b.Elevated) / w
	b.Persistent += (indicator(j.Persistent) - b.Persistent) / w
}

func indicator(b bool) float32 {
	if b {
		return 1
	}
	return 0
}

// RuleKFor returns how many windows among their last SustainedN and
// PersistentN at the sustained and persistent levels open an incident on
// the device of baseline b: SustainedK and PersistentK, plus the windows
// at that level the device shows in the span beyond what the profile's
// usual device shows, rounded — one more than the span, the rule off for
// the device, when that is more than the span.
//
// The rules' levels are fitted to the profile's pooled training windows
// (step 6), where a device that is raised far more often than its peers
// weighs as a few long clusters; live, the same device opens an incident
// whenever its ordinary runs of raised windows reach the count. (On the
// campus fleet a thermostat whose once-a-minute report falls within a
// second or two of the minute's edge shows windows of none or two
// reports in turn: 37 % of its training windows were elevated, against
// 0.9 % of its profile's.) Asking each device for the same excess over
// its own usual count as the rule asks of the profile's usual device over
// the profile's is the count's analogue of step 2's per-device baseline:
// a shift of location, as a device's mean is judged against its own. A
// device as often raised as its profile, or less, is asked the rule's
// count.
func (m *Model) RuleKFor(b *DeviceBaseline) (sustained, persistent int) {
	bh := m.Behaviour
	return kFor(SustainedK, SustainedN, float64(b.Elevated), bh.ElevatedShare),
		kFor(PersistentK, PersistentN, float64(b.Persistent), bh.PersistentShare)
}

// kFor is k of n, plus the device's excess of raised windows over the
// profile's in n, at share p against q.
func kFor(k, n int, p, q float64) int {
	extra := float64(n) * (p - q)
	if q == 0 || extra < 0.5 {
		return k
	}
	return min(k+int(math.Round(extra)), n+1)
}

// raisedWindows counts the windows among rows (residuals, ResidualDims
// a row) and their forest scores whose own level reaches the sustained
// rule's and the persistent rule's.
func (m *Model) raisedWindows(rows, scores []float64) (elevated, persistent int) {
	bh := m.Behaviour
	for i, f := range scores {
		own := m.presentLevel(rows[i*ResidualDims:(i+1)*ResidualDims], f)
		if bh.SustainedLevel > 0 && own >= bh.SustainedLevel {
			elevated++
		}
		if bh.PersistentLevel > 0 && own >= bh.PersistentLevel {
			persistent++
		}
	}
	return elevated, persistent
}

// Residuals writes r (steps 3 and 4: the upward deviations, 0 for a
// feature at or below its forecast) for window v into dst (ResidualDims
// long).
func (m *Model) Residuals(b *DeviceBaseline, v *features.Vector, dst []float64) {
	floors, scales := m.Behaviour.Floors, m.Behaviour.Scales
	for j := range features.Count {
		sd := math.Sqrt(float64(b.Var[j])*b.spreadFactor(j, v) + floors[j]*floors[j])
		if scales != nil {
			sd *= scales[j]
		}
		d := scaled(j, v[j]) - float64(b.Mean[j])
		if math.Abs(d) <= MeanResolution*math.Abs(float64(b.Mean[j])) {
			d = 0
		}
		dst[j] = max(d/sd, 0)
	}
}

// MeanResolution is the relative difference from a baseline's mean within
// which a window's value counts as equal to it: a residual of 0. The mean
// is a float32 (2⁻²⁴ ≈ 6·10⁻⁸ relative), and a feature that holds one
// value — a count that is 0 in every window of a profile's training, as
// a device's recurring new hosts are — differs from it only by rounding,
// by one device and window more than another. That is no behaviour, but
// an isolation tree splits a feature at any spread in its sample, however
// small (Liu, Ting & Zhou 2008 split uniformly between a node's minimum
// and maximum): the forest of step 4 split on the rounding, and a window's
// forest score turned on the last bits of its baseline's mean — two
// windows whose residuals agreed to 10⁻⁹ scored 0.604 and 0.638. That
// noise widened the training tail of C and raised every level fitted
// from it. Exact, a feature constant in training is never split on, as
// step 3 supposes (its first step is scaled for A and B instead).
const MeanResolution = 1e-6

// Outgrew reports whether a count of one kind of the device's flows — j:
// its small-packet or failed flows — grew past the device's baseline by
// more than its flows did, and by more than that count's own spread:
// whether the window's extra flows are of that kind in a larger share than
// the device's usual. Both counts are compared on the variance-stabilised
// (Anscombe) scale the baseline keeps, where a Poisson count's spread is
// about 1 whatever its rate (Anscombe 1948). A change of volume that keeps
// the device's mix — k times as many flows of every kind — does not: with
// s of the f flows of that kind, 2√(ks) − 2√s ≤ 2√(kf) − 2√f since s ≤ f;
// a flood or scan that adds flows of that kind does: 2√(s+a) − 2√s ≥
// 2√(f+a) − 2√f.
func (m *Model) Outgrew(b *DeviceBaseline, v *features.Vector, j int) bool {
	dj := scaled(j, v[j]) - float64(b.Mean[j])
	df := scaled(features.Flows, v[features.Flows]) - float64(b.Mean[features.Flows])
	floor := m.Behaviour.Floors[j]
	return dj-max(df, 0) > math.Sqrt(float64(b.Var[j])+floor*floor)
}

// ScaleQuantile is the training quantile of a feature's upward deviations
// that becomes its scale s_j (step 3): the quantile at which step 5's tails
// begin (1 − evt.DefaultTailShare), so that every feature's deviations
// reach its own tail at 1 — the marginal standardisation that precedes
// pooling in multivariate extremes (Coles 2001, §8.2).
const ScaleQuantile = 1 - evt.DefaultTailShare

// featureScales returns s_j = max(1, the ScaleQuantile quantile of the
// upward deviations z_j⁺ over the training rows): each feature's deviations
// in units of its own upper tail in ordinary traffic. Without it the
// statistics of step 4 pool features whose tails differ by an order of
// magnitude — a rare but ordinary binary event (a periodic device's
// occasional time-server query moves port entropy and small packets by
// three or four deviations) against a feature that never moves (contact
// recurring with a new host) — and the pooled tail, fitted to the heavy
// ones, hides a large move of a light one. The floor of 1 keeps a feature
// that seldom moved in training from being magnified; one that never moved
// is scaled by calibrateConstantFeatures instead. It is the usual
// robust standardisation of heterogeneous scores before they are combined
// (a quantile in place of a standard deviation, which heavy tails
// inflate).
func featureScales(rows []float64) []float64 {
	n := len(rows) / ResidualDims
	scales := make([]float64, ResidualDims)
	col := make([]float64, n)
	for j := range ResidualDims {
		for i := range n {
			col[i] = suspicious(rows[i*ResidualDims+j])
		}
		slices.Sort(col)
		q := col[min(int(math.Ceil(ScaleQuantile*float64(n)))-1, n-1)]
		scales[j] = max(1, q)
	}
	return scales
}

// suspicious is the part of a deviation that counts towards an anomaly:
// the part above the baseline (features.Spec).
func suspicious(z float64) float64 { return max(z, 0) }

// statistics returns A and B of step 4.
func statistics(r []float64) (maxDev, sumSq float64) {
	for _, z := range r {
		s := suspicious(z)
		maxDev = max(maxDev, s)
		sumSq += s * s
	}
	return maxDev, sumSq
}

// Judgement is a behaviour model's verdict on one window.
type Judgement struct {
	Level     float64 // L: −log₁₀ of the window's tail probability
	Score     float64 // L/(1 + L)
	Anomalous bool
	Extreme   bool
	// Elevated: the window's own level (L' of step 6) at or above the
	// sustained rule's level (see Behaviour.SustainedLevel).
	Elevated bool
	// Persistent: the window's own level at or above the persistent
	// rule's level (see Behaviour.PersistentLevel).
	Persistent bool
	// Evidence is the window's share of the evidence rule's level: its own
	// level L' (step 6) over Behaviour.EvidenceLevel; 0 when the model has
	// no evidence rule. EvidenceN windows whose shares sum to 1 open an
	// incident if the newest holds at least 1/EvidenceN.
	Evidence float64
	// OwnAnomalous: anomalous by the window's own evidence too: its level
	// L' of step 6 at or above the anomalous level, or a host new to the
	// device in it. A window anomalous only by a damped count that an
	// earlier event left in it counts towards no k-of-n opening.
	OwnAnomalous bool
	Confidence   Confidence
	// Learn is whether the window's destinations may join the device's
	// history: L below LearnLevel.
	Learn bool
}

// level is L of step 5 for a window's residuals and forest score.
func (m *Model) level(r []float64, forestScore float64) float64 {
	bh := m.Behaviour
	a, s := statistics(r)
	l := max(bh.MaxTail.Level(a), bh.SumTail.Level(s), bh.ForestTail.Level(forestScore)) - math.Log10(3)
	return max(l, 0)
}

// presentLevel is L' of step 6, the level of a window's own evidence: L
// with the upward deviations of damped features left out.
func (m *Model) presentLevel(r []float64, forestScore float64) float64 {
	var own [ResidualDims]float64
	copy(own[:], r)
	for j, s := range features.Specs {
		if s.Damped {
			own[j] = min(own[j], 0)
		}
	}
	return m.level(own[:], forestScore)
}

// Judge turns a window's residuals and forest score into a verdict.
func (m *Model) Judge(r []float64, forestScore float64) Judgement {
	bh := m.Behaviour
	l := m.level(r, forestScore)
	j := Judgement{Level: l, Score: LevelScore(l), Anomalous: l >= bh.AnomalousLevel, Extreme: l >= bh.ExtremeLevel}
	j.OwnAnomalous = j.Anomalous
	if j.Anomalous || bh.SustainedLevel > 0 || bh.PersistentLevel > 0 || bh.EvidenceLevel > 0 {
		own := m.presentLevel(r, forestScore)
		// A window that contacts a host or a port new to the device
		// (beyond its usual rate of them) brings evidence of its own about
		// what the damped count remembers: a beacon's host again, a
		// fan-out's next.
		j.OwnAnomalous = j.Anomalous && (own >= bh.AnomalousLevel || r[features.NewDst] > 0 || r[features.NewDstPorts] > 0)
		j.Elevated = bh.SustainedLevel > 0 && own >= bh.SustainedLevel
		j.Persistent = bh.PersistentLevel > 0 && own >= bh.PersistentLevel
		if bh.EvidenceLevel > 0 {
			j.Evidence = own / bh.EvidenceLevel
		}
	}
	j.Learn = !j.Anomalous && l < LearnLevel
	switch {
	case j.Extreme:
		j.Confidence = ConfidenceHigh
	case l >= (bh.AnomalousLevel+bh.ExtremeLevel)/2:
		j.Confidence = ConfidenceMedium
	default:
		j.Confidence = ConfidenceLow
	}
	return j
}

// ExplainDeviation lists the features that drove a window's deviation, by
// their share of Σ z² over the suspicious deviations, each with its value
// and the device's baseline in the feature's own units.
func (m *Model) ExplainDeviation(b *DeviceBaseline, v *features.Vector, r []float64, top int) []Contribution {
	shares := deviationShares(r)
	out := make([]Contribution, features.Count)
	for j := range features.Count {
		out[j] = Contribution{Feature: features.Names[j], Value: v[j], Baseline: unscaled(j, float64(b.Mean[j])), Share: shares[j]}
	}
	slices.SortStableFunc(out, func(a, b Contribution) int { return cmp.Compare(b.Share, a.Share) })
	return out[:min(top, len(out))]
}

// deviationShares is each feature's share of Σ z² over a window's
// suspicious deviations r (all 0 when none is suspicious).
func deviationShares(r []float64) [features.Count]float64 {
	var shares [features.Count]float64
	total := 0.0
	for j, z := range r {
		s := suspicious(z)
		shares[j] = s * s
		total += s * s
	}
	if total > 0 {
		for j := range shares {
			shares[j] /= total
		}
	}
	return shares
}

// ErrTooFewWindows is returned when a profile's history holds too few
// windows to train on: keep collecting.
var ErrTooFewWindows = errors.New("models: too few training windows")

// DeviceSeries is one device's training windows in time order.
type DeviceSeries struct {
	Device  string
	Vectors []features.Vector
	// From and To are the start of the first window and the end of the
	// last: the time the windows cover. Zero: not known.
	From, To time.Time
}

// DensityHistory is the least span of training history whose density of
// windows the budget is spread over (windowsPerDeviceHour): a day, every
// hour of the daily cycle, less an hour for the minutes by which a sparse
// profile's first and last windows fall inside the day it was trained on.
const DensityHistory = 23 * time.Hour

// windowsPerDeviceHour is how densely the series' devices showed windows:
// their windows over the device-hours their spans cover. It is 0 — one
// window every Δ, the most a device can show — when the series do not say
// their spans, or cover less than DensityHistory between them.
//
// The budget counts false incidents per device-hour, and a device shows a
// window only in a minute it sent a flow: a meter that reports every
// quarter of an hour shows four windows an hour, not sixty. Spread over
// sixty, the budget per window is fifteen times too small for it, and its
// thresholds sit where a fifteenth of the budget holds. But how densely a
// device shows windows follows the daily cycle — a badge reader shows ten
// an hour at night and sixty by day — and what is spread over a night's
// windows would be spent six times over by day. Over a whole day the
// density is the day's average, and the budget, itself an average over
// device-hours, holds over the day; a shorter history keeps the bound of
// one window every Δ.
//
// A span runs from the device's first window to its last, so a sparse
// device's gaps before the first and after the last are left out: the
// density is overestimated a little, which errs towards fewer false
// incidents.
func windowsPerDeviceHour(series []DeviceSeries) float64 {
	windows, hours := 0, 0.0
	var from, to time.Time
	for _, s := range series {
		if s.From.IsZero() || !s.To.After(s.From) {
			continue
		}
		windows += len(s.Vectors)
		hours += s.To.Sub(s.From).Hours()
		if from.IsZero() || s.From.Before(from) {
			from = s.From
		}
		if s.To.After(to) {
			to = s.To
		}
	}
	if hours <= 0 || to.Sub(from) < DensityHistory {
		return 0
	}
	return float64(windows) / hours
}

// BehaviourOptions configure TrainBehaviour.
type BehaviourOptions struct {
	Forest       iforest.Config
	Budget       Budget
	Profile      string
	TrainingData []string
	Now          func() time.Time
	// Peers are the profile's shared destinations, collected from the
	// training windows (features.PeerCounter); stored in the artifact.
	Peers features.Peers
}

// TrainBehaviour trains a profile's behaviour model on its devices'
// verified windows (steps 1–6) and returns it with each training device's
// baseline as the training left it, ready to judge the windows that follow.
func TrainBehaviour(series []DeviceSeries, opts BehaviourOptions) (*Model, map[string]DeviceBaseline, error) {
	budget := opts.Budget.WithDefaults()
	if err := budget.Validate(); err != nil {
		return nil, nil, fmt.Errorf("models: budget: %w", err)
	}
	bh := &Behaviour{Schema: features.SchemaVersion, Budget: budget, Floors: Floors[:], Peers: opts.Peers,
		PriorMean: make([]float64, features.Count), PriorVar: make([]float64, features.Count)}
	// Step 1 and the profile prior: pooled moments of the scaled features.
	n := 0
	for _, s := range series {
		for i := range s.Vectors {
			n++
			for j := range features.Count {
				d := scaled(j, s.Vectors[i][j]) - bh.PriorMean[j]
				bh.PriorMean[j] += d / float64(n)
				bh.PriorVar[j] += d * (scaled(j, s.Vectors[i][j]) - bh.PriorMean[j])
			}
		}
	}
	if n < 2 {
		return nil, nil, fmt.Errorf("%w: %d", ErrTooFewWindows, n)
	}
	for j := range bh.PriorVar {
		bh.PriorVar[j] /= float64(n - 1)
	}
	m := &Model{Metadata: Metadata{Behaviour: bh}}
	// Steps 2–4, prequentially: each window judged, then learnt.
	var rows, maxes, sums []float64
	devBase := make(map[string]DeviceBaseline, len(series))
	r := make([]float64, ResidualDims)
	var starts []int // first training row of each device
	for _, s := range series {
		starts = append(starts, len(maxes))
		b := m.warmStart(s.Vectors)
		for i := range s.Vectors {
			m.Residuals(&b, &s.Vectors[i], r)
			if i >= BurnInWindows {
				rows = append(rows, r...)
				a, q := statistics(r)
				maxes, sums = append(maxes, a), append(sums, q)
			}
			m.Learn(&b, &s.Vectors[i])
		}
		devBase[s.Device] = b
	}
	if len(maxes) < 20 {
		return nil, nil, fmt.Errorf("%w: %d after each device's first %d, need at least 20", ErrTooFewWindows, len(maxes), BurnInWindows)
	}
	// The training distribution of each feature, for drift, in the
	// feature's own units: its scale is monotone, so the bins and the
	// index are the same on either, and live windows need no transform.
	col := make([]float64, 0, n)
	bh.Drift = make([]DriftBins, features.Count)
	for j := range features.Count {
		col = col[:0]
		for _, s := range series {
			for i := range s.Vectors {
				col = append(col, s.Vectors[i][j])
			}
		}
		bh.Drift[j] = driftBinsOf(col)
	}
	// Step 3's scales, from the raw deviations; then every training row in
	// those units, as Residuals gives live rows from now on.
	// A feature constant in training gets its scale once the tails of A
	// and B are known (calibrateConstantFeatures); its deviations there,
	// rounding alone, add nothing to A and B, and the forest is grown on
	// rows in the final scales, as live rows will be.
	bh.Scales = featureScales(rows)
	constant, constants := constantFeatures(series)
	for i := range maxes {
		row := rows[i*ResidualDims : (i+1)*ResidualDims]
		for j := range row {
			row[j] /= bh.Scales[j]
		}
		maxes[i], sums[i] = statistics(row)
	}
	// Step 5 for A and B, which the constant features' scales need.
	var err error
	if bh.MaxTail, err = evt.Fit(maxes, 0); err == nil {
		bh.SumTail, err = evt.Fit(sums, 0)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("models: tail fit: %w", err)
	}
	bh.calibrateConstantFeatures(constant, constants, len(maxes))
	for j, c := range constant {
		if c {
			for i := range maxes {
				rows[i*ResidualDims+j] /= bh.Scales[j]
			}
		}
	}
	forest, err := iforest.Fit(rows, ResidualDims, opts.Forest)
	if err != nil {
		return nil, nil, fmt.Errorf("models: fit: %w", err)
	}
	// Scored on as many goroutines as built the trees (iforest.Config:
	// zero is every core).
	workers := opts.Forest.Workers
	if workers == 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	scores := make([]float64, len(maxes))
	if err := forest.ScoreBatchParallel(scores, rows, workers); err != nil {
		return nil, nil, err
	}
	// Step 5 for C.
	if bh.ForestTail, err = evt.Fit(scores, 0); err != nil {
		return nil, nil, fmt.Errorf("models: tail fit: %w", err)
	}
	m.forest = forest
	// Step 6: the fused levels of the training windows, and the statistic
	// the k-of-n rule thresholds, in each device's time order.
	levels := make([]float64, len(maxes))
	for i := range maxes {
		levels[i] = m.level(rows[i*ResidualDims:(i+1)*ResidualDims], scores[i])
	}
	opening := openingStatistic(levels, append(starts, len(levels)), budget.K, budget.N)
	sustained := openingStatistic(levels, append(starts, len(levels)), SustainedK, SustainedN)
	persistent := openingStatistic(levels, append(starts, len(levels)), PersistentK, PersistentN)
	evidence := evidenceStatistic(levels, append(starts, len(levels)), EvidenceN)
	// Levels are −log₁₀ tail probabilities: their tails, and those of the
	// rules' statistics built from them, are exponential; and what the
	// budget counts is incidents, so each rule's tail is that of its
	// statistic's clusters, M windows being what ends one (see
	// evt.FitClusters).
	seqs := starts
	fitRule := func(x []float64) (evt.Tail, error) { return evt.FitClusters(x, seqs, budget.M, 0) }
	if bh.LevelTail, err = fitRule(levels); err == nil {
		if bh.OpeningTail, err = fitRule(opening); err == nil {
			if bh.SustainedTail, err = fitRule(sustained); err == nil {
				if bh.PersistentTail, err = fitRule(persistent); err == nil {
					bh.EvidenceTail, err = fitRule(evidence)
				}
			}
		}
	}
	if err != nil {
		return nil, nil, fmt.Errorf("models: tail fit: %w", err)
	}
	bh.WindowsPerDeviceHour = windowsPerDeviceHour(series)
	rate := budget.perWindow(bh.WindowsPerDeviceHour)
	// The pooled tail speaks for the profile, not for its most regular
	// device, whose ordinary jitter can look extreme against it: a single
	// window must also be rarer than its share by its own calibrated level.
	share := rate / openingRules
	bh.ExtremeLevel = max(bh.LevelTail.Quantile(share), -math.Log10(share))
	bh.AnomalousLevel = min(max(bh.OpeningTail.Quantile(share), MinAnomalousLevel), bh.ExtremeLevel)
	bh.PersistentLevel = min(max(bh.PersistentTail.Quantile(share), MinAnomalousLevel), bh.AnomalousLevel)
	bh.SustainedLevel = min(max(bh.SustainedTail.Quantile(share), MinAnomalousLevel), bh.AnomalousLevel)
	// The evidence of EvidenceN windows is at least that of one anomalous
	// window.
	bh.EvidenceLevel = max(bh.EvidenceTail.Quantile(share), bh.AnomalousLevel)
	// Each device's shares of its training windows elevated and
	// persistent by their own level, and the profile's over all of them
	// (Behaviour.ElevatedShare, DeviceBaseline.Elevated; RuleKFor).
	var nElevated, nPersistent int
	for d, s := range series {
		end := len(maxes)
		if d+1 < len(starts) {
			end = starts[d+1]
		}
		if end == starts[d] {
			continue
		}
		e, p := m.raisedWindows(rows[starts[d]*ResidualDims:end*ResidualDims], scores[starts[d]:end])
		nElevated, nPersistent = nElevated+e, nPersistent+p
		b := devBase[s.Device]
		b.Elevated, b.Persistent = float32(e)/float32(end-starts[d]), float32(p)/float32(end-starts[d])
		devBase[s.Device] = b
	}
	bh.ElevatedShare = float64(nElevated) / float64(len(maxes))
	bh.PersistentShare = float64(nPersistent) / float64(len(maxes))
	flagged := 0
	for _, l := range levels {
		if l >= bh.AnomalousLevel {
			flagged++
		}
	}
	slices.Sort(levels)
	names := slices.Clone(features.Names[:])
	m.Metadata = Metadata{
		Algorithm: algorithmOf(forest) + "+device-baselines",
		Profile:   opts.Profile,
		Features:  names,
		Hyperparameters: Hyperparameters{
			Trees: forest.Trees(), Subsample: forest.Subsample(), Extension: forest.Extension(), Seed: opts.Forest.Seed,
		},
		Calibration: Calibration{
			Threshold: LevelScore(bh.AnomalousLevel),
			Medium:    LevelScore((bh.AnomalousLevel + bh.ExtremeLevel) / 2),
			High:      LevelScore(bh.ExtremeLevel),
		},
		Baselines:    baselines(rows, ResidualDims),
		TrainingRows: len(maxes),
		TrainingData: slices.Clone(opts.TrainingData),
		Metrics: map[string]float64{
			"train_level_p50":     levels[len(levels)/2],
			"train_level_p99":     levels[min(len(levels)-1, len(levels)*99/100)],
			"train_level_max":     levels[len(levels)-1],
			"train_flagged_share": float64(flagged) / float64(len(levels)),
			"devices":             float64(len(series)),
			// How densely its devices showed windows (0: not known).
			"windows_per_device_hour": bh.WindowsPerDeviceHour,
			// What the budget is to be expected to give, its fits' error
			// counted (ExpectedFalseIncidents).
			"expected_false_incidents_per_1000_device_hours": bh.ExpectedFalseIncidents(),
		},
		CreatedAt: createdAt(opts.Now),
		Behaviour: bh,
	}
	if _, err := m.MarshalBinary(); err != nil { // sets m.hash
		return nil, nil, err
	}
	return m, devBase, nil
}

// TrainedBaseline is the baseline training leaves a device whose training
// windows are vs, in time order (warmStart, then every window learnt, as
// TrainBehaviour does): the baseline the service judges the device's next
// window against once the model is trained.
//
// Its shares of elevated and persistent windows are those of the windows
// vs, judged as training judged them: each (after the first
// BurnInWindows) against the baseline before it learnt it.
func (m *Model) TrainedBaseline(vs []features.Vector) DeviceBaseline {
	b := m.warmStart(vs)
	var rows []float64
	r := make([]float64, ResidualDims)
	for i := range vs {
		if i >= BurnInWindows {
			m.Residuals(&b, &vs[i], r)
			rows = append(rows, r...)
		}
		m.Learn(&b, &vs[i])
	}
	if n := len(rows) / ResidualDims; n > 0 && m.forest != nil {
		scores := make([]float64, n)
		if err := m.forest.ScoreBatch(scores, rows); err == nil {
			e, p := m.raisedWindows(rows, scores)
			b.Elevated, b.Persistent = float32(e)/float32(n), float32(p)/float32(n)
		}
	}
	return b
}

// WarmBaseline is a device's baseline warmed on its windows vs, in time
// order, as training warms a training device's (see warmStart): how an
// offline evaluation starts a device before the period it judges. With
// fewer than two windows it is the profile prior.
func (m *Model) WarmBaseline(vs []features.Vector) DeviceBaseline { return m.warmStart(vs) }

// warmStart is a training device's baseline before its first window, as
// mature as a live device's would be: its mean is that of its first hour
// of windows, and its variance that of its one-step-ahead residuals when
// the mean follows the training windows as step 2 makes a live baseline
// follow them — not the spread around its whole-period mean, which would
// count a daily cycle as noise. Mean and variance are shrunk towards the
// profile prior by PriorWeight. Its mean flows a window
// (DeviceBaseline.Flows) are those of its windows, up to VarianceWindows
// of them. Judging training windows against such a baseline makes their
// deviations, and so the tails and the clustering fitted to them, those
// live windows will show.
func (m *Model) warmStart(vs []features.Vector) DeviceBaseline {
	var b DeviceBaseline
	m.StartBaseline(&b)
	n := len(vs)
	if n < 2 {
		return b
	}
	head := min(n, BaselineWindows)
	prior := float64(PriorWeight)
	flows := 0.0
	for i := range min(n, VarianceWindows) {
		flows += vs[i][features.Flows]
	}
	b.Flows = float32(flows / float64(min(n, VarianceWindows)))
	for j := range features.Count {
		mean := 0.0
		for i := range head {
			mean += scaled(j, vs[i][j])
		}
		mean /= float64(head)
		// Residuals of the running forecast, as Learn would run it.
		run, rise, ss := mean, 0.0, 0.0
		for i := range n {
			d := scaled(j, vs[i][j]) - run
			ss += d * d / b.spreadFactor(j, &vs[i])
			run, rise = brown(run, rise, d, 1/float64(min(i+1+head, BaselineWindows)), scaled(j, 0))
		}
		w := float64(min(n, VarianceWindows))
		b.Mean[j] = float32((float64(head)*mean + prior*m.Behaviour.PriorMean[j]) / (float64(head) + prior))
		b.Var[j] = float32((w*ss/float64(n) + prior*m.Behaviour.PriorVar[j]) / (w + prior))
	}
	b.Weight = float32(min(n, VarianceWindows))
	return b
}

// CheckSchema refuses a model that cannot judge this build's feature
// vectors, with a message that says what to do.
func (m *Model) CheckSchema() error {
	switch {
	case m.Behaviour == nil:
		return fmt.Errorf("model %s (%s) is not a behaviour model of feature schema %d (it has no device baselines; it was trained from a CSV or by an older chainwatch): train a new one on verified history and promote it",
			short(m.Hash()), m.Profile, features.SchemaVersion)
	case m.Behaviour.Schema != features.SchemaVersion:
		return fmt.Errorf("model %s (%s) was trained on feature schema %d, this build computes schema %d: train a new one on verified history and promote it",
			short(m.Hash()), m.Profile, m.Behaviour.Schema, features.SchemaVersion)
	}
	return nil
}

func short(h string) string { return h[:min(12, len(h))] }

// DeviceBaselineEncodingSize is the length of DeviceBaseline.MarshalBinary.
const DeviceBaselineEncodingSize = 4 * (3*features.Count + 4)

// DeviceBaselineEncodingSizeV4Flows is the length of a baseline of
// feature schema 4 with its mean flows but before it kept its trends (a
// device checkpoint of version 11); it restores with none, a flat
// forecast, and learns them again.
const DeviceBaselineEncodingSizeV4Flows = 4 * (2*features.Count + 4)

// DeviceBaselineEncodingSizeV4Shares is the length of a baseline of
// feature schema 4 with its shares of raised windows but before it kept
// its mean flows (a device checkpoint of version 10); it restores with
// none, and learns them again.
const DeviceBaselineEncodingSizeV4Shares = 4 * (2*features.Count + 3)

// DeviceBaselineEncodingSizeV4 is the length of a baseline of feature
// schema 4 before it kept its shares of elevated and persistent windows
// (a device checkpoint of version 9); it restores with none.
const DeviceBaselineEncodingSizeV4 = 4 * (2*features.Count + 1)

// DeviceBaselineEncodingSizeV2 is the length of a baseline of feature
// schema 2, of 14 features, which a device checkpoint before version 8
// holds.
const DeviceBaselineEncodingSizeV2 = 4 * (2*14 + 1)

// MarshalBinary encodes the baseline for a checkpoint (float32s, big-endian).
func (b *DeviceBaseline) MarshalBinary() ([]byte, error) {
	out := make([]byte, 0, DeviceBaselineEncodingSize)
	put := func(f float32) { out = binary.BigEndian.AppendUint32(out, math.Float32bits(f)) }
	for _, f := range b.Mean {
		put(f)
	}
	for _, f := range b.Var {
		put(f)
	}
	put(b.Weight)
	put(b.Elevated)
	put(b.Persistent)
	put(b.Flows)
	for _, f := range b.Trend {
		put(f)
	}
	return out, nil
}

// UnmarshalBinary restores a checkpointed baseline.
func (b *DeviceBaseline) UnmarshalBinary(in []byte) error {
	switch len(in) {
	case DeviceBaselineEncodingSize, DeviceBaselineEncodingSizeV4Flows, DeviceBaselineEncodingSizeV4Shares, DeviceBaselineEncodingSizeV4:
	default:
		return fmt.Errorf("models: baseline checkpoint of %d bytes is damaged", len(in))
	}
	get := func() float32 {
		f := math.Float32frombits(binary.BigEndian.Uint32(in))
		in = in[4:]
		return f
	}
	var g DeviceBaseline
	for j := range g.Mean {
		g.Mean[j] = get()
	}
	for j := range g.Var {
		g.Var[j] = get()
	}
	g.Weight = get()
	if len(in) > 0 {
		g.Elevated, g.Persistent = get(), get()
	}
	if len(in) > 0 {
		g.Flows = get()
	}
	if len(in) > 0 {
		for j := range g.Trend {
			g.Trend[j] = get()
		}
	}
	*b = g
	return nil
}

// constantFeatures reports, per feature, whether it took one value in
// every training window, and that value.
func constantFeatures(series []DeviceSeries) (constant [features.Count]bool, value features.Vector) {
	for j := range features.Count {
		constant[j] = true
		seen := false
		for _, s := range series {
			for i := range s.Vectors {
				switch x := s.Vectors[i][j]; {
				case !seen:
					value[j], seen = x, true
				case x != value[j]:
					constant[j] = false
				}
			}
		}
		constant[j] = constant[j] && seen
	}
	return constant, value
}

// calibrateConstantFeatures sets the scale s_j of each count or entropy
// feature that was constant in training (step 3) so that its first step
// alone, one unit past the constant c, has the tail probability
// p = 1/(2(n + 1)) in A or in B, whichever it reaches first: z_j of the
// step is min(A's quantile at p, √(B's quantile at p)).
//
// Seen in none of n training windows, an event's probability per window
// has Jeffreys' posterior Beta(1/2, n + 1/2) (Jeffreys' prior Beta(1/2,
// 1/2) on a binomial proportion), whose mean — the posterior predictive
// probability that the next window shows it — is 1/(2(n + 1)) (Gelman et
// al., Bayesian Data Analysis, 3rd ed., 2013, §2.8). The upper-tail scale
// of the other features has nothing to say about such a feature: its 98th
// percentile is zero, and with s_j = 1 its first step would sit at
// (y(c+1) − y(c))/f_j — three deviations for a count from 0 — which the
// tail of A, made by the other features, maps to a level of 3 in a profile
// whose features are heavy-tailed and of 8 in one whose features are
// light: a badge reader's first small-packet flow extreme, a thermostat's
// first extra flows, ports and failures not even anomalous. Calibrated,
// the first step stands where its training history puts it in every
// profile, and further steps — or several such features moving at once,
// which B adds up — grow along the tails beyond it. Volumes (ScaleLog)
// have no unit step and keep s_j.
func (bh *Behaviour) calibrateConstantFeatures(constant [features.Count]bool, value features.Vector, n int) {
	p := 0.5 / float64(n+1)
	q := min(bh.MaxTail.Quantile(p), math.Sqrt(bh.SumTail.Quantile(p)))
	if !(q > 0) {
		return
	}
	for j, spec := range features.Specs {
		if !constant[j] || spec.Scale == features.ScaleLog {
			continue
		}
		c := value[j]
		next := c + 1
		if spec.Scale == features.ScaleEntropy {
			next = math.Log2(math.Exp2(c) + 1) // one more port in use, as much as the others
		}
		bh.Scales[j] = (scaled(j, next) - scaled(j, c)) / bh.Floors[j] / q
	}
}
