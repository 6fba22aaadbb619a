// Package evt fits the upper tail of a score distribution with extreme-value
// theory, so that a threshold can be placed at a tail probability far
// smaller than one over the number of training scores, and so that a score
// beyond everything seen in training still gets a probability that keeps
// falling as the score grows.
//
// # Peaks over threshold
//
// By the Pickands–Balkema–de Haan theorem (Pickands 1975; Balkema & de Haan
// 1974), for a wide class of distributions the excesses Y = X − u over a high
// threshold u follow, asymptotically, a generalised Pareto distribution
//
//	P(Y > y | X > u) = (1 + ξ y/σ)^(−1/ξ)     (ξ ≠ 0)
//	                 = exp(−y/σ)              (ξ = 0)
//
// with shape ξ and scale σ > 0. With ζ = P(X > u), estimated by the share of
// training scores above u, the tail probability of a score x ≥ u is
//
//	S(x) = ζ · (1 + ξ (x − u)/σ)^(−1/ξ),
//
// and the score exceeded with probability p < ζ is
//
//	x_p = u + σ/ξ · ((p/ζ)^(−ξ) − 1)           (→ u + σ ln(ζ/p) as ξ → 0).
//
// This is the calibration of SPOT (Siffer, Fouque, Termier & Largouët,
// "Anomaly Detection in Streams with Extreme Value Theory", KDD 2017), who
// take u at the 98th percentile of the training scores, as Fit does.
//
// # Estimating ξ and σ
//
// SPOT maximises the likelihood with Grimshaw's procedure. With the few dozen
// excesses a per-profile model has, the probability-weighted-moment
// estimators of Hosking & Wallis ("Parameter and quantile estimation for the
// generalized Pareto distribution", Technometrics 29, 1987) are less variable
// and have a closed form: with the excesses sorted ascending y₍₁₎ ≤ … ≤ y₍ₙ₎,
//
//	a₀ = mean(y),   a₁ = (1/n) Σ (1 − p_i) y₍ᵢ₎,   p_i = (i − 0.35)/n,
//	ξ = 2 − a₀/(a₀ − 2a₁),   σ = 2 a₀ a₁/(a₀ − 2a₁).
//
// A fitted ξ < 0 means a tail with a finite end point, beyond which the
// fitted probability would be zero; a detector must keep ranking scores past
// it, so Fit replaces such a fit with the exponential tail (ξ = 0, σ the mean
// excess, its maximum-likelihood estimate). That makes the tail heavier than
// fitted, which only raises the thresholds placed on it. ξ is capped at
// MaxShape, where the estimators' variance grows without bound.
//
// # Predictive tails
//
// A point estimate of ξ from a few dozen excesses is uncertain by ±0.15 or
// more, and far past the data that uncertainty dominates: a sample that
// happened to come out light (ξ̂ ≈ 0, a small σ̂) puts a score a little past
// its largest excess at a probability orders of magnitude smaller than a
// tail with ξ = 0.2, as compatible with the same excesses, does. Fit therefore
// keeps, besides (ξ̂, σ̂), the posterior of ξ over a grid of shapes in
// [0, MaxShape] — a flat prior, each shape weighted by its profile
// likelihood, with σ at its conditional maximum (the usual approximation to
// integrating σ out; on profile likelihood, Coles 2001, §2.6.6) —
// and Survival, Level and Quantile above U are the posterior predictive
//
//	S(x) = ζ · Σ_k w_k (1 + ξ_k (x − u)/σ_k)^(−1/ξ_k),
//
// the distribution of a new score averaged over what the excesses leave
// uncertain (Coles 2001, §9.1.2; Coles & Tawn, "A Bayesian analysis of
// extreme rainfall data", Applied Statistics 45, 1996, on predictive return
// levels). With many excesses the posterior concentrates on ξ̂ and the
// predictive is the plug-in tail; with few it is heavier exactly where the
// data say least. FitExponential and FitClusters tails, whose shape is 0 by
// construction, keep the plug-in and have PredictiveSurvival for σ.
//
// # Clusters
//
// A statistic whose exceedances come in runs (a device above its normal
// for an hour) is fitted by FitClusters on the maxima of its clusters, the
// rate of clusters standing for ζ. The threshold is then chosen by the
// clusters it leaves, not by the share of scores: at least MinClusters, the
// share above u growing until they are there, since the top 2 % of a
// clustered sample may be a handful of episodes of one sequence.
package evt

