package pipeline_test

import (
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"gonum.org/v1/gonum/stat/distuv"

	"github.com/chainwatch/chainwatch/ledgerclient/contract"
	"github.com/chainwatch/chainwatch/pipeline"
	"github.com/chainwatch/chainwatch/pipeline/incidents"
)

// attackTruth is one ground-truth attack, with the intensity it was
// played at (1 when the generator has no intensity knob).
type attackTruth struct {
	device, scenario string
	// profile is the device's: a fleet episode of the profile
	// (pipeline.FleetDevice) that opened during an outbreak on it
	// (outbreak) is the attack's, not false, but counts in no recall: it
	// names no device.
	profile    string
	intensity  float64
	start, end time.Time
	// victim marks a device the attack probed: its incidents are the
	// attack's, not false, but it counts in no recall.
	victim bool
}

// incidentSpan is one behaviour incident as an analyst sees it: from its
// first anomalous window to its last, opened when its opening event came.
type incidentSpan struct {
	id, device     string
	first, last    time.Time // span of anomalous windows [first, last)
	openedAt       time.Time // end of the window that opened it
	peak           float64
	events         int
	closed         bool
	matchedAttack  bool
	openingScore   float64
	openedFeatures []contract.Contribution
}

// incidentsOf groups behaviour alerts into incidents; one still open at
// runEnd spans to it.
func incidentsOf(alerts []contract.Alert, runEnd time.Time) []*incidentSpan {
	byID := map[string]*incidentSpan{}
	for _, a := range alerts {
		if a.Kind != contract.AlertBehaviour || a.Incident == nil {
			continue
		}
		s := byID[a.Incident.ID]
		if s == nil {
			s = &incidentSpan{id: a.Incident.ID, device: a.DeviceID, first: a.WindowStart, last: a.WindowEnd}
			byID[a.Incident.ID] = s
		}
		s.events++
		s.peak = max(s.peak, a.Score)
		if a.WindowStart.Before(s.first) {
			s.first = a.WindowStart
		}
		if a.WindowEnd.After(s.last) {
			s.last = a.WindowEnd
		}
		if a.Incident.Status == contract.IncidentClosed {
			s.closed = true
		}
		if a.Incident.Status == contract.IncidentOpened {
			s.openedAt, s.openingScore, s.openedFeatures = a.WindowEnd, a.Score, a.Features
		}
	}
	out := make([]*incidentSpan, 0, len(byID))
	for _, s := range byID {
		if !s.closed && runEnd.After(s.last) {
			s.last = runEnd
		}
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].first.Before(out[j].first) })
	return out
}

// attackResult is how the service did on one attack.
type attackResult struct {
	attackTruth
	detected     bool          // an incident of the device was open during the attack
	within3      bool          // … opened by the end of the attack's third window
	timeToDetect time.Duration // attack start → end of the opening window
	windows      int
	covered      int // attack windows inside an incident's span
	peak         float64
	// windowScore is the mean score of the attack's windows (0 for a
	// window in which the device sent nothing), where it was measured.
	windowScore float64
}

// detectionReport scores incidents against the ground truth.
type detectionReport struct {
	attacks        []attackResult
	incidents      int
	falseIncidents []*incidentSpan
	falseEvents    int
	deviceHours    float64
}

// evaluate matches incidents to attacks. An incident belongs to an attack
// of its device when its span meets the attack or the tail after it
// (tail: the windows an incident may take to close after the attack ends);
// a fleet episode belongs to the attacks on its profile if it opened while
// at least incidents.DefaultFleetMin devices of the profile were under
// attack (an outbreak: fewer cannot open one). Every other incident is
// false.
func evaluate(alerts []contract.Alert, truth []attackTruth, window, tail time.Duration, runEnd time.Time, deviceHours float64) detectionReport {
	incs := incidentsOf(alerts, runEnd)
	rep := detectionReport{incidents: len(incs), deviceHours: deviceHours}
	for _, g := range truth {
		r := attackResult{attackTruth: g}
		for w := g.start; w.Before(g.end); w = w.Add(window) {
			r.windows++
			for _, s := range incs {
				if s.device == g.device && !w.Before(s.first) && w.Before(s.last) {
					r.covered++
					break
				}
			}
		}
		for _, s := range incs {
			if !s.first.Before(g.end.Add(tail)) || !s.last.After(g.start) {
				continue
			}
			if g.profile != "" && s.device == pipeline.FleetDevice(g.profile) {
				s.matchedAttack = s.matchedAttack || outbreak(truth, g.profile, s.first)
				continue
			}
			if s.device != g.device {
				continue
			}
			s.matchedAttack = true
			if s.openedAt.IsZero() || !s.openedAt.After(g.end) || s.first.Before(g.end) {
				r.detected = true
				r.peak = max(r.peak, s.peak)
				ttd := max(s.openedAt.Sub(g.start), window)
				if r.timeToDetect == 0 || ttd < r.timeToDetect {
					r.timeToDetect = ttd
				}
				if !s.openedAt.After(g.start.Add(3 * window)) {
					r.within3 = true
				}
			}
		}
		if !g.victim {
			rep.attacks = append(rep.attacks, r)
		}
	}
	for _, s := range incs {
		if !s.matchedAttack {
			rep.falseIncidents = append(rep.falseIncidents, s)
			rep.falseEvents += s.events
		}
	}
	return rep
}

