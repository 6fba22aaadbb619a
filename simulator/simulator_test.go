package simulator

import (
	"bytes"
	"context"
	"io"
	"log/slog"
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