import (
	"errors"
	"fmt"
	"math"
	"slices"
)

// MaxShape caps the fitted shape ξ: Hosking and Wallis's estimators have
// finite variance only for ξ < 0.5.
const MaxShape = 0.5

// DefaultTailShare is the share of training scores above the POT threshold
// u (SPOT's 98th percentile).
const DefaultTailShare = 0.02

// quantiles is how many evenly spaced quantiles below u a Tail keeps, for
// the body of the distribution.
const quantiles = 64

// Tail is a fitted score distribution: empirical below the threshold U,
// generalised Pareto above it. Its zero value is unusable; build it with Fit.
type Tail struct {
	U     float64 `json:"u"`     // POT threshold
	Zeta  float64 `json:"zeta"`  // P(X > U) in the training scores
	Shape float64 `json:"shape"` // ξ ≥ 0
	Scale float64 `json:"scale"` // σ > 0
	N     int     `json:"n"`     // training scores
	// Posterior is the posterior of the shape over a grid (see "Predictive
	// tails"); when it is set, the tail above U is the posterior predictive
	// mixture, and Shape and Scale are kept as the point estimates. Empty
	// in tails fitted with the shape fixed, and in artifacts written before
	// it existed, whose tail above U stays the plug-in one.
	Posterior []Component `json:"posterior,omitempty"`
	// Body holds quantiles of the training scores at probabilities
	// 0, 1/(len−1), …, 1 − Zeta, for survival below U.
	Body []float64 `json:"body"`
}

// Fit estimates the tail of scores, taking the top tailShare of them
// (0: DefaultTailShare) as excesses, and keeps the posterior of its shape
// (see "Predictive tails"). It needs at least 20 scores, so that the tail
// holds a few of them.
func Fit(scores []float64, tailShare float64) (Tail, error) {
	return fit(scores, tailShare, fitGPD, true)
}

// FitExponential is Fit with the shape fixed at ξ = 0: the excesses are
// taken to be exponential, with σ their mean (its maximum-likelihood
// estimate). It is the right family for a score that is itself a tail
// level −log₁₀ S of a calibrated statistic: such a level is exactly
// exponential above any threshold (P(L > u + y | L > u) = 10^(−y)), and so
// are the order statistics and minima of such levels that incident rules
// threshold (they lie in the Gumbel domain of attraction). A positive ξ
// fitted there is estimation noise — the PWM estimator's standard error on
// a few hundred excesses is about 0.08 — and, extrapolated twenty-fold
// past the training data, it costs a full level or more of threshold.
func FitExponential(scores []float64, tailShare float64) (Tail, error) {
	return fit(scores, tailShare, func(y []float64) (float64, float64) {
		if len(y) == 0 {
			return 0, 0
		}
		m := 0.0
		for _, v := range y {
			m += v
		}
		return 0, m / float64(len(y))
	}, false)
}

