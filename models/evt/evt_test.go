package evt

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"testing"
)

// gpdSample draws n values u + Y with Y ~ GPD(ξ, σ) by inversion:
// Y = σ/ξ · (U^(−ξ) − 1), U uniform on (0, 1].
func gpdSample(rng *rand.Rand, n int, shape, scale float64) []float64 {
	out := make([]float64, n)
	for i := range out {
		u := 1 - rng.Float64()
		if shape == 0 {
			out[i] = -scale * math.Log(u)
		} else {
			out[i] = scale / shape * (math.Pow(u, -shape) - 1)
		}
	}
	return out
}

// A GPD is its own excess distribution above any threshold (with scale
// σ + ξu), so fitting the top 2% of a large GPD sample must recover ξ, and
// the fitted quantiles must match the known ones far beyond the sample.
func TestFitRecoversKnownGPD(t *testing.T) {
	for _, tc := range []struct{ shape, scale float64 }{{0, 1}, {0.25, 2}, {0.1, 0.5}} {
		rng := rand.New(rand.NewPCG(1, uint64(tc.shape*100)))
		x := gpdSample(rng, 200_000, tc.shape, tc.scale)
		tail, err := Fit(x, 0)
		if err != nil {
			t.Fatal(err)
		}
		if math.Abs(tail.Shape-tc.shape) > 0.08 {
			t.Errorf("ξ=%v: fitted %v", tc.shape, tail.Shape)
		}
		// Known quantile at p = 1e-6: σ/ξ (p^(−ξ) − 1), or −σ ln p.
		p := 1e-6
		want := -tc.scale * math.Log(p)
		if tc.shape > 0 {
			want = tc.scale / tc.shape * (math.Pow(p, -tc.shape) - 1)
		}
		got := tail.Quantile(p)
		if math.Abs(got-want)/want > 0.2 {
			t.Errorf("ξ=%v: quantile(1e-6) = %v, want %v", tc.shape, got, want)
		}
		if s := tail.Survival(got); math.Abs(s-p)/p > 1e-9 {
			t.Errorf("Survival(Quantile(p)) = %v, want %v", s, p)
		}
	}
}

// Exponential tail by hand: excess mean 1 above u → S(u + y) = ζ e^(−y).
func TestExponentialTailKnownValues(t *testing.T) {
	tail := Tail{U: 10, Zeta: 0.02, Shape: 0, Scale: 1}
	if got, want := tail.Survival(10+math.Log(2)), 0.01; math.Abs(got-want) > 1e-15 {
		t.Errorf("S = %v, want %v", got, want)
	}
	if got, want := tail.Quantile(0.02*math.Exp(-3)), 13.0; math.Abs(got-want) > 1e-12 {
		t.Errorf("x_p = %v, want %v", got, want)
	}
}

// Bounded scores (uniform: ξ = −1) must still give a tail that keeps
// falling past the largest training score.
func TestBoundedTailStillExtrapolates(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 3))
	x := make([]float64, 5000)
	for i := range x {
		x[i] = rng.Float64()
	}
	tail, err := Fit(x, 0)
	if err != nil {
		t.Fatal(err)
	}
	if tail.Shape != 0 {
		t.Fatalf("shape %v, want the exponential fallback", tail.Shape)
	}
	prev := tail.Level(0.99)
	for _, v := range []float64{1.0, 1.5, 3, 10, 1e6} {
		l := tail.Level(v)
		if !(l > prev) || math.IsInf(l, 0) {
			t.Fatalf("level not strictly increasing past the sample: L(%v)=%v after %v", v, l, prev)
		}
		if v < 3 && math.Abs(math.Pow(10, -l)-tail.Survival(v)) > 1e-12 {
			t.Fatalf("level %v disagrees with survival %v", l, tail.Survival(v))
		}
		prev = l
	}
}