// outbreak reports whether at least incidents.DefaultFleetMin devices of
// profile were under attack at t.
func outbreak(truth []attackTruth, profile string, t time.Time) bool {
	n := 0
	for _, g := range truth {
		if g.profile == profile && !t.Before(g.start) && t.Before(g.end) {
			n++
		}
	}
	return n >= incidents.DefaultFleetMin
}

// perThousand is a count per 1,000 device-hours.
func (r detectionReport) perThousand(n int) float64 { return float64(n) / r.deviceHours * 1000 }

// poissonInterval is the exact (Garwood) two-sided confidence interval, at
// level conf, for the mean of a Poisson count of which k were seen: the
// mean lies in [χ²(α/2; 2k)/2, χ²(1 − α/2; 2k + 2)/2] with probability
// at least conf, α = 1 − conf (Garwood, "Fiducial limits for the Poisson
// distribution", Biometrika 28, 1936). Divided by the device-hours
// observed it bounds a false-incident rate: with 0 seen in 1,000
// device-hours the rate may still be 3.7 per 1,000.
func poissonInterval(k int, conf float64) (lo, hi float64) {
	alpha := 1 - conf
	if k > 0 {
		lo = distuv.ChiSquared{K: float64(2 * k)}.Quantile(alpha/2) / 2
	}
	hi = distuv.ChiSquared{K: float64(2*k + 2)}.Quantile(1-alpha/2) / 2
	return lo, hi
}

// TestPoissonIntervalKnownValues checks poissonInterval against the exact
// 95 % limits tabulated for a Poisson count (Garwood 1936; e.g. the table
// in Ulm, "A simple method to calculate the confidence interval of a
// standardized mortality ratio", Am. J. Epidemiol. 131, 1990).
func TestPoissonIntervalKnownValues(t *testing.T) {
	for _, c := range []struct {
		k      int
		lo, hi float64
	}{{0, 0, 3.6889}, {1, 0.0253, 5.5716}, {4, 1.0899, 10.2416}, {10, 4.7954, 18.3904}} {
		lo, hi := poissonInterval(c.k, 0.95)
		if math.Abs(lo-c.lo) > 1e-3 || math.Abs(hi-c.hi) > 1e-3 {
			t.Errorf("k=%d: interval %.4f–%.4f, want %.4f–%.4f", c.k, lo, hi, c.lo, c.hi)
		}
	}
}

// cell groups attacks by kind and intensity for the benchmark table.
type cell struct {
	scenario  string
	intensity float64
}

// table renders, per attack kind and intensity: attack recall within three
// windows, attack recall at all, window recall, median time to detect and
// the mean score of the attack windows.
func (r detectionReport) table() string {
	groups := map[cell][]attackResult{}
	for _, a := range r.attacks {
		c := cell{a.scenario, a.intensity}
		groups[c] = append(groups[c], a)
	}
	keys := make([]cell, 0, len(groups))
	for c := range groups {
		keys = append(keys, c)
	}
	slices.SortFunc(keys, func(a, b cell) int {
		if c := strings.Compare(a.scenario, b.scenario); c != 0 {
			return c
		}
		switch {
		case a.intensity < b.intensity:
			return -1
		case a.intensity > b.intensity:
			return 1
		}
		return 0
	})
	var b strings.Builder
	fmt.Fprintf(&b, "| attack | intensity | attacks | recall ≤ 3 windows | recall | window recall | median time to detect | mean window score |\n")
	fmt.Fprintf(&b, "|---|---|---|---|---|---|---|---|\n")
	for _, c := range keys {
		g := groups[c]
		within, detected, windows, covered, peak := 0, 0, 0, 0, 0.0
		var ttd []time.Duration
		for _, a := range g {
			if a.within3 {
				within++
			}
			if a.detected {
				detected++
				ttd = append(ttd, a.timeToDetect)
			}
			windows += a.windows
			covered += a.covered
			peak += a.windowScore
		}
		med := "–"
		if len(ttd) > 0 {
			slices.Sort(ttd)
			med = ttd[len(ttd)/2].String()
		}
		fmt.Fprintf(&b, "| %s | %g | %d | %.2f | %.2f | %.2f | %s | %.3f |\n", c.scenario, c.intensity, len(g),
			float64(within)/float64(len(g)), float64(detected)/float64(len(g)), float64(covered)/float64(max(windows, 1)), med, peak/float64(len(g)))
	}
	return b.String()
}

// monotone reports, per attack kind, whether the mean window score rises
// with intensity (intensities ordered subtle → blatant by rank, as the
// sweep lists them), and the scores.
func (r detectionReport) monotone(order func(kind string, x float64) int) map[string][]float64 {
	type acc struct{ sum, n float64 }
	byKind := map[string]map[int]*acc{}
	for _, a := range r.attacks {
		if byKind[a.scenario] == nil {
			byKind[a.scenario] = map[int]*acc{}
		}
		k := order(a.scenario, a.intensity)
		if byKind[a.scenario][k] == nil {
			byKind[a.scenario][k] = &acc{}
		}
		byKind[a.scenario][k].sum += a.windowScore
		byKind[a.scenario][k].n++
	}
	out := map[string][]float64{}
	for kind, levels := range byKind {
		for k := 0; k < len(levels); k++ {
			if l := levels[k]; l != nil {
				out[kind] = append(out[kind], l.sum/l.n)
			}
		}
	}
	return out
}