// fit takes the top tailShare of scores as excesses over u, fits their
// tail with fitTail and, when posterior is set, keeps the posterior of the
// shape (see "Predictive tails").
func fit(scores []float64, tailShare float64, fitTail func([]float64) (shape, scale float64), posterior bool) (Tail, error) {
	if tailShare == 0 {
		tailShare = DefaultTailShare
	}
	if !(tailShare > 0 && tailShare < 0.5) {
		return Tail{}, fmt.Errorf("evt: tail share must be in (0, 0.5), got %v", tailShare)
	}
	n := len(scores)
	if n < 20 {
		return Tail{}, fmt.Errorf("evt: %d scores, need at least 20", n)
	}
	sorted := slices.Clone(scores)
	for _, s := range sorted {
		if math.IsNaN(s) || math.IsInf(s, 0) {
			return Tail{}, errors.New("evt: scores must be finite")
		}
	}
	slices.Sort(sorted)
	k := max(int(math.Ceil(tailShare*float64(n))), 5) // excesses
	k = min(k, n-1)
	u := sorted[n-k-1]
	var y []float64
	for _, s := range sorted[n-k:] {
		if s > u {
			y = append(y, s-u)
		}
	}
	t := Tail{U: u, N: n, Zeta: float64(len(y)) / float64(n)}
	t.Shape, t.Scale = fitTail(y)
	if posterior {
		t.Posterior = shapePosterior(y)
	}
	if t.Scale <= 0 { // no excess at all (ties): a tiny scale keeps S decreasing
		t.Scale = 1e-9 * max(1, math.Abs(u))
		t.Zeta = max(t.Zeta, 1/float64(n))
	}
	t.Body = make([]float64, quantiles)
	for i := range quantiles {
		q := (1 - t.Zeta) * float64(i) / float64(quantiles-1)
		t.Body[i] = sorted[min(int(q*float64(n-1)+0.5), n-1)]
	}
	return t, nil
}

// fitGPD returns Hosking–Wallis PWM estimates of (ξ, σ) for excesses y,
// with ξ clamped to [0, MaxShape] (see the package doc).
func fitGPD(y []float64) (shape, scale float64) {
	n := len(y)
	if n == 0 {
		return 0, 0
	}
	slices.Sort(y)
	var a0, a1 float64
	for i, v := range y {
		p := (float64(i+1) - 0.35) / float64(n)
		a0 += v
		a1 += (1 - p) * v
	}
	a0 /= float64(n)
	a1 /= float64(n)
	d := a0 - 2*a1
	if d <= 0 || n < 3 {
		return 0, a0
	}
	shape = 2 - a0/d
	scale = 2 * a0 * a1 / d
	switch {
	case shape < 0 || scale <= 0:
		return 0, a0 // exponential tail: σ̂ = mean excess (MLE)
	case shape > MaxShape:
		// Keep the fitted median excess: for a GPD it is σ(2^ξ − 1)/ξ.
		med := scale * (math.Pow(2, shape) - 1) / shape
		shape = MaxShape
		scale = med * shape / (math.Pow(2, shape) - 1)
	}
	return shape, scale
}

// Survival returns P(X ≥ x): the fitted tail above U, the training
// quantiles below it. It is non-increasing in x, and strictly decreasing
// above U, however far past the training scores x lies.
func (t *Tail) Survival(x float64) float64 {
	if x > t.U && len(t.Posterior) > 0 {
		return math.Pow(10, -t.Level(x))
	}
	if x > t.U {
		z := (x - t.U) / t.Scale
		if t.Shape == 0 {
			return t.Zeta * math.Exp(-z)
		}
		return t.Zeta * math.Pow(1+t.Shape*z, -1/t.Shape)
	}
	b := t.Body
	if len(b) == 0 || x <= b[0] {
		return 1
	}
	// b[i] is the quantile at probability (1−ζ)·i/(len−1).
	i, _ := slices.BinarySearch(b, x)
	if i >= len(b) {
		return t.Zeta
	}
	lo, hi := b[i-1], b[min(i, len(b)-1)]
	frac := 1.0
	if hi > lo {
		frac = (x - lo) / (hi - lo)
	}
	cdf := (1 - t.Zeta) * (float64(i-1) + frac) / float64(len(b)-1)
	return 1 - min(cdf, 1-t.Zeta)
}

// Level returns −log₁₀ Survival(x), computed in log space so that it keeps
// growing where Survival itself underflows to zero: the detector's anomaly
// level, unbounded above.
func (t *Tail) Level(x float64) float64 {
	if x > t.U && len(t.Posterior) > 0 {
		return -(math.Log(t.Zeta) + logMixture(t.Posterior, x-t.U)) / math.Ln10
	}
	if x > t.U {
		z := (x - t.U) / t.Scale
		lz := math.Log(t.Zeta)
		if t.Shape == 0 {
			return -(lz - z) / math.Ln10
		}
		return -(lz - math.Log1p(t.Shape*z)/t.Shape) / math.Ln10
	}
	return -math.Log10(t.Survival(x))
}

