package pipeline

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/chainwatch/chainwatch/models"
	"github.com/chainwatch/chainwatch/pipeline/incidents"
)

// TestNewDeviceFarFromItsProfileSettles: a meter first seen after the
// model was trained, ten times as busy as the meters training saw, is
// judged against the profile prior. Its baseline, young, learns every
// window, so the incident its first windows open closes within the hour
// and its later windows are normal — where a baseline that learned only
// normal windows never moved, and the device stayed in one incident.
func TestNewDeviceFarFromItsProfileSettles(t *testing.T) {
	d := meterDetector(t, incidents.Rule{})
	t0 := time.Date(2026, 11, 24, 0, 0, 0, 0, time.UTC)
	states := make([]*deviceState, 21)
	for k := range states {
		states[k] = newDeviceState("m-"+string(rune('a'+k)), "meter")
	}
	ctx := context.Background()
	var events []string
	lastAnomalous := -1
	for i := range 150 {
		var minute []ClosedWindow
		for k, st := range states {
			if k == 20 && i < 70 {
				continue // installed at minute 70
			}
			rng := rand.New(rand.NewPCG(uint64(i), uint64(k)))
			flows := float64(3 + rng.IntN(4))
			if k == 20 {
				flows *= 10
			}
			minute = append(minute, meterWindow(st, t0.Add(time.Duration(i)*time.Minute), meterVector(rng, flows)))
		}
		verdicts, err := d.ScoreWindows(ctx, minute, nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range verdicts {
			for _, a := range v.Alerts {
				if a.DeviceID == "m-u" && a.Incident != nil {
					events = append(events, fmt.Sprintf("%s at %d", a.Incident.Status, i))
				}
			}
		}
		if i >= 70 {
			if j := d.Model("meter"); j != nil && states[20].baseline.Started() {
				r := make([]float64, models.ResidualDims)
				j.Residuals(&states[20].baseline, &minute[len(minute)-1].Vector, r)
				s := make([]float64, 1)
				if err := j.Forest().ScoreBatch(s, r); err != nil {
					t.Fatal(err)
				}
				if j.Judge(r, s[0]).Anomalous {
					lastAnomalous = i
				}
			}
		}
	}
	if n := len(events); n > 0 && events[n-1][:6] != string(incidents.Closed) {
		t.Fatalf("the new meter's incident never closed: %v", events)
	}
	if lastAnomalous >= 130 {
		t.Errorf("the new meter's windows were still anomalous at minute %d, an hour after it was installed", lastAnomalous)
	}
	t.Logf("the new meter, ten times as busy: incident events %v; last anomalous window at minute %d; baseline weight %.0f",
		events, lastAnomalous, states[20].baseline.Weight)
}
