package pipeline

import (
	"context"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/chainwatch/chainwatch/models/features"
)

// A profile's first model records the destinations two or more of its
// devices used in the warm-up; a device's first contact with one of them
// after that (its NTP server, used one window in ten by its peers and not
// yet by it) is no new destination, in the windows held while the model
// trained as in those after, and a host no device shares still is.
func TestFirstContactWithAProfilesSharedHostIsNoNews(t *testing.T) {
	d := warmingDetector(t)
	const modbus, ntp, own, stranger = 1001, 1002, 1003, 1004
	t0 := time.Date(2026, 11, 24, 0, 0, 0, 0, time.UTC)
	rng := rand.New(rand.NewPCG(3, 4))
	states := map[string]*deviceState{}
	window := func(dev string, part int32, i int, dsts ...uint64) ClosedWindow {
		if states[dev] == nil {
			states[dev] = newDeviceState(dev, "plc")
		}
		w := features.NewWindow()
		for range 2 + rng.IntN(3) {
			w.Add(features.Flow{Dst: modbus, DstPort: 502, Internal: true, BytesOut: uint64(250 + rng.IntN(100)), PacketsOut: 2, BytesIn: 200, PacketsIn: 2})
		}
		for _, dst := range dsts {
			w.Add(features.Flow{Dst: dst, DstPort: 123, Internal: true, BytesOut: 300, PacketsOut: 2, BytesIn: 250, PacketsIn: 2})
		}
		start := t0.Add(time.Duration(i) * time.Minute)
		return ClosedWindow{DeviceID: dev, Profile: "plc", Start: start, End: start.Add(time.Minute),
			Index: start.Unix() / 60, Partition: part, state: states[dev], window: w}
	}
	score := func(ws ...ClosedWindow) []ClosedWindow {
		t.Helper()
		if _, err := d.ScoreWindows(context.Background(), ws, nil); err != nil {
			t.Fatal(err)
		}
		return ws
	}
	// An hour of warm-up: plc-1 and plc-2 use the NTP server one window
	// in ten, plc-2 also a host of its own; plc-3 only its Modbus master.
	// Partition 1 (plc-slow) lags a minute behind.
	for i := range 60 {
		var one, two []uint64
		if i%10 == 3 {
			one, two = []uint64{ntp}, []uint64{ntp, own}
		}
		score(window("plc-1", 0, i, one...), window("plc-2", 0, i, two...), window("plc-3", 0, i))
		if i < 59 {
			score(window("plc-slow", 1, i))
		}
	}
	// Partition 0's next minute is past the span: held until partition 1
	// covers the span too. plc-3 uses the NTP server for the first time.
	score(window("plc-1", 0, 60), window("plc-2", 0, 60), window("plc-3", 0, 60, ntp))
	if d.Model("plc") != nil {
		t.Fatal("trained before every partition covered the warm-up span")
	}
	score(window("plc-slow", 1, 59))
	m := d.Model("plc")
	if m == nil {
		t.Fatal("no model after the warm-up")
	}
	shared := m.SharedPeers()
	if !shared.Contains(modbus) || !shared.Contains(ntp) || shared.Contains(own) || len(shared) != 4 ||
		!shared.Contains(features.ServiceKey(502)) || !shared.Contains(features.ServiceKey(123)) {
		t.Fatalf("shared destinations %v: want the Modbus master and the NTP server only, and their ports", shared)
	}
	// The held window was observed with the model's shared destinations:
	// its NTP contact was no first contact, so the damped count is still
	// 0 a window later.
	if v := score(window("plc-3", 0, 61))[0].Vector; v[features.FirstContactWindows1h] != 0 {
		t.Fatalf("plc-3's first use of the shared NTP server counted as a first contact: %v", v[features.FirstContactWindows1h])
	}
	got := score(window("plc-4", 0, 62, ntp), window("plc-1", 0, 62, stranger))
	if v := got[0].Vector; v[features.NewDst] != 0 {
		// plc-4 is young: none of its hosts is new yet. It is judged
		// after its first MatureWindows windows below.
		t.Fatalf("a young device: new destinations %v", v[features.NewDst])
	}
	if v := got[1].Vector; v[features.NewDst] != 1 || v[features.FirstContactWindows1h] == 0 {
		t.Fatalf("a host no device shares: new %v, first contacts %v", v[features.NewDst], v[features.FirstContactWindows1h])
	}
	for i := 63; i < 63+features.MatureWindows; i++ {
		score(window("plc-4", 0, i))
	}
	got = score(window("plc-4", 0, 63+features.MatureWindows, ntp))
	if v := got[0].Vector; v[features.NewDst] != 0 || v[features.FirstContactWindows1h] != 0 {
		t.Fatalf("a mature device's first use of the shared NTP server: new %v, first contacts %v", v[features.NewDst], v[features.FirstContactWindows1h])
	}
}
