package pipeline

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/chainwatch/chainwatch/ledgerclient/contract"
	"github.com/chainwatch/chainwatch/models"
	"github.com/chainwatch/chainwatch/models/features"
	"github.com/chainwatch/chainwatch/pipeline/incidents"
)

// fleetRun is what a detector reported on a fleet of meters: the device
// incidents opened, by the rule that opened them, and the fleet episodes.
type fleetRun struct {
	opened   map[string][]opening // device → the incidents it reported
	episodes []*contract.Alert
	// model and series are the trained model and the devices' windows
	// (the warm-up as lead-in), for the offline judgement.
	model  *models.Model
	series []OfflineSeries
}

// opening is a device incident reported: the rule that opened it, its
// first window and the window that reported it (minutes from the start).
type opening struct {
	by        string
	first, at int
}

// meterDetector is a detector that trains a first model after an hour of
// windows (10 at least), grouping by rule.
func meterDetector(t *testing.T, rule incidents.Rule) *Detector {
	t.Helper()
	return meterDetectorOn(ledgerModelStore(t), rule)
}

// meterDetectorOn is meterDetector on store: a detector started on it
// again is the service restarted.
func meterDetectorOn(store *ModelStore, rule incidents.Rule) *Detector {
	return NewDetector(DetectorConfig{Warmup: time.Hour, MinTrainingWindows: 10, Seed: 1, Incident: rule}, store, nil, "iot.flows",
		NewMetrics(prometheus.NewRegistry()), slog.New(slog.NewTextHandler(io.Discard, nil)))
}

// meterVector is a meter's window of flows flows: about 900 bytes and two
// packets each.
func meterVector(rng *rand.Rand, flows float64) features.Vector {
	var v features.Vector
	v[features.Flows] = flows
	v[features.BytesOut] = flows * 900 * math.Exp(0.2*rng.NormFloat64())
	v[features.Packets] = flows * 2
	return v
}

// meterWindow is meter st's one-minute window from start.
func meterWindow(st *deviceState, start time.Time, v features.Vector) ClosedWindow {
	return ClosedWindow{DeviceID: st.id, Profile: "meter", Start: start, End: start.Add(time.Minute),
		Index: start.Unix() / 60, Vector: v, state: st}
}

// runFleet trains a detector on 20 meters' hour of ordinary traffic, then
// scores 49 more minutes in which change(dev, i, v) changes device dev's
// window v of minute i.
func runFleet(t *testing.T, rule incidents.Rule, change func(dev, i int, v *features.Vector)) fleetRun {
	t.Helper()
	return runFleetRestarted(t, rule, change, -1, false)
}

