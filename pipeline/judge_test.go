package pipeline

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chainwatch/chainwatch/ledgerclient/contract"
	"github.com/chainwatch/chainwatch/models/features"
	"github.com/chainwatch/chainwatch/pipeline/incidents"
)

// TestInRunsCoversEveryIndexOnce: inRuns hands every index of [0, n) to
// exactly one run, whatever n and the number of workers, and returns the
// runs' errors.
func TestInRunsCoversEveryIndexOnce(t *testing.T) {
	for _, n := range []int{0, 1, runMin - 1, runMin, runMin + 1, 1000, 4097} {
		for _, workers := range []int{1, 2, 3, 8} {
			seen := make([]atomic.Int32, n)
			runs := atomic.Int32{}
			err := inRuns(n, workers, func(lo, hi int) error {
				runs.Add(1)
				if n >= runMin && workers > 1 && lo%64 != 0 {
					t.Errorf("n=%d workers=%d: run starts at %d, not on a 64-window block", n, workers, lo)
				}
				for i := lo; i < hi; i++ {
					seen[i].Add(1)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			for i := range seen {
				if c := seen[i].Load(); c != 1 {
					t.Fatalf("n=%d workers=%d: index %d handed out %d times", n, workers, i, c)
				}
			}
			if n < runMin && runs.Load() != 1 {
				t.Errorf("n=%d workers=%d: %d runs for a batch under runMin, want 1", n, workers, runs.Load())
			}
			if n >= runMin && workers > 1 && runs.Load() < 2 {
				t.Errorf("n=%d workers=%d: %d run, want the batch split", n, workers, runs.Load())
			}
		}
	}
	boom := errors.New("boom")
	err := inRuns(1000, 4, func(lo, _ int) error {
		if lo > 0 {
			return fmt.Errorf("run at %d: %w", lo, boom)
		}
		return nil
	})
	if !errors.Is(err, boom) {
		t.Fatalf("inRuns returned %v, want the runs' error", err)
	}
}

// TestBatchJudgedOnEveryCoreAsOnOne: a minute of 300 meters (enough for
// judgeRun to split it over the cores), some of them flooding, scanning or
// meeting new hosts, is judged the same on one core as on four: every
// window's level and every alert, minute after minute, as the devices'
// baselines and incidents move on.
func TestBatchJudgedOnEveryCoreAsOnOne(t *testing.T) {
	judgeAll := func(procs int) (out []string, alerts int) {
		defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(procs))
		d := meterDetector(t, incidents.Rule{})
		const devices = 300
		states := make([]*deviceState, devices)
		for k := range states {
			states[k] = newDeviceState(fmt.Sprintf("m-%03d", k), "meter")
		}
		for i := range 90 {
			verdicts := judgeMeterMinute(t, d, states, i, func(k int, v *features.Vector) {
				if i >= 70 && k%37 == 0 { // a flood
					v[features.Flows] *= 30
					v[features.SmallPacketFlows] = v[features.Flows]
				}
				if i >= 75 && k%41 == 1 { // a scan
					v[features.DistinctDstPorts], v[features.NewDstPorts] = 80, 80
				}
				if i >= 65 && k%53 == 2 && i%2 == 0 { // a beacon's host
					v[features.NewDst], v[features.DistinctDst] = 1, 2
				}
			})
			for k, v := range verdicts {
				for _, a := range v.Alerts {
					alerts++
					out = append(out, fmt.Sprintf("minute %d window %d: %s %s %s score %.12f features %v", i, k, a.DeviceID, a.Incident.Status, a.Incident.OpenedBy, a.Score, a.Features))
				}
			}
			if i >= 61 {
				for _, st := range states {
					out = append(out, fmt.Sprintf("minute %d %s baseline %v", i, st.id, st.baseline.Mean))
				}
			}
		}
		if d.Model("meter") == nil {
			t.Fatal("no model after the warm-up")
		}
		return out, alerts
	}
	one, alerts := judgeAll(1)
	four, _ := judgeAll(4)
	if alerts == 0 {
		t.Fatal("no alert on one core: the test judges nothing worth comparing")
	}
	if !slices.Equal(one, four) {
		for i := range min(len(one), len(four)) {
			if one[i] != four[i] {
				t.Fatalf("judged differently on four cores than on one, first at line %d:\none:  %s\nfour: %s", i, one[i], four[i])
			}
		}
		t.Fatalf("judged differently on four cores than on one: %d lines against %d", len(four), len(one))
	}
}

// TestIncidentExplainedByTheWindowsThatOpenedIt: a meter sends three
// small-packet flows in minute 70 (it never does) and twice its bytes
// in minute 71, and the k-of-n rule opens its incident on minute 71. The
// opening alert names what drove both windows, the small-packet flows
// first — though the window it opened on had none — with their value in
// minute 70. An upload of twenty times its bytes in minutes 100–101, long
// after that incident closed, is explained by itself alone.
func TestIncidentExplainedByTheWindowsThatOpenedIt(t *testing.T) {
	d := meterDetector(t, incidents.Rule{})
	states := make([]*deviceState, 20)
	for k := range states {
		states[k] = newDeviceState(fmt.Sprintf("m-%02d", k), "meter")
	}
	var openings []*contract.Alert
	var minutes []int
	for i := range 110 {
		verdicts := judgeMeterMinute(t, d, states, i, func(k int, v *features.Vector) {
			if k != 0 {
				return
			}
			switch {
			case i == 70:
				v[features.SmallPacketFlows] = 3
			case i == 71:
				v[features.BytesOut] *= 2
			case i == 100 || i == 101:
				v[features.BytesOut] *= 20
			}
		})
		for _, v := range verdicts {
			for _, a := range v.Alerts {
				if a.DeviceID == "m-00" && a.Incident != nil && a.Incident.Status == string(incidents.Opened) {
					openings, minutes = append(openings, a), append(minutes, i)
				}
			}
		}
	}
	if len(openings) != 2 || minutes[0] != 71 || minutes[1] < 100 || minutes[1] > 101 {
		t.Fatalf("m-00 opened incidents in minutes %v, want one in minute 71 and one in minute 100 or 101", minutes)
	}
	first := openings[0].Features
	if len(first) < 2 || first[0].Feature != "small_packet_flows" || first[0].Value != 3 || first[0].Share < 0.3 {
		t.Fatalf("the incident opened on minute 71 is explained by %+v; want the small-packet flows of minute 70 first", first)
	}
	if !slices.ContainsFunc(first, func(c contract.Contribution) bool { return c.Feature == "bytes_out" && c.Share > 0.1 }) {
		t.Errorf("the incident opened on minute 71 is explained by %+v; want minute 71's bytes among its features", first)
	}
	second := openings[1].Features
	if len(second) == 0 || second[0].Feature != "bytes_out" {
		t.Fatalf("the upload's incident is explained by %+v; want bytes_out first", second)
	}
	for _, c := range second {
		if c.Feature == "small_packet_flows" && c.Share > 0 {
			t.Errorf("the upload's incident is explained by %+v: the small-packet flows of an incident closed half an hour before still count", second)
		}
	}
}

// judgeMeterMinute judges minute i of meters (each meter's window as
// meterVector draws it, one destination, then changed by change) and
// returns the verdicts.
func judgeMeterMinute(t *testing.T, d *Detector, states []*deviceState, i int, change func(k int, v *features.Vector)) []Verdict {
	t.Helper()
	t0 := time.Date(2026, 11, 24, 0, 0, 0, 0, time.UTC)
	minute := make([]ClosedWindow, 0, len(states))
	for k, st := range states {
		rng := rand.New(rand.NewPCG(uint64(i), uint64(k)))
		v := meterVector(rng, float64(3+rng.IntN(4)))
		v[features.DistinctDst] = 1
		change(k, &v)
		minute = append(minute, meterWindow(st, t0.Add(time.Duration(i)*time.Minute), v))
	}
	verdicts, err := d.ScoreWindows(context.Background(), minute, nil)
	if err != nil {
		t.Fatal(err)
	}
	return verdicts
}
