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
