package pipeline

import (
	"cmp"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/chainwatch/chainwatch/models"
)

// TopDevices is how many devices chainwatch_top_anomalous_device_score
// ranks.
const TopDevices = 10

// MaxWatchedDevices bounds the devices with series of their own
// (chainwatch_device_*): per-device series for a whole fleet would be
// unbounded, so only devices with an anomalous window in the last
// watchSpan have them, at most this many (the highest peaks win).
const MaxWatchedDevices = 100

// watchSpan is how long an anomalous window keeps its device watched
// (wall-clock time, so panels show what is happening now).
const watchSpan = 15 * time.Minute

// watchedDevices keeps the devices a SOC is looking at — those with an
// anomalous window recently — and publishes, with bounded cardinality:
//   - chainwatch_top_anomalous_device_score{rank,device,profile}: the
//     TopDevices highest peaks;
//   - chainwatch_device_score{device,profile}: each watched device's
//     latest window score, to set against its profile's threshold;
//   - chainwatch_device_feature_value / _baseline{device,feature}: the
//     features that drove its latest window, with its own baseline;
//   - chainwatch_device_alerts{device,kind}: alerts raised for it while
//     watched.
//
// A device leaves, and its series are deleted, once it has gone
// watchSpan without an anomalous window.
type watchedDevices struct {
	mu      sync.Mutex
	top     *prometheus.GaugeVec
	score   *prometheus.GaugeVec
	value   *prometheus.GaugeVec
	base    *prometheus.GaugeVec
	alerts  *prometheus.GaugeVec
	seen    map[string]*watched
	n       atomic.Int32 // len(seen), read without the lock
	updated time.Time
}

type watched struct {
	profile  string
	peak     float64
	at       time.Time // newest anomalous window
	features []string  // whose series are set
	alerts   map[string]float64
}

func newWatchedDevices(m *Metrics) *watchedDevices {
	return &watchedDevices{top: m.TopDevices, score: m.DeviceScore, value: m.DeviceFeature, base: m.DeviceBaseline,
		alerts: m.DeviceAlerts, seen: map[string]*watched{}}
}

// window records a judged window: an anomalous one starts or extends the
// device's watch; any window of a watched device updates its series.
func (t *watchedDevices) window(device, profile string, score float64, anomalous bool, top []models.Contribution, now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	w := t.seen[device]
	if w != nil && now.Sub(w.at) > watchSpan {
		t.forget(device, w)
		w = nil
	}
	if w == nil {
		if !anomalous {
			return
		}
		if len(t.seen) >= MaxWatchedDevices && !t.evictBelow(score) {
			return
		}
		w = &watched{profile: profile, alerts: map[string]float64{}}
		t.seen[device] = w
		t.n.Store(int32(len(t.seen)))
	}
	if anomalous {
		w.peak, w.at = max(w.peak, score), now
	}
	t.score.WithLabelValues(device, profile).Set(score)
	for _, f := range w.features {
		t.value.DeleteLabelValues(device, f)
		t.base.DeleteLabelValues(device, f)
	}
	w.features = w.features[:0]
	for _, c := range top {
		t.value.WithLabelValues(device, c.Feature).Set(c.Value)
		t.base.WithLabelValues(device, c.Feature).Set(c.Baseline)
		w.features = append(w.features, c.Feature)
	}
}

// watching reports whether device is watched (its windows are explained
// for the drill-down).
func (t *watchedDevices) watching(device string) bool {
	if t.n.Load() == 0 {
		return false // the usual case: nothing watched, no lock per window
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.seen[device] != nil
}

// alert counts an alert raised for a watched device.
func (t *watchedDevices) alert(device, kind string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if w := t.seen[device]; w != nil {
		w.alerts[kind]++
		t.alerts.WithLabelValues(device, kind).Set(w.alerts[kind])
	}
}

// evictBelow makes room for a new device with this peak by forgetting the
// watched device with the lowest peak, if that is lower.
func (t *watchedDevices) evictBelow(score float64) bool {
	low, lowest := "", score
	for d, w := range t.seen {
		if w.peak < lowest {
			low, lowest = d, w.peak
		}
	}
	if low == "" {
		return false
	}
	t.forget(low, t.seen[low])
	return true
}

func (t *watchedDevices) forget(device string, w *watched) {
	delete(t.seen, device)
	t.n.Store(int32(len(t.seen)))
	t.score.DeleteLabelValues(device, w.profile)
	for _, f := range w.features {
		t.value.DeleteLabelValues(device, f)
		t.base.DeleteLabelValues(device, f)
	}
	for k := range w.alerts {
		t.alerts.DeleteLabelValues(device, k)
	}
}

// publish expires quiet devices and sets the ranking, at most every few
// seconds.
func (t *watchedDevices) publish(now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if now.Sub(t.updated) < 5*time.Second {
		return
	}
	t.updated = now
	type ranked struct {
		device, profile string
		peak            float64
	}
	var all []ranked
	for d, w := range t.seen {
		if now.Sub(w.at) > watchSpan {
			t.forget(d, w)
			continue
		}
		all = append(all, ranked{d, w.profile, w.peak})
	}
	slices.SortFunc(all, func(a, b ranked) int {
		if c := cmp.Compare(b.peak, a.peak); c != 0 {
			return c
		}
		return cmp.Compare(a.device, b.device)
	})
	t.top.Reset()
	for i, r := range all[:min(len(all), TopDevices)] {
		t.top.WithLabelValues(strconv.Itoa(i+1), r.device, r.profile).Set(r.peak)
	}
}