// Quantile returns the score exceeded with probability p (0 < p < Zeta):
// the threshold that a false-alert rate of p per scored row asks for.
func (t *Tail) Quantile(p float64) float64 {
	if p >= t.Zeta {
		return t.U
	}
	if len(t.Posterior) > 0 {
		return t.U + mixtureQuantile(t.Posterior, p/t.Zeta)
	}
	if t.Shape == 0 {
		return t.U + t.Scale*math.Log(t.Zeta/p)
	}
	return t.U + t.Scale/t.Shape*(math.Pow(p/t.Zeta, -t.Shape)-1)
}

// PredictiveSurvival is Survival above U with the uncertainty of the
// fitted exponential scale counted: with n excesses (cluster maxima for a
// FitClusters tail) of mean σ̂ and Jeffreys' prior π(λ) ∝ 1/λ on the rate
// λ = 1/σ, the rate's posterior is Gamma(n, nσ̂), and averaging e^(−λy)
// over it gives the posterior predictive
//
//	P(Y > y) = (1 + y/(nσ̂))^(−n),
//
// a Lomax tail (Coles, An Introduction to Statistical Modeling of Extreme
// Values, 2001, §9.1.2, on predictive inference for extremes). At a
// threshold placed on the plug-in fit it says how often that threshold is
// to be expected to be exceeded once the fit's own error is averaged over:
// with 200 clusters about 1.1 times the planned rate at a threshold a
// thousand times further out than the clusters' rate, with 10 about six
// times. It is meaningful for exponential tails (Shape 0); for others, and
// below U, it is Survival.
func (t *Tail) PredictiveSurvival(x float64) float64 {
	n := math.Round(t.Zeta * float64(t.N))
	if x <= t.U || t.Shape != 0 || n < 1 {
		return t.Survival(x)
	}
	return t.Zeta * math.Pow(1+(x-t.U)/(n*t.Scale), -n)
}

// FitClusters fits the tail of a statistic whose exceedances come in
// clusters, as the exponential tail of its cluster maxima (runs
// declustering; Coles, An Introduction to Statistical Modeling of Extreme
// Values, 2001, §5.3.2). scores holds several sequences one after another,
// the i-th from starts[i] to starts[i+1] (the last to the end); within a
// sequence, exceedances of the threshold u (the top tailShare of all
// scores, or a larger share when that holds fewer than MinClusters
// clusters) less than run positions apart belong to one cluster.
//
// The tail's Zeta is then the rate of clusters per score, not of
// exceedances, and Survival(x) above U is the rate at which clusters
// reaching x begin: when every cluster is one incident, the rate of
// incidents. Fitting exceedances one by one instead counts a device that
// stays above u for an hour sixty times, and fits its one long episode as
// though it were the profile's tail.
//
// Like FitExponential the excesses are taken to be exponential: the
// statistic is a level (a −log₁₀ tail probability), and so is a cluster's
// maximum of levels, whose tail lies in the same Gumbel domain.
func FitClusters(scores []float64, starts []int, run int, tailShare float64) (Tail, error) {
	if tailShare == 0 {
		tailShare = DefaultTailShare
	}
	if run < 1 {
		return Tail{}, fmt.Errorf("evt: cluster run must be at least 1, got %d", run)
	}
	var best Tail
	var bestMaxima []float64
	for share := tailShare; ; share *= clusterShareStep {
		t, err := FitExponential(scores, share)
		if err != nil {
			return Tail{}, err
		}
		maxima, err := clusterMaxima(scores, starts, run, t.U)
		if err != nil {
			return Tail{}, err
		}
		if bestMaxima == nil || len(maxima) > len(bestMaxima) {
			best, bestMaxima = t, maxima
		}
		if len(maxima) >= MinClusters || share*clusterShareStep >= maxClusterShare {
			break
		}
	}
	if len(bestMaxima) == 0 {
		return best, nil // no excess at all: FitExponential's degenerate tail
	}
	mean := 0.0
	for _, m := range bestMaxima {
		mean += m - best.U
	}
	best.Scale = mean / float64(len(bestMaxima))
	best.Zeta = float64(len(bestMaxima)) / float64(len(scores))
	return best, nil
}

