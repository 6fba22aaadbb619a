package models

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chainwatch/chainwatch/models/features"
	"github.com/chainwatch/chainwatch/models/iforest"
)

// synthDevice generates one device's windows: Poisson flows at its own
// rate (devices of a profile differ tenfold in scale), lognormal bytes, a
// few usual peers; flood multiplies the flow rate with small packets.
type synthDevice struct {
	rate  float64
	bytes float64
	feat  features.Device
	win   *features.Window
	rng   *rand.Rand
}

func newSynthDevice(rng *rand.Rand) *synthDevice {
	return &synthDevice{rate: 2 * math.Exp(rng.NormFloat64()), bytes: 1000 * math.Exp(rng.NormFloat64()), win: features.NewWindow(), rng: rng}
}

func poissonDraw(rng *rand.Rand, l float64) int {
	if l > 30 {
		return max(0, int(l+math.Sqrt(l)*rng.NormFloat64()+0.5))
	}
	k, p, e := 0, 1.0, math.Exp(-l)
	for {
		p *= rng.Float64()
		if p <= e {
			return k
		}
		k++
	}
}

func (d *synthDevice) window(index int64, flood float64) (features.Vector, bool) {
	d.win.Reset()
	n := poissonDraw(d.rng, d.rate)
	for range n {
		b := uint64(d.bytes * math.Exp(0.35*d.rng.NormFloat64()))
		d.win.Add(features.Flow{Dst: uint64(1 + d.rng.IntN(3)), DstPort: 443, BytesOut: b, BytesIn: b / 2, PacketsOut: 1 + b/1200, PacketsIn: 1 + b/2400})
	}
	for range int(flood * d.rate) {
		d.win.Add(features.Flow{Dst: 77, DstPort: 80, BytesOut: 120, PacketsOut: 2, Failed: true})
	}
	if d.win.Flows() == 0 {
		return features.Vector{}, false
	}
	v := d.feat.Observe(d.win, index, nil)
	d.win.EachPeer(d.feat.History.Add)
	return v, true
}

// synthFleet makes n devices and their first windows of normal traffic,
// for training.
func synthFleet(rng *rand.Rand, n int, windows int64) ([]*synthDevice, []DeviceSeries) {
	devs := make([]*synthDevice, n)
	series := make([]DeviceSeries, n)
	for i := range devs {
		devs[i] = newSynthDevice(rng)
		series[i].Device = string(rune('a' + i))
		for w := int64(1); w <= windows; w++ {
			if v, ok := devs[i].window(w, 0); ok {
				series[i].Vectors = append(series[i].Vectors, v)
			}
		}
	}
	return devs, series
}

func TestBehaviourModelHoldsItsBudgetAndGrowsWithIntensity(t *testing.T) {
	devs, series := synthFleet(rand.New(rand.NewPCG(11, 12)), 30, 200)
	m, bases, err := TrainBehaviour(series, BehaviourOptions{Forest: iforest.Config{Seed: 3}, Profile: "synthetic",
		Budget: Budget{FalseAlertsPer1000DeviceHours: 100}})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.CheckSchema(); err != nil {
		t.Fatal(err)
	}
	// Decode what was encoded: the artifact keeps the behaviour section.
	raw, _ := m.MarshalBinary()
	back, err := Unmarshal(raw)
	if err != nil || back.Behaviour == nil || back.Hash() != m.Hash() {
		t.Fatalf("round trip: %v", err)
	}
	// Live normal windows: the anomalous share stays near the budget's
	// per-window rate p_w (independent windows), within a factor of 2.
	pw := math.Pow(10, -m.Behaviour.AnomalousLevel)
	r := make([]float64, ResidualDims)
	score := func(b *DeviceBaseline, v *features.Vector) Judgement {
		m.Residuals(b, v, r)
		return m.Judge(r, m.Forest().Score(r))
	}
	anomalous, total := 0, 0
	for i, d := range devs {
		b := bases[series[i].Device]
		for w := int64(201); w <= 1200; w++ {
			v, ok := d.window(w, 0)
			if !ok {
				continue
			}
			total++
			j := score(&b, &v)
			if j.Anomalous {
				anomalous++
			}
			if !j.Anomalous {
				m.Learn(&b, &v)
			}
		}
	}
	share := float64(anomalous) / float64(total)
	// The anomalous level is placed on the opening statistic, so single
	// windows above it are rarer than 10^(−L_w) would say only if
	// anomalous windows cluster; these synthetic windows are independent.
	t.Logf("anomalous share %.4f of %d normal windows, 10^(−L_w) = %.4f", share, total, pw)
	if share > 2*pw {
		t.Errorf("anomalous share %.4f, more than 2× %.4f", share, pw)
	}

	// The same device flooded at rising intensity: the mean score rises
	// with it, and 5× is anomalous in nearly every window.
	prev := 0.0
	for _, x := range []float64{1, 2, 5, 20, 50} {
		sum, hits, n := 0.0, 0, 0
		for i, d := range devs {
			for k := range 20 {
				b := bases[series[i].Device]
				v, ok := d.window(int64(1300+k), x)
				if !ok {
					continue
				}
				j := score(&b, &v)
				sum += j.Score
				n++
				if j.Anomalous {
					hits++
				}
			}
		}
		mean := sum / float64(n)
		t.Logf("flood %gx: mean score %.3f, anomalous %d/%d", x, mean, hits, n)
		if mean <= prev {
			t.Errorf("mean score %.3f at %gx not above %.3f", mean, x, prev)
		}
		if x >= 5 && float64(hits) < 0.95*float64(n) {
			t.Errorf("flood %gx: only %d of %d windows anomalous", x, hits, n)
		}
		prev = mean
	}
}

