package pipeline

import (
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/chainwatch/chainwatch/models"
)

// TestWatchedDevicesAreBoundedAndForgotten: the ranking holds TopDevices
// series ordered by peak; per-device series exist only for watched devices,
// at most MaxWatchedDevices; a device that goes quiet for watchSpan loses
// every series of its own.
func TestWatchedDevicesAreBoundedAndForgotten(t *testing.T) {
	m := NewMetrics(prometheus.NewRegistry())
	w := newWatchedDevices(m)
	now := time.Unix(1_800_000_000, 0)
	top := []models.Contribution{{Feature: "flows", Value: 40, Baseline: 4}}
	for i := range MaxWatchedDevices + 20 {
		w.window(fmt.Sprintf("dev-%03d", i), "meter", 0.5+float64(i)/1000, true, top, now)
	}
	w.window("dev-000", "meter", 0.1, false, nil, now) // evicted: lowest peak, no longer watched
	w.window("dev-119", "meter", 0.2, false, top, now) // a normal window of a watched device
	w.alert("dev-119", "behaviour")
	w.alert("nobody", "behaviour")
	w.publish(now)
	if n := testutil.CollectAndCount(m.TopDevices); n != TopDevices {
		t.Errorf("%d ranked, want %d", n, TopDevices)
	}
	if n := testutil.CollectAndCount(m.DeviceScore); n != MaxWatchedDevices {
		t.Errorf("%d device score series, want %d", n, MaxWatchedDevices)
	}
	if v := testutil.ToFloat64(m.TopDevices.WithLabelValues("1", "dev-119", "meter")); v != 0.619 {
		t.Errorf("rank 1: %v, want dev-119's peak 0.619", v)
	}
	if v := testutil.ToFloat64(m.DeviceScore.WithLabelValues("dev-119", "meter")); v != 0.2 {
		t.Errorf("dev-119's latest score %v, want 0.2", v)
	}
	if testutil.ToFloat64(m.DeviceAlerts.WithLabelValues("dev-119", "behaviour")) != 1 || testutil.CollectAndCount(m.DeviceAlerts) != 1 {
		t.Error("alerts of watched devices only")
	}
	later := now.Add(watchSpan + time.Minute)
	w.window("dev-new", "camera", 0.9, true, top, later)
	w.publish(later)
	for name, c := range map[string]prometheus.Collector{"top": m.TopDevices, "score": m.DeviceScore, "value": m.DeviceFeature, "baseline": m.DeviceBaseline} {
		if n := testutil.CollectAndCount(c); n != 1 {
			t.Errorf("%s: %d series after the others went quiet, want 1", name, n)
		}
	}
	if n := testutil.CollectAndCount(m.DeviceAlerts); n != 0 {
		t.Errorf("alerts of forgotten devices remain: %d", n)
	}
}