func TestBodySurvivalMatchesEmpirical(t *testing.T) {
	x := make([]float64, 1000)
	for i := range x {
		x[i] = float64(i)
	}
	tail, err := Fit(x, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []float64{0, 100, 500, 900} {
		want := 1 - v/999
		if got := tail.Survival(v); math.Abs(got-want) > 0.02 {
			t.Errorf("S(%v) = %v, want ≈ %v", v, got, want)
		}
	}
	if _, err := Fit(x[:10], 0); err == nil {
		t.Error("fit on 10 scores accepted")
	}
}

// TestFitClustersCountsEpisodes: one sequence that stays high for a long
// run is one cluster, not a share of the tail, and the rate of clusters
// is what the tail's Zeta then gives.
func TestFitClustersCountsEpisodes(t *testing.T) {
	// 10 sequences of 1,000 scores. Each of the first 9 has two isolated
	// excesses (of 1 and 2 over a body of zeros); the last holds 300
	// consecutive scores of 0.5.
	var scores []float64
	var starts []int
	for s := range 10 {
		starts = append(starts, len(scores))
		seq := make([]float64, 1000)
		if s < 9 {
			seq[100], seq[600] = 1, 2
		} else {
			for k := 200; k < 500; k++ {
				seq[k] = 0.5
			}
		}
		scores = append(scores, seq...)
	}
	tail, err := FitClusters(scores, starts, 5, 0.05)
	if err != nil {
		t.Fatal(err)
	}
	// 18 isolated clusters plus one long one: 19 clusters in 10,000.
	if tail.U != 0 || math.Abs(tail.Zeta-19.0/10000) > 1e-12 {
		t.Fatalf("u %v zeta %v, want 0 and 19/10000", tail.U, tail.Zeta)
	}
	// Mean cluster maximum over u: (9·1 + 9·2 + 0.5)/19.
	if want := (9.0 + 18 + 0.5) / 19; math.Abs(tail.Scale-want) > 1e-12 {
		t.Fatalf("scale %v, want %v", tail.Scale, want)
	}
	// Fitted one exceedance at a time, the long run dominates the tail.
	plain, err := FitExponential(scores, 0.05)
	if err != nil {
		t.Fatal(err)
	}
	if plain.Zeta <= tail.Zeta*10 {
		t.Fatalf("exceedance rate %v, cluster rate %v", plain.Zeta, tail.Zeta)
	}
	// Two excesses run apart are two clusters; closer, one.
	two, _ := FitClusters([]float64{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 3}, []int{0}, 3, 0.1)
	one, _ := FitClusters([]float64{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3, 0, 3, 0}, []int{0}, 3, 0.1)
	if two.Zeta != 2.0/24 || one.Zeta != 1.0/24 {
		t.Fatalf("clusters: %v and %v of 24, want 2 and 1", two.Zeta*24, one.Zeta*24)
	}
	if _, err := FitClusters(scores, []int{0, 20000}, 5, 0); err == nil {
		t.Fatal("a sequence past the scores was accepted")
	}
}

// TestFitClustersLowersItsThresholdForEnoughClusters: when the top share
// of the scores is a few long runs of one or two sequences, the clusters
// above the usual threshold are too few to estimate a scale, and the
// threshold is lowered until MinClusters clusters of many sequences hold
// it; their excesses then give the scale the sequences share.
func TestFitClustersLowersItsThresholdForEnoughClusters(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 11))
	const scale = 0.3
	// 60 sequences of 100 independent exponential scores of mean 0.3; two
	// of them also hold a run of 70 scores lifted by 3 (a device whose
	// baseline lagged for an hour): 140 scores, more than the top 2 %
	// (120) of the 6,000.
	var scores []float64
	var starts []int
	for s := range 60 {
		starts = append(starts, len(scores))
		seq := gpdSample(rng, 100, 0, scale)
		if s < 2 {
			for k := 20; k < 90; k++ {
				seq[k] += 3
			}
		}
		scores = append(scores, seq...)
	}
	plain, err := FitExponential(scores, 0)
	if err != nil {
		t.Fatal(err)
	}
	few, err := clusterMaxima(scores, starts, 5, plain.U)
	if err != nil {
		t.Fatal(err)
	}
	if len(few) > 3 {
		t.Fatalf("%d clusters above the top 2 %%, want the two runs (the test's premise)", len(few))
	}
	tail, err := FitClusters(scores, starts, 5, 0)
	if err != nil {
		t.Fatal(err)
	}
	clusters := int(math.Round(tail.Zeta * float64(len(scores))))
	if clusters < MinClusters || tail.U >= plain.U {
		t.Fatalf("%d clusters above u = %.3f (the top 2 %% start at %.3f), want at least %d below it", clusters, tail.U, plain.U, MinClusters)
	}
	// The mean excess of the clusters, two of which are the runs (each
	// about 3 over u): near the sequences' scale, where the two runs alone
	// give three times it.
	t.Logf("%d clusters above u = %.3f, scale %.3f", clusters, tail.U, tail.Scale)
	if math.Abs(tail.Scale-scale) > 0.1 {
		t.Fatalf("scale %.3f, want %.1f within 0.1", tail.Scale, scale)
	}
	runsAlone := 0.0
	for _, m := range few {
		runsAlone += (m - plain.U) / float64(len(few))
	}
	if runsAlone < 2.5*scale {
		t.Fatalf("the runs alone give scale %.3f, not far from %.1f: the test shows nothing", runsAlone, scale)
	}
}