func TestModelOfAnotherSchemaIsRefused(t *testing.T) {
	m := &Model{Metadata: Metadata{Profile: "camera"}, hash: "abcdef0123456789"}
	if err := m.CheckSchema(); err == nil || !strings.Contains(err.Error(), "schema") {
		t.Fatalf("CSV model accepted: %v", err)
	}
	m.Behaviour = &Behaviour{Schema: 1}
	if err := m.CheckSchema(); err == nil || !strings.Contains(err.Error(), "schema 1") {
		t.Fatalf("schema-1 model accepted: %v", err)
	}
}

func TestOpeningStatistic(t *testing.T) {
	// Two devices: levels 3 1 4 | 5 5. With k=2 of n=3, the rule holds at
	// τ when the window and one of the two before reach τ.
	o := openingStatistic([]float64{3, 1, 4, 5, 5}, []int{0, 3, 5}, 2, 3)
	want := []float64{0, 1, 3, 0, 5}
	for i := range want {
		if o[i] != want[i] {
			t.Fatalf("opening statistic %v, want %v", o, want)
		}
	}
}

func TestEvidenceStatistic(t *testing.T) {
	// Two devices: levels 3 1 4 | 5 0.5. Over n=3 the rule holds at τ
	// when the sum of the window's span reaches τ and the window itself
	// τ/3: min(Σ, 3·L_t).
	e := evidenceStatistic([]float64{3, 1, 4, 5, 0.5}, []int{0, 3, 5}, 3)
	want := []float64{3, 3, 8, 5, 1.5}
	for i := range want {
		if math.Abs(e[i]-want[i]) > 1e-12 {
			t.Fatalf("evidence statistic %v, want %v", e, want)
		}
	}
}