// runFleetRestarted is runFleet with the detector started anew before
// minute restart (< 0: never), on the same model store, with the devices'
// states as their checkpoints restore them and, if restoreFleets, the
// profile's fleet episode as the state store restores it.
func runFleetRestarted(t *testing.T, rule incidents.Rule, change func(dev, i int, v *features.Vector), restart int, restoreFleets bool) fleetRun {
	t.Helper()
	store := ledgerModelStore(t)
	d := meterDetectorOn(store, rule)
	t0 := time.Date(2026, 11, 24, 0, 0, 0, 0, time.UTC)
	const devices = 20
	states := make([]*deviceState, devices)
	for k := range states {
		states[k] = newDeviceState("m-"+string(rune('a'+k)), "meter")
	}
	run := fleetRun{opened: map[string][]opening{}, series: make([]OfflineSeries, devices)}
	ctx := context.Background()
	for i := range 110 {
		if i == restart {
			fleets := d.FleetStates()
			d = meterDetectorOn(store, rule)
			if restoreFleets {
				d.RestoreFleets(fleets)
			}
			for k, st := range states {
				restored := newDeviceState(st.id, st.profile)
				if err := unmarshalDevice(marshalDevice(st), restored); err != nil {
					t.Fatal(err)
				}
				states[k] = restored
			}
		}
		minute := make([]ClosedWindow, 0, devices)
		for k, st := range states {
			rng := rand.New(rand.NewPCG(uint64(i), uint64(k)))
			v := meterVector(rng, float64(3+rng.IntN(4)))
			v[features.DistinctDst] = 1
			if rng.Float64() < 0.05 { // now and then a host new to the meter
				v[features.NewDst], v[features.DistinctDst] = 1, 2
			}
			if rng.Float64() < 0.1 { // and a time-server query
				v[features.SmallPacketFlows] = 1
			}
			if i >= 61 {
				change(k, i, &v)
			}
			start := t0.Add(time.Duration(i) * time.Minute)
			run.series[k].Device = st.id
			if i < 61 {
				run.series[k].LeadIn = append(run.series[k].LeadIn, v)
			} else {
				run.series[k].Vectors = append(run.series[k].Vectors, v)
				run.series[k].Index = append(run.series[k].Index, start.Unix()/60)
			}
			minute = append(minute, meterWindow(st, start, v))
		}
		verdicts, err := d.ScoreWindows(ctx, minute, nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range verdicts {
			for _, a := range v.Alerts {
				switch {
				case a.DeviceID == FleetDevice("meter"):
					run.episodes = append(run.episodes, a)
				case a.Incident != nil && a.Incident.Status == string(incidents.Opened):
					run.opened[a.DeviceID] = append(run.opened[a.DeviceID],
						opening{by: a.Incident.OpenedBy, first: int(a.WindowStart.Sub(t0) / time.Minute), at: i})
				}
			}
		}
	}
	if run.model = d.Model("meter"); run.model == nil {
		t.Fatal("no model after the warm-up")
	}
	return run
}

// scale multiplies a meter's window's flows by flows and their bytes by
// flows·bytes: bytes is the change in bytes per flow.
func scale(v *features.Vector, flows, bytes float64) {
	v[features.Flows] *= flows
	v[features.Packets] *= flows
	v[features.BytesOut] *= flows * bytes
}

// TestFleetEpisodeGroupsAProfileWideStep: when every meter's flows rise
// by half together at minute 70, the detector reports one fleet episode,
// and no device incident opened after it but by the extreme rule, where
// with fleet episodes off every device opens its own; a meter that, during
// the episode, also sends twenty times the bytes per flow is reported on
// its own; a rise on two meters of twenty is reported device by device,
// the same with fleet episodes on or off.
func TestFleetEpisodeGroupsAProfileWideStep(t *testing.T) {
	step := func(dev, i int, v *features.Vector) {
		if i >= 70 {
			scale(v, 1.5, 1)
		}
	}
	off := runFleet(t, incidents.Rule{FleetMin: -1}, step)
	if len(off.opened) < 15 || len(off.episodes) != 0 {
		t.Fatalf("fleet episodes off: %d of 20 devices opened an incident, %d episodes", len(off.opened), len(off.episodes))
	}
	on := runFleet(t, incidents.Rule{}, step)
	if len(on.episodes) == 0 || on.episodes[0].Incident.Status != string(incidents.Opened) || on.episodes[0].Incident.OpenedBy != "fleet" {
		t.Fatalf("no fleet episode opened: %+v", on.episodes)
	}
	if len(on.episodes) > 2 {
		t.Errorf("%d fleet events for one step, want an opening and at most a closing", len(on.episodes))
	}
	// The opening names what the profile did: more flows, packets and
	// bytes than the devices' baselines.
	if fs := on.episodes[0].Features; len(fs) == 0 || !slices.Contains([]string{"flows", "packets", "bytes_out"}, fs[0].Feature) || fs[0].Value <= fs[0].Baseline {
		t.Errorf("the episode's opening names %+v; want flows, packets or bytes out above their baselines first", fs)
	}
	episode := int(on.episodes[0].WindowStart.Sub(time.Date(2026, 11, 24, 0, 0, 0, 0, time.UTC)) / time.Minute)
	for dev, os := range on.opened {
		for _, o := range os {
			if o.first >= episode && o.by != string(incidents.OpenedExtreme) {
				t.Errorf("%s reported an incident opened by %s at minute %d, in the episode opened at minute %d", dev, o.by, o.first, episode)
			}
		}
	}
	if 4*len(on.opened) > len(off.opened) {
		t.Errorf("fleet episodes on: %d devices reported incidents of their own (%v), against %d off", len(on.opened), on.opened, len(off.opened))
	}
	t.Logf("step on all 20: %d devices reported incidents with fleet episodes off, %d on (before the episode opened at minute %d), %d fleet events; episode: %s; features %+v",
		len(off.opened), len(on.opened), episode, len(on.episodes), on.episodes[0].Evidence.Detail, on.episodes[0].Features)

	// The same step, and from minute 80 an upload on every device
	// the step left unreported.
	uploader := -1
	for k := 19; k >= 0; k-- {
		if _, ok := on.opened["m-"+string(rune('a'+k))]; !ok {
			uploader = k
		}
	}
	if uploader < 0 {
		t.Fatal("every meter reported an incident of its own")
	}
	upload := func(dev, i int, v *features.Vector) {
		step(dev, i, v)
		if dev == uploader && i >= 80 {
			scale(v, 1, 20)
		}
	}
	up := runFleet(t, incidents.Rule{}, upload)
	name := "m-" + string(rune('a'+uploader))
	found := false
	for _, o := range up.opened[name] {
		found = found || o.at >= 80
	}
	if !found || len(up.episodes) == 0 {
		t.Errorf("an upload on %s during the episode: it reported %v (%d fleet events); want an incident reported from minute 80", name, up.opened[name], len(up.episodes))
	}
	if len(up.opened) > len(on.opened)+1 {
		t.Errorf("an upload on %s: %d devices reported, against %d without it", name, len(up.opened), len(on.opened))
	}
	t.Logf("upload on %s during the episode: it reported %v", name, up.opened[name])

	// The offline judgement groups the same way: one incident for the
	// episode, and fewer in all than with fleet episodes off.
	_, offlineOff, err := JudgeOffline(on.model, IncidentRule(DetectorConfig{Incident: incidents.Rule{FleetMin: -1}}), on.series, nil)
	if err != nil {
		t.Fatal(err)
	}
	js, offlineOn, err := JudgeOffline(on.model, IncidentRule(DetectorConfig{}), on.series, nil)
	if err != nil {
		t.Fatal(err)
	}
	if offlineOff < 15 || offlineOn >= offlineOff {
		t.Errorf("offline: %d incidents with fleet episodes on, %d off", offlineOn, offlineOff)
	}
	// The episode's incident holds the windows of the devices it absorbed.
	devicesOf := map[int]map[int]bool{}
	for k, s := range on.series {
		first := len(s.Vectors) * k // the judgements come series after series
		for i := range s.Vectors {
			if j := js[first+i]; j.Incident >= 0 {
				if devicesOf[j.Incident] == nil {
					devicesOf[j.Incident] = map[int]bool{}
				}
				devicesOf[j.Incident][k] = true
			}
		}
	}
	most := 0
	for _, devs := range devicesOf {
		most = max(most, len(devs))
	}
	if most < 5 {
		t.Errorf("offline: no incident holds the windows of 5 devices or more (at most %d): the episode absorbed none", most)
	}
	t.Logf("offline: %d incidents with fleet episodes off, %d on; the episode holds the windows of %d devices", offlineOff, offlineOn, most)

	two := func(dev, i int, v *features.Vector) {
		if dev < 2 {
			step(dev, i, v)
		}
	}
	offTwo := runFleet(t, incidents.Rule{FleetMin: -1}, two)
	onTwo := runFleet(t, incidents.Rule{}, two)
	if len(onTwo.episodes) != 0 || len(onTwo.opened) != len(offTwo.opened) || len(onTwo.opened) != 2 {
		t.Errorf("a rise on two meters: %d device incidents and %d fleet events, against %d with fleet episodes off; want 2, 0, 2",
			len(onTwo.opened), len(onTwo.episodes), len(offTwo.opened))
	}
}

// TestFleetEpisodeLeavesAnOutbreakReported: when 14 of 20 meters flood
// together from minute 70 — half as many flows again, in small packets: a
// flood not extreme on its own, so that an episode could absorb it — every
// flooding meter is reported on its own, as with fleet episodes off (the
// thirteenth session's episodes reported none of the 14): its peers doing
// the same vouch for how much a device does, never for
// hosts it has not met or for flood- and scan-shaped traffic (fleetJudge).
// Both a flood on a host new to the meters and one on a host they know
// are reported.
// TestFleetEpisodeSurvivesARestart: the service restarted while a
// profile-wide step's episode is open reports no more of the step than it
// did before the restart: no device incident, no second episode. Without
// the episode's state (as before it was checkpointed) a restart 20 minutes
// into the step reported 6 of the 20 meters and opened the episode again.
func TestFleetEpisodeSurvivesARestart(t *testing.T) {
	step := func(dev, i int, v *features.Vector) {
		if i >= 70 {
			scale(v, 1.5, 1)
		}
	}
	on := runFleet(t, incidents.Rule{}, step)
	for _, restart := range []int{75, 90} {
		for _, restore := range []bool{false, true} {
			re := runFleetRestarted(t, incidents.Rule{}, step, restart, restore)
			var after []string
			for dev, os := range re.opened {
				for _, o := range os {
					if o.at >= restart {
						after = append(after, fmt.Sprintf("%s at %d by %s", dev, o.at, o.by))
					}
				}
			}
			t.Logf("restart at minute %d, episode restored %v: %d devices reported incidents (%d without a restart), %d fleet events (%d); reported after the restart: %v",
				restart, restore, len(re.opened), len(on.opened), len(re.episodes), len(on.episodes), after)
			if restore && (len(after) > 0 || len(re.episodes) != len(on.episodes)) {
				t.Errorf("restart at minute %d: %d device incidents reported after it (%v) and %d fleet events, against none and %d without a restart",
					restart, len(after), after, len(re.episodes), len(on.episodes))
			}
		}
	}
}

func TestFleetEpisodeLeavesAnOutbreakReported(t *testing.T) {
	for _, newHost := range []bool{true, false} {
		flood := func(dev, i int, v *features.Vector) {
			if dev >= 14 || i < 70 {
				return
			}
			extra := v[features.Flows] / 2
			v[features.Flows] += extra
			v[features.SmallPacketFlows] += extra
			v[features.Packets] += 3 * extra
			v[features.BytesOut] += 3 * 64 * extra
			v[features.DistinctDst]++
			if newHost {
				v[features.NewDst] = 1
			}
		}
		off := runFleet(t, incidents.Rule{FleetMin: -1}, flood)
		on := runFleet(t, incidents.Rule{}, flood)
		for k := range 14 {
			dev := "m-" + string(rune('a'+k))
			if len(on.opened[dev]) == 0 {
				t.Errorf("new host %v: flooding meter %s was not reported with fleet episodes on (off: %v)", newHost, dev, off.opened[dev])
			}
		}
		if len(on.opened) != len(off.opened) {
			t.Errorf("new host %v: %d meters reported with fleet episodes on, %d off", newHost, len(on.opened), len(off.opened))
		}
		t.Logf("new host %v: %d meters reported with fleet episodes on, %d off; %d fleet events", newHost, len(on.opened), len(off.opened), len(on.episodes))
	}
}

// TestAbsorbedIncidentStaysWhileItsRestIsNotAnomalous: an episode joins an
// incident only on a window whose rest off the episode's direction counts
// towards no rule, and releases it only on a window whose rest is
// anomalous. A rest merely elevated is what ordinary windows show now and
// then; released on one, a device of a profile-wide step whose baseline
// had not yet followed was reported on its next raised window.
func TestAbsorbedIncidentStaysWhileItsRestIsNotAnomalous(t *testing.T) {
	run := runFleet(t, incidents.Rule{}, func(dev, i int, v *features.Vector) {})
	m := run.model
	var f fleetJudge
	f.dir[features.Flows], f.dir[features.Packets], f.n = 3, 3, 1 // a step of flows
	rule := IncidentRule(DetectorConfig{})
	var elevated, anomalous []float64
	for x := 0.1; x < 40 && anomalous == nil; x += 0.1 {
		r := make([]float64, models.ResidualDims)
		r[features.Flows], r[features.Packets] = 3, 3 // along the step
		r[features.BytesPerPacket] = x                // and off it
		var rest [models.ResidualDims]float64
		copy(rest[:], r)
		rest[features.Flows], rest[features.Packets] = 0, 0
		score := []float64{0}
		if err := m.Forest().ScoreBatch(score, rest[:]); err != nil {
			t.Fatal(err)
		}
		j := m.Judge(rest[:], score[0])
		switch {
		case j.Anomalous:
			anomalous = r
		case counts(rule, j) && elevated == nil:
			elevated = r
		}
	}
	if elevated == nil || anomalous == nil {
		t.Fatalf("no rest found that counts without being anomalous (%v), or none anomalous (%v)", elevated, anomalous)
	}
	if f.explained(rule, m, elevated) || !f.stillExplained(rule, m, elevated) {
		t.Errorf("a rest that counts but is not anomalous: explained %v (want false: no incident joins on it), still explained %v (want true: none is released on it)",
			f.explained(rule, m, elevated), f.stillExplained(rule, m, elevated))
	}
	if f.stillExplained(rule, m, anomalous) {
		t.Error("an anomalous rest keeps its incident absorbed")
	}
}

// TestEpisodeVouchesForAnIncidentOpenedBeforeIt: a device whose incident
// opened, and was reported, in the episode's first minute before the
// minute's tally opened the episode never joins it; while the episode is
// open, its windows that the episode explains teach its baseline all the
// same, so that it follows its peers rather than staying anomalous for
// hours. A window off the episode's direction, or any window once no
// episode is open, does not teach.
func TestEpisodeVouchesForAnIncidentOpenedBeforeIt(t *testing.T) {
	run := runFleet(t, incidents.Rule{}, func(dev, i int, v *features.Vector) {})
	m := run.model
	rule := IncidentRule(DetectorConfig{})
	judge := func(r []float64) models.Judgement {
		score := []float64{0}
		if err := m.Forest().ScoreBatch(score, r); err != nil {
			t.Fatal(err)
		}
		return m.Judge(r, score[0])
	}
	step := make([]float64, models.ResidualDims)
	step[features.Flows], step[features.Packets] = 12, 12 // the profile's step
	off := make([]float64, models.ResidualDims)
	copy(off, step)
	off[features.BytesPerPacket] = 40 // and far off it
	js, jo := judge(step), judge(off)
	if !js.Anomalous || !jo.Anomalous {
		t.Fatalf("the test's windows are not anomalous (levels %.2f, %.2f): it shows nothing", js.Level, jo.Level)
	}
	// The device's incident, opened at minute 100 before the episode.
	var st incidents.State
	st.Observe(rule, incidentWindow(100, js, m, &models.DeviceBaseline{}), nil)
	if !st.Open() || st.Absorbed() {
		t.Fatal("the device's incident did not open on its own")
	}
	var f fleetJudge
	for range 10 { // most of the profile raised in minute 100
		f.Observe(rule, 100, true, nil)
	}
	if !f.Open() {
		t.Fatal("no episode opened")
	}
	f.add(step, false)
	for k, c := range []struct {
		r         []float64
		j         models.Judgement
		wantLearn bool
	}{{step, js, true}, {off, jo, false}} {
		s := st
		_, joined, _, learn := f.advance(rule, m, &s, incidentWindow(101+int64(k), c.j, m, &models.DeviceBaseline{}), c.j, c.r, false, nil)
		if joined || learn != c.wantLearn {
			t.Errorf("window %d: joined %v, teaches the baseline %v; want false, %v", k, joined, learn, c.wantLearn)
		}
	}
	var closed fleetJudge // no episode
	s := st
	if _, _, _, learn := closed.advance(rule, m, &s, incidentWindow(101, js, m, &models.DeviceBaseline{}), js, step, false, nil); learn {
		t.Error("an anomalous window of an incident taught the baseline with no episode open")
	}
}