// TestPredictiveSurvivalIsTheExpectedRateAtAPlugInThreshold checks
// PredictiveSurvival against its closed form, and its meaning: for
// exponential excesses, the probability that a threshold placed on a
// plug-in fit of n of them is exceeded, averaged over the fits that n
// excesses give (simulated here), is (1 + ln(ζ/p)/n)^(−n) times ζ — the
// Gamma moment-generating function of nσ̂ — which is what the predictive
// gives at that threshold.
func TestPredictiveSurvivalIsTheExpectedRateAtAPlugInThreshold(t *testing.T) {
	tail := Tail{U: 1, Zeta: 0.01, N: 1000, Scale: 0.5} // 10 excesses
	x := tail.Quantile(1e-4)                            // 1 + 0.5 ln 100
	want := 0.01 * math.Pow(1+math.Log(100)/10, -10)
	if got := tail.PredictiveSurvival(x); math.Abs(got-want) > 1e-15 || math.Abs(got/1e-4-2.264) > 0.001 {
		t.Fatalf("predictive at the plug-in 1e-4 quantile: %v, want %v (2.264 × 1e-4)", got, want)
	}
	if got := tail.PredictiveSurvival(0.5); got != tail.Survival(0.5) {
		t.Fatalf("below U: %v, want Survival's %v", got, tail.Survival(0.5))
	}
	many := Tail{U: 1, Zeta: 0.01, N: 100_000, Scale: 0.5} // 1,000 excesses
	if r := many.PredictiveSurvival(many.Quantile(1e-4)) / 1e-4; r < 1 || r > 1.02 {
		t.Fatalf("with 1,000 excesses the predictive is the plug-in fit: ratio %v", r)
	}
	// Simulation: n = 10 unit exponential excesses per fit, the threshold
	// at conditional probability q = 1e-3 on each fit; the true
	// exceedance probability e^(−x) averaged over fits.
	rng := rand.New(rand.NewPCG(7, 8))
	const n, q, reps = 10, 1e-3, 200_000
	sum := 0.0
	for range reps {
		m := 0.0
		for range n {
			m += rng.ExpFloat64()
		}
		sum += math.Exp(-m / n * math.Log(1/q))
	}
	sim := sum / reps
	pred := Tail{U: 0, Zeta: 1e-2, N: n * 100, Scale: 1}
	got := pred.PredictiveSurvival(math.Log(1/q)) / 1e-2
	if math.Abs(sim/got-1) > 0.03 || math.Abs(got/q-5.24) > 0.01 {
		t.Fatalf("expected exceedance at the plug-in threshold: simulated %v, predictive %v (%.2f × q)", sim, got, got/q)
	}
}

