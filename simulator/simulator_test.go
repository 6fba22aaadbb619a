package simulator

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/chainwatch/chainwatch/pipeline/kafkaconn"
)

func newTestSim(t *testing.T, seed uint64) *Simulator {
	t.Helper()
	s, err := New(Config{Kafka: kafkaconn.Plain("127.0.0.1:1"), Devices: 24, Seed: seed}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// traffic encodes the fleet's flows for n minutes, skipping devices not in
// the fleet (rogues).
func traffic(s *Simulator, start time.Time, n int) []byte {
	fleet := map[*Device]bool{}
	for _, d := range s.Fleet {
		fleet[d] = true
	}
	var out []byte
	for m := range n {
		for _, f := range s.minuteOfTraffic(start.Add(time.Duration(m)*time.Minute), nil) {
			if fleet[f.dev] {
				out = append(encodeFlow(out, &f), '\n')
			}
		}
	}
	return out
}

func TestSameSeedSameTraffic(t *testing.T) {
	start := time.Date(2026, 11, 24, 0, 0, 0, 0, time.UTC)
	a, b := traffic(newTestSim(t, 3), start, 60), traffic(newTestSim(t, 3), start, 60)
	if len(a) == 0 || !bytes.Equal(a, b) {
		t.Fatalf("same seed gave different traffic (%d vs %d bytes)", len(a), len(b))
	}
	if bytes.Equal(a, traffic(newTestSim(t, 4), start, 60)) {
		t.Fatal("different seeds gave identical traffic")
	}
}

func TestTrustScenariosLeaveBehaviourTrafficUnchanged(t *testing.T) {
	start := time.Date(2026, 11, 24, 0, 0, 0, 0, time.UTC)
	plain := newTestSim(t, 5)
	withTrust := newTestSim(t, 5)
	// A rogue device joins and a device's telemetry is forged, from minute 0.
	for range 2 {
		if err := withTrust.scheduleTrust(context.Background(), start); err != nil {
			t.Fatal(err)
		}
	}
	if withTrust.trust[0].scenario != ScenarioRogueDevice || len(withTrust.rogues(start)) != 1 {
		t.Fatalf("first trust scenario %+v, want an active rogue device", withTrust.trust[0])
	}
	if !bytes.Equal(traffic(plain, start, 30), traffic(withTrust, start, 30)) {
		t.Fatal("trust scenarios changed the fleet's behaviour traffic")
	}
	// The rogue does talk.
	rogueFlows := 0
	for _, f := range withTrust.minuteOfTraffic(start.Add(time.Minute), nil) {
		if f.dev == withTrust.trust[0].device {
			rogueFlows++
		}
	}
	if rogueFlows == 0 {
		t.Fatal("the rogue device sent no flow")
	}
}

// TestOutbreakStrikesAShareOfAProfile: with Outbreak 0.5 one scheduled
// attack strikes half of one profile's devices (rounded up), all with the
// same target and span, each with its own ground-truth row.
func TestOutbreakStrikesAShareOfAProfile(t *testing.T) {
	truth := t.TempDir() + "/truth.csv"
	s, err := New(Config{Kafka: kafkaconn.Plain("127.0.0.1:1"), Devices: 40, Seed: 9, Outbreak: 0.5, GroundTruth: truth,
		Attacks: []AttackSpec{{Scenario: ScenarioDDoS, Intensity: 5}, {Scenario: ScenarioExfiltration, Intensity: 5}}},
		slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	start := time.Date(2026, 11, 24, 0, 0, 0, 0, time.UTC)
	if err := s.schedule(start); err != nil {
		t.Fatal(err)
	}
	first := s.attacks[0]
	size := 0
	for _, d := range s.Fleet {
		if d.Profile.Name == first.Device.Profile.Name {
			size++
		}
	}
	if want := (size + 1) / 2; len(s.attacks) != want || s.stats.Attacks != want {
		t.Fatalf("an outbreak on a profile of %d struck %d devices (stats %d), want %d", size, len(s.attacks), s.stats.Attacks, want)
	}
	seen := map[*Device]bool{}
	for _, a := range s.attacks {
		if a.Device.Profile.Name != first.Device.Profile.Name || a.target != first.target || !a.Start.Equal(first.Start) || !a.End.Equal(first.End) || seen[a.Device] {
			t.Fatalf("attack %+v is not the outbreak's %+v on another device of its profile", a, first)
		}
		seen[a.Device] = true
	}
	// The next attack is the rotation's next kind.
	if err := s.schedule(start.Add(20 * time.Minute)); err != nil {
		t.Fatal(err)
	}
	if last := s.attacks[len(s.attacks)-1]; last.Scenario != ScenarioExfiltration {
		t.Fatalf("second attack %s, want the rotation's exfiltration", last.Scenario)
	}
	if err := (Config{Kafka: kafkaconn.Plain("127.0.0.1:1"), Outbreak: 1.5}).Validate(); err == nil || !strings.Contains(err.Error(), "outbreak") {
		t.Fatalf("outbreak 1.5: %v, want an error naming outbreak", err)
	}
}

// TestJoiningDevicesStaySilentUntilInstalled: with Joining 0.25 a quarter
// of the fleet sends nothing before its installation time, within the
// first half of the live phase, and its usual traffic after it; the
// devices on the network from the start send what they send without
// Joining.
func TestJoiningDevicesStaySilentUntilInstalled(t *testing.T) {
	start := time.Date(2026, 11, 24, 0, 0, 0, 0, time.UTC)
	cfg := Config{Kafka: kafkaconn.Plain("127.0.0.1:1"), Devices: 40, Seed: 9, Start: start, History: time.Hour, Duration: 2 * time.Hour}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	plain, err := New(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Joining = 0.25
	growing, err := New(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	live := start.Add(time.Hour)
	late := map[string]time.Time{}
	for _, d := range growing.Fleet {
		if !d.joins.IsZero() {
			late[d.ID] = d.joins
			if d.joins.Before(live) || !d.joins.Before(live.Add(time.Hour)) {
				t.Errorf("%s installed at %s, want within the live phase's first hour", d.ID, d.joins)
			}
		}
	}
	if len(late) != 10 {
		t.Fatalf("%d devices join late, want 10 of 40", len(late))
	}
	sent := map[string]bool{}
	for m := range 180 {
		minute := start.Add(time.Duration(m) * time.Minute)
		want := map[string]int{}
		for _, f := range plain.minuteOfTraffic(minute, nil) {
			if _, ok := late[f.dev.ID]; !ok {
				want[f.dev.ID]++
			}
		}
		got := map[string]int{}
		for _, f := range growing.minuteOfTraffic(minute, nil) {
			if at, ok := late[f.dev.ID]; ok {
				if minute.Before(at) {
					t.Fatalf("%s sent a flow at %s, before its installation at %s", f.dev.ID, minute, at)
				}
				sent[f.dev.ID] = true
				continue
			}
			got[f.dev.ID]++
		}
		for id, n := range want {
			if got[id] != n {
				t.Fatalf("%s sent %d flows at %s, %d without late devices", id, got[id], minute, n)
			}
		}
	}
	if len(sent) < 8 {
		t.Errorf("only %d of 10 late devices sent anything once installed", len(sent))
	}
}