// trainSynthetic trains a behaviour model on synthFleet's devices (PCG
// seeds seed and seed+1) with a budget of 100, loose enough for the rules'
// levels to be fitted on a small fleet.
func trainSynthetic(t *testing.T, seed uint64, devices int, windows int64) *Model {
	t.Helper()
	_, series := synthFleet(rand.New(rand.NewPCG(seed, seed+1)), devices, windows)
	m, _, err := TrainBehaviour(series, BehaviourOptions{Forest: iforest.Config{Seed: 3}, Profile: "synthetic",
		Budget: Budget{FalseAlertsPer1000DeviceHours: 100}})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestEvidenceShareIsTheOwnLevel: a trained model places the evidence
// rule's level at or above the anomalous level, and a window's share of it
// is its own level L' (the damped count left out) over that level.
func TestEvidenceShareIsTheOwnLevel(t *testing.T) {
	m := trainSynthetic(t, 41, 20, 200)
	bh := m.Behaviour
	if bh.EvidenceLevel < bh.AnomalousLevel || bh.EvidenceLevel == 0 {
		t.Fatalf("evidence level %.2f, anomalous level %.2f: want one at least the other", bh.EvidenceLevel, bh.AnomalousLevel)
	}
	r := make([]float64, ResidualDims)
	r[features.NewDst] = 3 * bh.Scales[features.NewDst]
	j := m.Judge(r, 0.5)
	if math.Abs(j.Evidence-m.presentLevel(r, 0.5)/bh.EvidenceLevel) > 1e-12 || j.Evidence <= 0 {
		t.Fatalf("share %v, want the own level %v over %v", j.Evidence, m.presentLevel(r, 0.5), bh.EvidenceLevel)
	}
	r[features.FirstContactWindows1h] = 6 * bh.Scales[features.FirstContactWindows1h]
	if j2 := m.Judge(r, 0.5); j2.Evidence != j.Evidence || j2.Level <= j.Level {
		t.Fatalf("the damped count added to the share (%v → %v) or not to the level (%v → %v)", j.Evidence, j2.Evidence, j.Level, j2.Level)
	}
	// A model trained before the rule has none: no share.
	old := *m
	oldBh := *bh
	oldBh.EvidenceLevel = 0
	old.Behaviour = &oldBh
	if j := old.Judge(r, 0.5); j.Evidence != 0 {
		t.Fatalf("a model without the evidence rule gave a share %v", j.Evidence)
	}
}

// TestScoreRisesWithIntensityForEveryKind is a paired sweep: the same
// devices, the same base windows and the same baselines, with each attack
// kind added at rising intensity (simulator.AttackSpec's meanings). The
// mean score must rise strictly with intensity, beyond anything training
// saw: the property an isolation score alone, saturating at the edge of
// the training data, does not have.
func TestScoreRisesWithIntensityForEveryKind(t *testing.T) {
	devs, series := synthFleet(rand.New(rand.NewPCG(21, 22)), 24, 240)
	m, bases, err := TrainBehaviour(series, BehaviourOptions{Forest: iforest.Config{Seed: 5}})
	if err != nil {
		t.Fatal(err)
	}
	// attack adds k windows of one kind at intensity x to a copy of a
	// device's context, and returns the mean score of those windows.
	type kind struct {
		name   string
		levels []float64
		flows  func(d *synthDevice, x float64, k int) []features.Flow
	}
	kinds := []kind{
		{"ddos", []float64{2, 5, 20, 50}, func(d *synthDevice, x float64, _ int) (out []features.Flow) {
			for range int(x * d.rate) {
				out = append(out, features.Flow{Dst: 901, DstPort: 53, BytesOut: 320, PacketsOut: 5})
			}
			return out
		}},
		{"exfiltration", []float64{2, 5, 20, 100}, func(d *synthDevice, x float64, _ int) []features.Flow {
			b := uint64(x * d.rate * d.bytes)
			return []features.Flow{{Dst: 902, DstPort: 443, BytesOut: b, BytesIn: b / 100, PacketsOut: b/1400 + 1, PacketsIn: 1}}
		}},
		{"port_scan", []float64{20, 50, 150, 400}, func(_ *synthDevice, x float64, _ int) (out []features.Flow) {
			for p := range int(x) {
				out = append(out, features.Flow{Dst: 903, DstPort: uint16(1000 + p), BytesOut: 60, PacketsOut: 1, Failed: true, Internal: true})
			}
			return out
		}},
		{"c2_beacon", []float64{600, 120, 60, 30}, func(_ *synthDevice, x float64, k int) (out []features.Flow) {
			// contacts in window k of the attack at one every x seconds
			for s := float64(k * 60); s < float64((k+1)*60); s += 1 {
				if int(s)%int(x) == 0 {
					out = append(out, features.Flow{Dst: 904, DstPort: 8443, BytesOut: 220, BytesIn: 200, PacketsOut: 3, PacketsIn: 3})
				}
			}
			return out
		}},
		{"lateral_movement", []float64{5, 10, 30, 100}, func(_ *synthDevice, x float64, k int) (out []features.Flow) {
			// x internal hosts over 5 windows
			lo, hi := k*int(x)/5, (k+1)*int(x)/5
			for h := lo; h < hi; h++ {
				out = append(out, features.Flow{Dst: uint64(10_000 + h), DstPort: 445, BytesOut: 120, PacketsOut: 2, Failed: true, Internal: true})
			}
			return out
		}},
	}
	r := make([]float64, ResidualDims)
	for _, kd := range kinds {
		means := make([]float64, len(kd.levels))
		for li, x := range kd.levels {
			sum, n := 0.0, 0
			for i, d := range devs {
				// The same base traffic for every level: reseed per device.
				d.rng = rand.New(rand.NewPCG(uint64(i), 99))
				feat := d.feat // copies of the device's context and baseline
				b := bases[series[i].Device]
				for k := range 5 {
					d.win.Reset()
					for range poissonDraw(d.rng, d.rate) {
						bo := uint64(d.bytes * math.Exp(0.35*d.rng.NormFloat64()))
						d.win.Add(features.Flow{Dst: uint64(1 + d.rng.IntN(3)), DstPort: 443, BytesOut: bo, BytesIn: bo / 2, PacketsOut: 1 + bo/1200, PacketsIn: 1 + bo/2400})
					}
					for _, f := range kd.flows(d, x, k) {
						d.win.Add(f)
					}
					if d.win.Flows() == 0 {
						continue
					}
					v := feat.Observe(d.win, int64(2000+k), nil)
					m.Residuals(&b, &v, r)
					sum += m.Judge(r, m.Forest().Score(r)).Score
					n++
				}
			}
			means[li] = sum / float64(n)
		}
		t.Logf("%-16s %v: mean score %.3f", kd.name, kd.levels, means)
		for i := 1; i < len(means); i++ {
			if !(means[i] > means[i-1]) {
				t.Errorf("%s: mean score %.4f at %v not above %.4f at %v", kd.name, means[i], kd.levels[i], means[i-1], kd.levels[i-1])
			}
		}
	}
}

// TestFeatureScalesAreUpperTailQuantiles: s_j is the 98th percentile of
// z_j⁺ and at least 1 — known values on a constructed sample.
func TestFeatureScalesAreUpperTailQuantiles(t *testing.T) {
	const n = 1000
	rows := make([]float64, n*ResidualDims)
	for i := range n {
		rows[i*ResidualDims+0] = float64(i) / 100 // 0.00 … 9.99: the 980th value is 9.79
		rows[i*ResidualDims+1] = -float64(i)      // never upward: scale 1
		if i%10 == 0 {
			rows[i*ResidualDims+2] = 0.5 // small upward moves: below 1, so 1
		}
	}
	s := featureScales(rows)
	if math.Abs(s[0]-9.79) > 1e-12 || s[1] != 1 || s[2] != 1 || s[3] != 1 {
		t.Fatalf("scales %v, want 9.79, 1, 1, 1", s[:4])
	}
}

// TestExpectedFalseIncidentsFallWithTrainingHistory: the same fleet's
// traffic trained on a short history of a few devices and on a long one of
// many gives levels placed for the same budget, but the few episodes of the
// short history leave them uncertain, and the rate they are to be expected
// to give is higher; with the long history it is near the budget.
func TestExpectedFalseIncidentsFallWithTrainingHistory(t *testing.T) {
	budget := Budget{FalseAlertsPer1000DeviceHours: 10}
	expected := func(devices int, windows int64) float64 {
		_, series := synthFleet(rand.New(rand.NewPCG(21, 22)), devices, windows)
		m, _, err := TrainBehaviour(series, BehaviourOptions{Forest: iforest.Config{Seed: 3}, Profile: "synthetic", Budget: budget})
		if err != nil {
			t.Fatal(err)
		}
		e := m.Behaviour.ExpectedFalseIncidents()
		if got := m.Metrics["expected_false_incidents_per_1000_device_hours"]; got != e {
			t.Fatalf("model metric %v, want %v", got, e)
		}
		return e
	}
	short, long := expected(6, 150), expected(60, 1500)
	t.Logf("expected false incidents per 1,000 device-hours, budget %v: 6 devices × 150 windows %.2f, 60 × 1,500 %.2f",
		budget.FalseAlertsPer1000DeviceHours, short, long)
	if !(short > 1.5*long) || long > 2*budget.FalseAlertsPer1000DeviceHours {
		t.Fatalf("short history %v, long %v: want the short one well above the long, and the long within twice the budget", short, long)
	}
}

// TestBudgetIsSpreadOverTheWindowsDevicesShow: the budget counts device-
// hours, and a device shows a window only in a minute it sent a flow. The
// same training windows, said to cover a day and more at one a minute,
// give the levels of series that say nothing of their time (one window
// every Δ); said to cover four times as long — a device silent three
// minutes in four — they give each window four times the share of the
// budget: lower levels, and the same false incidents to be expected per
// device-hour. A history shorter than a day has not seen the daily cycle
// of that density and keeps the bound of one window every Δ.
func TestBudgetIsSpreadOverTheWindowsDevicesShow(t *testing.T) {
	t0 := time.Date(2026, 11, 2, 0, 0, 0, 0, time.UTC)
	two := func(until time.Duration) []DeviceSeries {
		return []DeviceSeries{
			{Vectors: make([]features.Vector, 10), From: t0, To: t0.Add(10 * time.Minute)},
			{Vectors: make([]features.Vector, 10), From: t0.Add(until - 40*time.Minute), To: t0.Add(until)},
			{Vectors: make([]features.Vector, 7)}, // time not known: not counted
		}
	}
	if got := windowsPerDeviceHour(two(24 * time.Hour)); math.Abs(got-24) > 1e-9 {
		t.Fatalf("windows per device-hour %v, want 20 windows over 50 minutes = 24", got)
	}
	if got := windowsPerDeviceHour(two(22 * time.Hour)); got != 0 {
		t.Fatalf("windows per device-hour over 22 hours of history %v, want 0 (less than a day)", got)
	}
	budget := Budget{FalseAlertsPer1000DeviceHours: 10}
	// train gives device i's windows one every stretch from i·stagger on.
	train := func(stagger, stretch time.Duration) *Behaviour {
		_, series := synthFleet(rand.New(rand.NewPCG(23, 24)), 20, 600)
		if stretch > 0 {
			for i := range series {
				series[i].From = t0.Add(time.Duration(i) * stagger)
				series[i].To = series[i].From.Add(stretch * time.Duration(len(series[i].Vectors)))
			}
		}
		m, _, err := TrainBehaviour(series, BehaviourOptions{Forest: iforest.Config{Seed: 3}, Profile: "synthetic", Budget: budget})
		if err != nil {
			t.Fatal(err)
		}
		return m.Behaviour
	}
	unknown, short := train(0, 0), train(0, time.Minute) // 10 hours of history
	every, sparse := train(time.Hour, time.Minute), train(time.Hour, 4*time.Minute)
	if unknown.WindowsPerDeviceHour != 0 || short.WindowsPerDeviceHour != 0 ||
		math.Abs(every.WindowsPerDeviceHour-60) > 1e-9 || math.Abs(sparse.WindowsPerDeviceHour-15) > 1e-9 {
		t.Fatalf("windows per device-hour %v, %v, %v, %v; want 0 (not known), 0 (less than a day), 60, 15",
			unknown.WindowsPerDeviceHour, short.WindowsPerDeviceHour, every.WindowsPerDeviceHour, sparse.WindowsPerDeviceHour)
	}
	near := func(a, b *Behaviour) bool {
		return math.Abs(a.AnomalousLevel-b.AnomalousLevel) < 1e-9 && math.Abs(a.ExtremeLevel-b.ExtremeLevel) < 1e-9 && math.Abs(a.EvidenceLevel-b.EvidenceLevel) < 1e-9
	}
	if !near(every, unknown) || !near(short, unknown) {
		t.Errorf("levels (anomalous, extreme, evidence) %.3f, %.3f, %.3f a window every minute, %.3f, %.3f, %.3f over 10 hours; want those of one window every Δ, %.3f, %.3f, %.3f",
			every.AnomalousLevel, every.ExtremeLevel, every.EvidenceLevel, short.AnomalousLevel, short.ExtremeLevel, short.EvidenceLevel,
			unknown.AnomalousLevel, unknown.ExtremeLevel, unknown.EvidenceLevel)
	}
	if !(sparse.AnomalousLevel < every.AnomalousLevel) || !(sparse.ExtremeLevel < every.ExtremeLevel) || sparse.EvidenceLevel > every.EvidenceLevel {
		t.Errorf("a window every 4 minutes: levels %.3f, %.3f, %.3f; want below a window every minute's %.3f, %.3f, %.3f",
			sparse.AnomalousLevel, sparse.ExtremeLevel, sparse.EvidenceLevel, every.AnomalousLevel, every.ExtremeLevel, every.EvidenceLevel)
	}
	// Each level's own share: the extreme level is where the level tail
	// leaves r/5, r = b/(1000·ρ), or the share's own calibrated level.
	for _, bh := range []*Behaviour{every, sparse} {
		share := budget.FalseAlertsPer1000DeviceHours / (1000 * bh.WindowsPerDeviceHour) / openingRules
		if want := max(bh.LevelTail.Quantile(share), -math.Log10(share)); math.Abs(bh.ExtremeLevel-want) > 1e-9 {
			t.Errorf("%v windows an hour: extreme level %v, want %v", bh.WindowsPerDeviceHour, bh.ExtremeLevel, want)
		}
	}
	e, s := every.ExpectedFalseIncidents(), sparse.ExpectedFalseIncidents()
	t.Logf("expected false incidents per 1,000 device-hours, budget %v: a window every minute %.2f, every 4 minutes %.2f", budget.FalseAlertsPer1000DeviceHours, e, s)
	if s > 1.5*e || e > 1.5*s {
		t.Errorf("expected false incidents %.2f (every 4 minutes) against %.2f (every minute): want the same budget kept", s, e)
	}
}

// TestPersistenceRulesJudgeAWindowByItsOwnEvidence: a window whose only
// deviation is the damped first-contact count — a past burst of first
// contacts still held in it — counts for the extreme and k-of-n rules as
// its level says, but is neither elevated nor persistent; the same
// deviation of a feature of the window alone is both.
func TestPersistenceRulesJudgeAWindowByItsOwnEvidence(t *testing.T) {
	m := trainSynthetic(t, 31, 20, 200)
	bh := m.Behaviour
	if bh.SustainedLevel == 0 || bh.PersistentLevel == 0 {
		t.Fatal("the rules are off")
	}
	judge := func(j int) Judgement {
		r := make([]float64, ResidualDims)
		r[j] = 6 * bh.Scales[j]
		return m.Judge(r, 0.5)
	}
	damped, own := judge(features.FirstContactWindows1h), judge(features.NewDst)
	if damped.Level < bh.SustainedLevel || damped.Level < bh.PersistentLevel {
		t.Fatalf("the damped deviation's level %.2f is below the rules' levels %.2f, %.2f: the test shows nothing", damped.Level, bh.SustainedLevel, bh.PersistentLevel)
	}
	if damped.Elevated || damped.Persistent {
		t.Errorf("a window held up by its damped count alone (level %.2f) is elevated %v, persistent %v; want neither", damped.Level, damped.Elevated, damped.Persistent)
	}
	if !own.Elevated || !own.Persistent || math.Abs(own.Level-damped.Level) > 1e-9 {
		t.Errorf("a window feature's deviation (level %.2f, the damped one's %.2f): elevated %v, persistent %v; want both", own.Level, damped.Level, own.Elevated, own.Persistent)
	}
	// The k-of-n rule counts only windows anomalous by their own
	// evidence: a host new to the device in the window is some, its
	// other features' deviations are some; a damped count is none.
	if !damped.Anomalous || damped.OwnAnomalous {
		t.Errorf("held up by its damped count alone (level %.2f, anomalous level %.2f): anomalous %v, by its own evidence %v; want true, false",
			damped.Level, bh.AnomalousLevel, damped.Anomalous, damped.OwnAnomalous)
	}
	if !own.OwnAnomalous {
		t.Error("a window anomalous by a host new to it is not anomalous by its own evidence")
	}
	r := make([]float64, ResidualDims)
	r[features.FirstContactWindows1h], r[features.NewDst] = 6*bh.Scales[features.FirstContactWindows1h], 0.1
	if j := m.Judge(r, 0.5); !j.OwnAnomalous {
		t.Error("a window with the damped count high and a new host again (a beacon's) is not anomalous by its own evidence")
	}
}

// The profile's shared destinations travel in the artifact, keys of all 64
// bits intact, and a model trained without them shares none.
func TestSharedPeersTravelInTheArtifact(t *testing.T) {
	_, series := synthFleet(rand.New(rand.NewPCG(31, 32)), 6, 40)
	peers := features.Peers{7, 1 << 53, 1<<63 + 5}
	m, _, err := TrainBehaviour(series, BehaviourOptions{Forest: iforest.Config{Seed: 3}, Profile: "synthetic", Peers: peers})
	if err != nil {
		t.Fatal(err)
	}
	b, err := m.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	back, err := Unmarshal(b)
	if err != nil {
		t.Fatal(err)
	}
	if got := back.SharedPeers(); !slices.Equal(got, peers) || !got.Contains(1<<63+5) || got.Contains(1<<63+4) {
		t.Fatalf("shared destinations %v after a round trip, want %v", got, peers)
	}
	// One base64 string in the metadata; keys out of order are refused.
	var meta struct {
		Behaviour struct {
			Peers json.RawMessage `json:"peers"`
		} `json:"behaviour"`
	}
	raw, _ := json.Marshal(back.Metadata)
	if err := json.Unmarshal(raw, &meta); err != nil || string(meta.Behaviour.Peers) != `"AAAAAAAAAAcAIAAAAAAAAIAAAAAAAAAF"` {
		t.Fatalf("shared destinations encoded as %s (%v)", meta.Behaviour.Peers, err)
	}
	var bad features.Peers
	if err := json.Unmarshal([]byte(`"AAAAAAAAAAIAAAAAAAAAAQ=="`), &bad); err == nil {
		t.Fatal("keys out of order accepted")
	}
	none, _, err := TrainBehaviour(series, BehaviourOptions{Forest: iforest.Config{Seed: 3}, Profile: "synthetic"})
	if err != nil {
		t.Fatal(err)
	}
	if none.SharedPeers() != nil || (*Model)(nil).SharedPeers() != nil {
		t.Fatal("a model trained without shared destinations shares some")
	}
}

// TestFirstStepOfAConstantFeatureIsAsRareAsTrainingSays: a count that never
// moved in training (the synthetic fleets send no failed flow, to no
// internal host and to one port only) is scaled so that its first step — one
// failed flow, one more port — stands in the statistics A and B where
// Jeffreys' predictive puts an event seen in none of n windows: probability
// 1/(2(n+1)). The same first event then means the same in a profile whose
// other features are heavy-tailed and in one whose are light: its level is
// set by the training history's length, not by the tails of A and B.
func TestFirstStepOfAConstantFeatureIsAsRareAsTrainingSays(t *testing.T) {
	for _, tc := range []struct {
		name    string
		devices int
		windows int64
	}{{"short history", 8, 60}, {"long history", 30, 300}} {
		_, series := synthFleet(rand.New(rand.NewPCG(5, uint64(tc.devices))), tc.devices, tc.windows)
		m, _, err := TrainBehaviour(series, BehaviourOptions{Forest: iforest.Config{Trees: 50, Seed: 3}})
		if err != nil {
			t.Fatal(err)
		}
		bh := m.Behaviour
		want := -math.Log10(0.5 / float64(m.TrainingRows+1))
		constant := 0
		for j, spec := range features.Specs {
			c := series[0].Vectors[0][j]
			if spec.Scale == features.ScaleLog || !everyWindowHas(series, j, c) {
				continue
			}
			constant++
			next := c + 1
			if features.Specs[j].Scale == features.ScaleEntropy {
				next = math.Log2(math.Exp2(c) + 1)
			}
			var b DeviceBaseline
			m.StartBaseline(&b)   // a constant feature's prior: its constant, no variance
			var v features.Vector // the profile's typical window …
			for k := range v {
				v[k] = unscaled(k, bh.PriorMean[k])
			}
			r := make([]float64, ResidualDims)
			v[j] = next // … with one step past the constant
			m.Residuals(&b, &v, r)
			maxDev, sumSq := statistics(r)
			if got := max(bh.MaxTail.Level(maxDev), bh.SumTail.Level(sumSq)); math.Abs(got-want) > 1e-6 {
				t.Errorf("%s: %s one step past its constant %g: level %.6f in A and B, want %.6f (n = %d)", tc.name, features.Names[j], c, got, want, m.TrainingRows)
			}
		}
		if constant < 3 {
			t.Fatalf("%s: %d constant features, want the fleet's failed flows, internal hosts and ports at least", tc.name, constant)
		}
		// A feature that moved keeps its upper-tail scale.
		if s := bh.Scales[features.Flows]; s < 1 {
			t.Errorf("%s: flows moved in training but its scale is %v", tc.name, s)
		}
	}
}

// everyWindowHas reports whether feature j is x in every training window.
func everyWindowHas(series []DeviceSeries, j int, x float64) bool {
	for _, s := range series {
		for i := range s.Vectors {
			if s.Vectors[i][j] != x {
				return false
			}
		}
	}
	return true
}

// TestYoungBaselineLearnsItsDevice: a device first seen live ten times as
// busy as its profile starts from the profile prior. While young its
// baseline learns every window, anomalous or not (each pull clipped at
// HuberK standard deviations), so that once mature it has moved most of
// the way from the prior to the device's own level and the device's
// windows are no longer anomalous (the detector's side of it:
// pipeline's TestNewDeviceFarFromItsProfileSettles).
func TestYoungBaselineLearnsItsDevice(t *testing.T) {
	m := trainSynthetic(t, 3, 20, 400)
	var b DeviceBaseline
	m.StartBaseline(&b)
	if !b.Young() {
		t.Fatal("a baseline started from the prior is not young")
	}
	rng := rand.New(rand.NewPCG(9, 9))
	busy := func() features.Vector {
		var v features.Vector
		v[features.Flows] = float64(poissonDraw(rng, 10*unscaled(features.Flows, m.Behaviour.PriorMean[features.Flows])))
		return v
	}
	prior := m.Behaviour.PriorMean[features.Flows]
	r := make([]float64, ResidualDims)
	sum, n, anomalous := 0.0, 0, 0
	for b.Young() {
		v := busy()
		m.Residuals(&b, &v, r)
		if m.Judge(r, 0).Anomalous {
			anomalous++
		}
		sum += scaled(features.Flows, v[features.Flows])
		n++
		m.Learn(&b, &v)
	}
	if n != features.MatureWindows {
		t.Fatalf("young for %d windows, want %d", n, features.MatureWindows)
	}
	if anomalous == 0 {
		t.Fatal("no window of a device ten times its profile's level was anomalous against the prior: the test shows nothing")
	}
	own := sum / float64(n)
	got := float64(b.Mean[features.Flows])
	if (got-prior)/(own-prior) < 0.5 {
		t.Errorf("after %d young windows the mean %.3f has moved less than half the way from the prior %.3f to the device's own %.3f", n, got, prior, own)
	}
	later := 0
	for range 30 {
		v := busy()
		m.Residuals(&b, &v, r)
		j := m.Judge(r, 0)
		if j.Anomalous {
			later++
		}
		if !j.Anomalous {
			m.Learn(&b, &v)
		}
	}
	if later > 1 {
		t.Errorf("%d of the device's next 30 windows anomalous once its baseline matured (%d of its %d young ones)", later, anomalous, n)
	}
	t.Logf("young windows anomalous %d of %d; mean %.3f, prior %.3f, own %.3f; later windows anomalous %d of 30", anomalous, n, got, prior, own, later)
}

// TestRuleKForAsksARaisedDeviceItsExcess: the sustained and persistent
// rules ask a device the profile's count plus its excess of raised windows
// over the profile's usual device's in the span, rounded (hand-worked
// values), the rule off beyond the span; and the shares training leaves
// each device are those its windows showed, the same whether the service
// seeds the device from training or from TrainedBaseline after a retrain.
func TestRuleKForAsksARaisedDeviceItsExcess(t *testing.T) {
	for _, c := range []struct {
		k, n int
		p, q float64
		want int
	}{
		{6, 10, 0.009, 0.009, 6},  // the usual device
		{6, 10, 0.001, 0.009, 6},  // quieter than usual: never fewer
		{6, 10, 0.05, 0.009, 6},   // 0.41 windows more in ten: rounds to none
		{6, 10, 0.10, 0.009, 7},   // 0.91 more
		{6, 10, 0.374, 0.009, 10}, // 3.65 more: the campus thermostat
		{6, 10, 0.9, 0.01, 11},    // 8.9 more: beyond the span, off
		{3, 4, 0.30, 0.005, 4},    // 1.18 more in four
		{3, 4, 0.40, 0.005, 5},    // 1.58 more: off
		{6, 10, 0.5, 0, 6},        // a model without the shares
	} {
		if got := kFor(c.k, c.n, c.p, c.q); got != c.want {
			t.Errorf("kFor(%d, %d, %v, %v) = %d, want %d", c.k, c.n, c.p, c.q, got, c.want)
		}
	}

	b := DeviceBaseline{Weight: 4, Elevated: 0.5, Persistent: 0.25}
	b.LearnRaised(Judgement{Elevated: true})
	if b.Elevated != 0.625 || b.Persistent != 0.1875 {
		t.Fatalf("shares after one elevated window at weight 4: %v, %v, want 0.625, 0.1875", b.Elevated, b.Persistent)
	}

	_, series := synthFleet(rand.New(rand.NewPCG(21, 22)), 12, 240)
	m, seeds, err := TrainBehaviour(series, BehaviourOptions{Forest: iforest.Config{Seed: 3}, Profile: "synthetic",
		Budget: Budget{FalseAlertsPer1000DeviceHours: 100}})
	if err != nil {
		t.Fatal(err)
	}
	bh := m.Behaviour
	if bh.ElevatedShare <= 0 || bh.PersistentShare <= 0 || bh.PersistentShare > bh.ElevatedShare {
		t.Fatalf("profile shares elevated %v, persistent %v: want 0 < persistent ≤ elevated", bh.ElevatedShare, bh.PersistentShare)
	}
	windows, elevated, recounted := 0.0, 0.0, 0.0
	for _, s := range series {
		seed, again := seeds[s.Device], m.TrainedBaseline(s.Vectors)
		n := float64(len(s.Vectors) - BurnInWindows)
		if seed.Elevated != again.Elevated || seed.Persistent != again.Persistent {
			t.Fatalf("device %s: training left shares %v, %v; TrainedBaseline %v, %v", s.Device, seed.Elevated, seed.Persistent, again.Elevated, again.Persistent)
		}
		windows += n
		elevated += n * float64(seed.Elevated)
		recounted += n * float64(again.Elevated)
	}
	// The fleet must show raised windows for the check above to show
	// anything.
	if elevated < 10 || recounted != elevated {
		t.Fatalf("elevated windows over the fleet: training %v, TrainedBaseline %v; want at least 10 and the same", elevated, recounted)
	}
	if math.Abs(elevated/windows-bh.ElevatedShare) > 1e-6 {
		t.Fatalf("profile's elevated share %v, its devices' pooled %v", bh.ElevatedShare, elevated/windows)
	}
}

// TestRoundingIsNoDeviation: a feature that holds one value in every
// training window — here the recurring new hosts, 0 throughout — differs
// from a baseline's float32 mean only by rounding, and that is a residual
// of exactly 0 (MeanResolution), whatever the last bits of the mean: the
// forest is never grown on the rounding, so it never splits on the
// feature, and a window's forest score does not turn on those bits. A
// window where the feature really moves is judged by A and B (step 3's
// scale for a constant feature), not by a split of the forest.
func TestRoundingIsNoDeviation(t *testing.T) {
	_, series := synthFleet(rand.New(rand.NewPCG(5, 6)), 12, 240)
	j := features.NewDstRecurrence
	if !everyWindowHas(series, j, 0) {
		t.Fatal("the synthetic fleet's recurring new hosts are not 0 throughout: the test shows nothing")
	}
	m, seeds, err := TrainBehaviour(series, BehaviourOptions{Forest: iforest.Config{Seed: 3}, Profile: "synthetic",
		Budget: Budget{FalseAlertsPer1000DeviceHours: 100}})
	if err != nil {
		t.Fatal(err)
	}
	s := series[0]
	v := s.Vectors[len(s.Vectors)-1]
	b := seeds[s.Device]
	if scaled(j, 0) == float64(b.Mean[j]) {
		t.Fatalf("the baseline's mean %v is exactly the value: the test shows nothing", b.Mean[j])
	}
	other := b
	other.Mean[j] = math.Nextafter32(b.Mean[j], float32(math.Inf(1)))
	r, r2 := make([]float64, ResidualDims), make([]float64, ResidualDims)
	m.Residuals(&b, &v, r)
	m.Residuals(&other, &v, r2)
	if r[j] != 0 || r2[j] != 0 {
		t.Fatalf("residuals of an unchanged feature %v and %v against means an ulp apart, want 0", r[j], r2[j])
	}
	if a, c := m.Forest().Score(r), m.Forest().Score(r2); a != c {
		t.Fatalf("forest scores %v and %v for the same window against means an ulp apart", a, c)
	}
	v[j] = 3
	m.Residuals(&b, &v, r)
	importance := make([]float64, ResidualDims)
	m.Forest().Explain(r, importance)
	if r[j] <= 0 || importance[j] != 0 {
		t.Fatalf("a window with 3 recurrences: residual %v, forest importance %v; want > 0 and 0 (no tree split on a constant feature)", r[j], importance[j])
	}
}

// TestAMeanOverFewFlowsIsLessCertain: bytes per packet, a mean over a
// window's flows, has a spread that shrinks as 1/n with its n flows (the
// standard error of a mean). Its variance is kept for a window of the
// device's usual flows and widened by usual/n for a window of fewer —
// never narrowed for one of more — in the residual (hand-worked values)
// and in what the window teaches; and a device whose windows alternate
// between 2 and 16 flows, each flow's bytes per packet lognormal, has its
// thin windows judged about as its busy ones, where a variance blind to
// the flows makes the thin ones' squared deviations eight times the busy
// ones'.
func TestAMeanOverFewFlowsIsLessCertain(t *testing.T) {
	m := trainSynthetic(t, 31, 12, 240)
	j := features.BytesPerPacket
	if !features.Specs[j].PerFlow {
		t.Fatal("bytes per packet is not marked a per-flow mean")
	}
	f, s := Floors[j], m.Behaviour.Scales[j]
	var b DeviceBaseline
	m.StartBaseline(&b)
	b.Mean[j], b.Var[j], b.Flows = float32(scaled(j, 200)), 0.04, 8
	var v features.Vector
	v[j] = 300
	d := scaled(j, 300) - float64(b.Mean[j])
	r := make([]float64, ResidualDims)
	for _, c := range []struct{ flows, factor float64 }{{2, 4}, {4, 2}, {8, 1}, {32, 1}, {0, 8}} {
		v[features.Flows] = c.flows
		m.Residuals(&b, &v, r)
		if want := d / (s * math.Sqrt(0.04*c.factor+f*f)); math.Abs(r[j]-want) > 1e-6*math.Abs(want) {
			t.Fatalf("%v flows: residual %v, want %v (variance widened by %v)", c.flows, r[j], want, c.factor)
		}
	}
	// Learnt from a window of 2 flows: its deviation counts a quarter in
	// the variance kept for 8 flows, and the mean flows move towards 2.
	v[features.Flows] = 2
	before := b
	m.Learn(&b, &v)
	av := 1 / float64(before.Weight+1)
	if want := (1 - av) * (0.04 + av*d*d/4); math.Abs(float64(b.Var[j])-want) > 1e-6 {
		t.Fatalf("variance after a window of 2 flows %v, want %v", b.Var[j], want)
	}
	if want := 8 + av*(2-8); math.Abs(float64(b.Flows)-want) > 1e-5 {
		t.Fatalf("mean flows %v, want %v", b.Flows, want)
	}

	ratio := func(usual bool) float64 {
		rng := rand.New(rand.NewPCG(41, 42))
		var b DeviceBaseline
		m.StartBaseline(&b)
		var sq [2]float64
		var v features.Vector
		for i := range 6000 {
			n := 2 + 14*(i%2)
			sum := 0.0
			for range n {
				sum += 200 * math.Exp(0.8*rng.NormFloat64())
			}
			v[features.Flows], v[j] = float64(n), sum/float64(n)
			if !usual {
				b.Flows = 0 // the spread blind to the flows
			}
			if i >= 3000 {
				m.Residuals(&b, &v, r)
				sq[i%2] += r[j] * r[j]
			}
			m.Learn(&b, &v)
		}
		return sq[0] / sq[1]
	}
	thin, blind := ratio(true), ratio(false)
	t.Logf("thin windows' squared deviations over the busy ones': %.2f, blind to the flows %.2f", thin, blind)
	// Only upward deviations count (step 4), half of each kind of window's;
	// a spread that knows the flows makes the halves alike.
	if thin > 2 || thin < 0.5 {
		t.Fatalf("thin windows' squared deviations %.2f times the busy ones', want within 0.5–2", thin)
	}
	if blind < 2*thin || blind < 2.5 {
		t.Fatalf("without the mean flows the thin windows' squared deviations are %.2f times the busy ones': the test shows nothing", blind)
	}
}

func TestTheForecastFollowsARiseAndNeverCarriesAFallOn(t *testing.T) {
	m := trainSynthetic(t, 31, 12, 240)
	j := features.BytesOut // on the log scale: a steady growth is a line
	const slope = 0.004    // 0.4 % a window, 27 % an hour: a steep morning
	var b DeviceBaseline
	m.StartBaseline(&b)
	b.Weight = VarianceWindows
	for k := range b.Var {
		b.Var[k] = 1 // wide: no deviation of the ramp is clipped
	}
	y := float64(b.Mean[j])
	var v features.Vector
	step := func(y float64) float64 {
		v[j] = math.Expm1(y)
		err := y - float64(b.Mean[j])
		m.Learn(&b, &v)
		return err
	}
	// On a line, Brown's forecast error tends to 0 (a plain weighted mean
	// of discount λ lags it by (1/λ − 1)·slope, 0.236 here).
	var err float64
	for range 3000 {
		y += slope
		err = step(y)
	}
	if lag := (BaselineWindows - 1) * slope; math.Abs(err) > 0.01*lag {
		t.Fatalf("on a rise of %v a window the forecast is %v behind, want within 1 %% of a flat mean's lag %v", slope, err, lag)
	}
	// A fall is not carried on: once it ends, every window stands at or
	// below the forecast — no upward deviation — until the forecast meets
	// it (a trend that followed the fall would undershoot, and put the
	// flat windows after it above their forecast).
	for range 600 {
		y -= slope
		step(y)
	}
	if b.Trend[j] != 0 {
		t.Fatalf("after a fall the trend is %v, want 0", b.Trend[j])
	}
	r := make([]float64, ResidualDims)
	for i := range 600 {
		v[j] = math.Expm1(y)
		m.Residuals(&b, &v, r)
		if r[j] != 0 {
			t.Fatalf("flat window %d after a fall: upward deviation %v, want 0", i, r[j])
		}
		step(y)
	}
	if gap := y - float64(b.Mean[j]); gap > 0 || gap < -1e-3 {
		t.Fatalf("after an hour's flat the forecast is %v off, want it met from above", -gap)
	}
}

func TestAShortfallIsNoEvidence(t *testing.T) {
	// Step 4 judges upward deviations: a window below its forecast in
	// every feature has the residuals, the forest score and the level of
	// one exactly at it.
	m := trainSynthetic(t, 31, 12, 240)
	var b DeviceBaseline
	m.StartBaseline(&b)
	at, below := make([]float64, ResidualDims), make([]float64, ResidualDims)
	var v, w features.Vector
	for j := range features.Count {
		v[j] = unscaled(j, float64(b.Mean[j]))
		w[j] = unscaled(j, float64(b.Mean[j])-0.2*math.Sqrt(float64(b.Var[j])+Floors[j]*Floors[j]))
	}
	m.Residuals(&b, &v, at)
	m.Residuals(&b, &w, below)
	for j := range features.Count {
		if below[j] != 0 || at[j] != 0 {
			t.Fatalf("%s: residual %v below the forecast and %v at it, want 0 and 0", features.Names[j], below[j], at[j])
		}
	}
	if sa, sb := m.Forest().Score(at), m.Forest().Score(below); sa != sb {
		t.Fatalf("forest score %v below the forecast, %v at it", sb, sa)
	}
	if ja, jb := m.Judge(at, m.Forest().Score(at)), m.Judge(below, m.Forest().Score(below)); ja.Level != jb.Level {
		t.Fatalf("level %v below the forecast, %v at it", jb.Level, ja.Level)
	}
}