// A two-shape posterior by hand: S(u + y) = ζ (½ e^(−y) + ½ (1 + y/2)^(−2)).
func TestPredictiveMixtureKnownValues(t *testing.T) {
	tail := Tail{U: 1, Zeta: 0.02, Shape: 0, Scale: 1, Posterior: []Component{
		{Weight: 0.5, Shape: 0, Scale: 1}, {Weight: 0.5, Shape: 0.5, Scale: 1},
	}}
	for _, y := range []float64{0.5, 2, 10, 200} {
		want := 0.02 * (0.5*math.Exp(-y) + 0.5*math.Pow(1+y/2, -2))
		if got := tail.Survival(1 + y); math.Abs(got-want)/want > 1e-12 {
			t.Errorf("S(u+%v) = %v, want %v", y, got, want)
		}
		if got := tail.Level(1 + y); math.Abs(got+math.Log10(want)) > 1e-12 {
			t.Errorf("L(u+%v) = %v, want %v", y, got, -math.Log10(want))
		}
		if got := tail.Quantile(want); math.Abs(got-(1+y)) > 1e-9*(1+y) {
			t.Errorf("Quantile(%v) = %v, want %v", want, got, 1+y)
		}
	}
}

// With few excesses the predictive tail is heavier than the plug-in far
// past the data (a light sample's ξ̂ = 0 is not believed past what it
// shows); with many it is the plug-in tail.
func TestPredictiveTailWidensOnlyWhereTheDataAreFew(t *testing.T) {
	for _, tc := range []struct {
		n       int
		minGain float64 // predictive quantile at 1e-6 over the plug-in's, at least
		maxGain float64 // … and at most
	}{{2_000, 1.5, 5}, {500_000, 1, 1.05}} {
		rng := rand.New(rand.NewPCG(7, uint64(tc.n)))
		tail, err := Fit(gpdSample(rng, tc.n, 0, 1), 0)
		if err != nil {
			t.Fatal(err)
		}
		if len(tail.Posterior) == 0 {
			t.Fatal("no posterior")
		}
		plugIn := tail
		plugIn.Posterior = nil
		p := 1e-6
		gain := (tail.Quantile(p) - tail.U) / (plugIn.Quantile(p) - plugIn.U)
		if gain < tc.minGain || gain > tc.maxGain {
			t.Errorf("n=%d: predictive excess at %v is %.3f× the plug-in's, want [%v, %v]", tc.n, p, gain, tc.minGain, tc.maxGain)
		}
		if s := tail.Survival(tail.Quantile(p)); math.Abs(s-p)/p > 1e-9 {
			t.Errorf("n=%d: Survival(Quantile(p)) = %v, want %v", tc.n, s, p)
		}
	}
}

// The posterior of ξ centres on the true shape of a large GPD sample.
func TestShapePosteriorCentresOnTheTruth(t *testing.T) {
	for _, shape := range []float64{0, 0.2, 0.4} {
		rng := rand.New(rand.NewPCG(11, uint64(shape*10)))
		y := gpdSample(rng, 20_000, shape, 1)
		mean := 0.0
		for _, c := range shapePosterior(y) {
			mean += c.Weight * c.Shape
		}
		if math.Abs(mean-shape) > 0.04 {
			t.Errorf("ξ = %v: posterior mean %v", shape, mean)
		}
	}
}

// A fitted tail written to a model artifact and read back judges alike; one
// written before the posterior existed (no "posterior" key) reads as the
// plug-in tail.
func TestTailRoundTripsThroughJSON(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 5))
	tail, err := Fit(gpdSample(rng, 3_000, 0.2, 1), 0)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := json.Marshal(tail)
	if err != nil {
		t.Fatal(err)
	}
	var back Tail
	if err := json.Unmarshal(raw, &back); err != nil {
		t.Fatal(err)
	}
	old := tail
	old.Posterior = nil
	rawOld, _ := json.Marshal(old)
	var backOld Tail
	if err := json.Unmarshal(rawOld, &backOld); err != nil {
		t.Fatal(err)
	}
	for _, x := range []float64{tail.U + 0.5, tail.U + 5, tail.U + 50} {
		if got, want := back.Level(x), tail.Level(x); got != want {
			t.Errorf("L(%v) after the round trip %v, want %v", x, got, want)
		}
		s := math.Exp(-(x - tail.U) / tail.Scale)
		if tail.Shape > 0 {
			s = math.Pow(1+tail.Shape*(x-tail.U)/tail.Scale, -1/tail.Shape)
		}
		plugIn := -math.Log10(tail.Zeta * s)
		if got := backOld.Level(x); math.Abs(got-plugIn) > 1e-9 {
			t.Errorf("L(%v) without a posterior %v, want the plug-in %v", x, got, plugIn)
		}
	}
}