// MinClusters is how many clusters FitClusters wants above its threshold.
// The scale of an exponential tail is estimated by the clusters' mean
// excess, whose relative standard error is 1/√k on k clusters; a rule's
// level is that scale times ln(ζ/p), about 5–9 when the budget's share p
// lies a few hundred to a few thousand times past the clusters' rate ζ, so
// on 3 clusters the level is uncertain by several units and on 30 by about
// one. When the top tailShare of scores holds fewer — a sparse profile's
// sustained statistic, whose top 2 % were three long runs of one noisy
// device — the threshold is lowered, the share growing by
// clusterShareStep up to maxClusterShare. The exponential form is what the
// model assumes above any threshold (FitExponential); what a lower one
// changes is whose episodes set the scale: many sequences' rather than one
// sequence's. Two departures from that form pull opposite ways there: a
// sum or order statistic of levels has a mean excess that falls towards
// its far-tail scale as the threshold rises (a Gamma's does), so a lower
// threshold gives it a higher level; a profile whose devices differ in
// spread is a mixture, whose mean excess rises with the threshold, so a
// lower one gives it a lower level. Threshold choice under clustering is
// that trade of bias against the number of clusters (Coles 2001, §5.3.2).
const MinClusters = 30

// clusterShareStep and maxClusterShare bound FitClusters' search for a
// threshold with MinClusters clusters above it.
const (
	clusterShareStep = 1.5
	maxClusterShare  = 0.25
)

// clusterMaxima returns the maxima of the clusters of scores above u: within
// each sequence (starts as in FitClusters), exceedances fewer than run
// positions apart are one cluster.
func clusterMaxima(scores []float64, starts []int, run int, u float64) ([]float64, error) {
	var maxima []float64
	for i, s := range starts {
		end := len(scores)
		if i+1 < len(starts) {
			end = starts[i+1]
		}
		if s < 0 || s > end || end > len(scores) {
			return nil, fmt.Errorf("evt: sequence %d spans [%d, %d) of %d scores", i, s, end, len(scores))
		}
		top, last := math.Inf(-1), -run
		for k := s; k < end; k++ {
			if scores[k] <= u {
				continue
			}
			if k-last >= run && !math.IsInf(top, -1) {
				maxima = append(maxima, top)
				top = math.Inf(-1)
			}
			top, last = max(top, scores[k]), k
		}
		if !math.IsInf(top, -1) {
			maxima = append(maxima, top)
		}
	}
	return maxima, nil
}

// Component is one shape of a Tail's posterior: its weight, the shape ξ
// and the scale σ that maximises the likelihood at that shape.
type Component struct {
	Weight float64 `json:"w"`
	Shape  float64 `json:"shape"`
	Scale  float64 `json:"scale"`
}

// posteriorShapes is how many shapes, evenly spaced over [0, MaxShape],
// the posterior is computed on; posteriorFloor is the weight below which
// a shape is dropped (and the rest renormalised), so that where the
// excesses leave little doubt a window's level takes hardly more work than
// the plug-in tail's: one term per shape kept.
const (
	posteriorShapes = 11
	posteriorFloor  = 1e-6
)

// shapePosterior returns the posterior of the shape for excesses y (see
// "Predictive tails"), nil when there are too few to say anything.
func shapePosterior(y []float64) []Component {
	if len(y) < 3 {
		return nil
	}
	mean := 0.0
	for _, v := range y {
		mean += v
	}
	mean /= float64(len(y))
	if !(mean > 0) {
		return nil
	}
	comps := make([]Component, posteriorShapes)
	ll := make([]float64, posteriorShapes)
	for k := range comps {
		xi := MaxShape * float64(k) / float64(posteriorShapes-1)
		sigma := mean // the exponential's maximum-likelihood scale
		if xi > 0 {
			sigma = gpdScaleMLE(y, xi, mean)
		}
		comps[k] = Component{Shape: xi, Scale: sigma}
		ll[k] = gpdLogLikelihood(y, xi, sigma)
	}
	top := slices.Max(ll)
	sum := 0.0
	for k := range comps {
		comps[k].Weight = math.Exp(ll[k] - top)
		sum += comps[k].Weight
	}
	out := comps[:0]
	kept := 0.0
	for _, c := range comps {
		if c.Weight/sum >= posteriorFloor {
			out = append(out, c)
			kept += c.Weight
		}
	}
	for k := range out {
		out[k].Weight /= kept
	}
	return out
}

// gpdLogLikelihood is the log-likelihood of excesses y under GPD(ξ, σ).
func gpdLogLikelihood(y []float64, xi, sigma float64) float64 {
	ll := -float64(len(y)) * math.Log(sigma)
	for _, v := range y {
		if xi == 0 {
			ll -= v / sigma
		} else {
			ll -= (1 + 1/xi) * math.Log1p(xi*v/sigma)
		}
	}
	return ll
}

// gpdScaleMLE returns the σ that maximises the likelihood at a fixed
// ξ > 0. With t = ξ/σ the likelihood equation is
//
//	g(t) = Σ t·y_i/(1 + t·y_i) = n·ξ/(1 + ξ),
//
// and g rises from 0 to n and is concave in t, so Newton's method from a
// point below the root climbs to it monotonically (Grimshaw, "Computing
// maximum likelihood estimates for the generalized Pareto distribution",
// Technometrics 35, 1993, reduces the two-parameter problem the same way).
// It starts from the exponential's t = ξ/mean, below the root because the
// GPD's mean is σ/(1 − ξ) > σ.
func gpdScaleMLE(y []float64, xi, mean float64) float64 {
	target := float64(len(y)) * xi / (1 + xi)
	t := xi / mean
	for range 50 {
		var g, dg float64
		for _, v := range y {
			d := 1 + t*v
			g += t * v / d
			dg += v / (d * d)
		}
		step := (target - g) / dg
		if t+step <= 0 { // only from above the root: halve towards it instead
			step = -t / 2
		}
		t += step
		if math.Abs(step) <= 1e-12*t {
			break
		}
	}
	return xi / t
}

// logMixture returns ln Σ_k w_k S_k(y) for an excess y ≥ 0, in log space so
// that it keeps falling where the survival itself underflows: a running
// log-sum-exp, one pass and no buffer, whatever the number of shapes an
// artifact holds.
func logMixture(comps []Component, y float64) float64 {
	top, sum := math.Inf(-1), 0.0
	for _, c := range comps {
		if !(c.Weight > 0) {
			continue
		}
		l := math.Log(c.Weight)
		if c.Shape == 0 {
			l -= y / c.Scale
		} else {
			l -= math.Log1p(c.Shape*y/c.Scale) / c.Shape
		}
		if l > top {
			sum = sum*math.Exp(top-l) + 1
			top = l
		} else {
			sum += math.Exp(l - top)
		}
	}
	return top + math.Log(sum)
}

// mixtureQuantile returns the excess y with Σ_k w_k S_k(y) = q (0 < q < 1):
// the mixture's survival lies between its components' smallest and largest,
// so the excess lies between their quantiles at q, and bisection on the
// log survival finds it.
func mixtureQuantile(comps []Component, q float64) float64 {
	lo, hi := math.Inf(1), 0.0
	for _, c := range comps {
		var y float64
		if c.Shape == 0 {
			y = -c.Scale * math.Log(q)
		} else {
			y = c.Scale / c.Shape * (math.Pow(q, -c.Shape) - 1)
		}
		lo, hi = min(lo, y), max(hi, y)
	}
	target := math.Log(q)
	for range 100 {
		mid := (lo + hi) / 2
		if logMixture(comps, mid) > target {
			lo = mid
		} else {
			hi = mid
		}
	}
	return (lo + hi) / 2
}
