package simulator

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/chainwatch/chainwatch/pipeline/decode"
	"github.com/chainwatch/chainwatch/pipeline/integrity"
)

// Trust scenarios, on their own schedule and random stream so that they
// leave the behaviour traffic exactly as it would be without them.
const (
	ScenarioRogueDevice    = "rogue_device"    // an unregistered device joins the network
	ScenarioRevokedDevice  = "revoked_device"  // the operator revokes a device that keeps talking
	ScenarioBadSignature   = "bad_signature"   // a device's telemetry is signed with a foreign key
	ScenarioFirmwareTamper = "firmware_tamper" // a device runs firmware nobody approved
	ScenarioHistoryTamper  = "history_tamper"  // a compromised broker serves an anchored record altered
)

// TrustScenarios lists them in schedule order.
var TrustScenarios = []string{ScenarioRogueDevice, ScenarioBadSignature, ScenarioFirmwareTamper, ScenarioRevokedDevice, ScenarioHistoryTamper}

// HistoryForger is what the history-tamper scenario needs of the broker:
// making it serve one record altered, as a compromised broker or a
// doctored disk would. pipeline.EmbeddedBroker has it; without one the
// scenario is skipped.
type HistoryForger interface {
	ForgeRecord(ctx context.Context, topic string, partition int32, offset int64, forge func([]byte) []byte) error
}

// trustEvent is one scheduled trust scenario.
type trustEvent struct {
	scenario   string
	device     *Device
	start, end time.Time
	foreignKey ed25519.PrivateKey
	revoked    bool
}

func (e *trustEvent) active(t time.Time) bool { return !t.Before(e.start) && t.Before(e.end) }

// newRogue makes an unregistered device that claims an id of its own.
func newRogue(rng *rand.Rand, n int) *Device {
	seed := make([]byte, ed25519.SeedSize)
	for i := range seed {
		seed[i] = byte(rng.Uint32())
	}
	priv := ed25519.NewKeyFromSeed(seed)
	return &Device{
		ID: fmt.Sprintf("rogue-%04d", n), Profile: &Profiles[3],
		IP:  netip.AddrFrom4([4]byte{10, 99, 0, byte(1 + n%250)}),
		MAC: fmt.Sprintf("02:00:0a:63:00:%02x", 1+n%250), PublicKey: priv.Public().(ed25519.PublicKey), PrivateKey: priv,
		Firmware: FirmwareHash("gateway"),
		peers:    [][]netip.Addr{{cloudAddr(3, 0, 1)}, {cloudAddr(3, 1, 1)}, {siteServer(3, 2)}},
	}
}

// scheduleTrust starts the next trust scenario at minute.
func (s *Simulator) scheduleTrust(ctx context.Context, minute time.Time) error {
	scenario := TrustScenarios[(len(s.trust)+s.trustSkipped+s.tampered)%len(TrustScenarios)]
	if scenario == ScenarioHistoryTamper {
		return s.tamperHistory(ctx)
	}
	length := time.Duration(5+s.trustRng.IntN(6)) * time.Minute
	e := &trustEvent{scenario: scenario, start: minute, end: minute.Add(length)}
	switch scenario {
	case ScenarioRogueDevice:
		e.device = newRogue(s.trustRng, len(s.trust)+1)
	default:
		// A device not already under a trust scenario and never revoked.
		var eligible []*Device
		active := 0
		for _, d := range s.Fleet {
			if !d.retired {
				active++
				if !s.underTrustScenario(d, minute) {
					eligible = append(eligible, d)
				}
			}
		}
		// Revoked devices leave the network for good, so a long run would
		// revoke the whole fleet: revocations stop once half of it is gone.
		if len(eligible) == 0 || scenario == ScenarioRevokedDevice && 2*(active-1) < len(s.Fleet) {
			s.log.Info("simulated trust scenario skipped: no device left to play it", "scenario", scenario,
				"active_devices", active, "eligible_devices", len(eligible))
			s.trustSkipped++
			return nil
		}
		e.device = eligible[s.trustRng.IntN(len(eligible))]
	}
	if scenario == ScenarioBadSignature {
		_, e.foreignKey, _ = ed25519.GenerateKey(chacha(s.trustRng))
	}
	if scenario == ScenarioRevokedDevice {
		if s.operator == nil {
			s.trustSkipped++
			return nil // no ledger to revoke on: skip rather than record a false ground truth
		}
		// Revoked as of the scenario's event time, which the simulation's
		// compressed clock puts anywhere relative to the ledger's.
		if _, err := s.operator.RevokeDeviceFrom(ctx, e.device.ID, "simulated: reported stolen", minute); err != nil {
			return fmt.Errorf("simulate: revoke %s: %w", e.device.ID, err)
		}
		e.revoked = true
	}
	s.trust = append(s.trust, e)
	s.log.Info("simulated trust scenario scheduled", "scenario", scenario, "device", e.device.ID,
		"start", e.start.Format(time.RFC3339), "end", e.end.Format(time.RFC3339))
	return s.writeTruth(e.device.ID, e.device.Profile.Name, scenario, e.start, e.end, "")
}

func (s *Simulator) underTrustScenario(d *Device, t time.Time) bool {
	for _, e := range s.trust {
		if e.device == d && (e.active(t) || e.revoked) {
			return true
		}
	}
	return false
}

// retire takes devices whose revocation scenario ended off the network, as
// an operator would recover a stolen device.
func (s *Simulator) retire(minute time.Time) {
	for _, e := range s.trust {
		if e.revoked && !minute.Before(e.end) {
			e.device.retired = true
		}
	}
}

// rogues returns the rogue devices active at minute.
func (s *Simulator) rogues(minute time.Time) []*Device {
	var out []*Device
	for _, e := range s.trust {
		if e.scenario == ScenarioRogueDevice && e.active(minute) {
			out = append(out, e.device)
		}
	}
	return out
}

// telemetry appends one signed envelope per device for the minute, with
// the sequence number derived from event time so it keeps rising across
// restarts.
func (s *Simulator) telemetry(minute time.Time, devices []*Device, out []kafka.Message) ([]kafka.Message, error) {
	for _, d := range devices {
		if d.retired {
			continue
		}
		at := minute.Add(time.Duration(s.trustRng.Int64N(int64(time.Minute))))
		t := decode.Envelope{
			DeviceID: d.ID, Seq: uint64(minute.Unix() / 60), TimeMs: at.UnixMilli(), Firmware: d.Firmware,
			Payload: fmt.Appendf(nil, `{"uptime_s":%d,"temp_c":%.1f}`, minute.Unix()%86400, 35+5*s.trustRng.Float64()),
		}
		key := d.PrivateKey
		for _, e := range s.trust {
			if e.device == d && e.active(minute) {
				switch e.scenario {
				case ScenarioBadSignature:
					key = e.foreignKey
				case ScenarioFirmwareTamper:
					sum := sha256.Sum256([]byte("tampered/" + d.Firmware))
					t.Firmware = hex.EncodeToString(sum[:])
				}
			}
		}
		if err := t.Sign(key); err != nil {
			return nil, err
		}
		v, err := json.Marshal(t)
		if err != nil {
			return nil, err
		}
		out = append(out, kafka.Message{Key: []byte(d.ID), Value: v, Time: at})
	}
	return out, nil
}

// chacha adapts a math/rand source to the io.Reader key generation wants,
// keeping scenario keys reproducible from the seed.
func chacha(rng *rand.Rand) *randReader { return &randReader{rng} }

type randReader struct{ rng *rand.Rand }

func (r *randReader) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(r.rng.Uint32())
	}
	return len(p), nil
}

// tamperHistory alters one record of the newest anchored range of the flows
// topic, as served by the broker: the value's bytes_out becomes 1, as an
// intruder hiding an exfiltration after the fact would have it. Anchored
// history no longer matches its root, which the service's audit and any
// verified replay must report. The ground truth names the device of the
// altered record and the range's event-time span.
func (s *Simulator) tamperHistory(ctx context.Context) error {
	if s.cfg.Forger == nil || s.operator == nil {
		s.trustSkipped++
		return nil
	}
	conn, err := s.cfg.Kafka.Dial(ctx)
	if err != nil {
		return fmt.Errorf("simulate history tamper: %w", err)
	}
	parts, err := conn.ReadPartitions(s.cfg.Topic)
	conn.Close()
	if err != nil {
		return fmt.Errorf("simulate history tamper: partitions of %s: %w", s.cfg.Topic, err)
	}
	// Anchors name the topic's stream: its name and id (integrity.StreamOf).
	stream, err := integrity.TopicStream(ctx, s.cfg.Kafka, s.cfg.Topic)
	if err != nil {
		return fmt.Errorf("simulate history tamper: %w", err)
	}
	if s.anchored == nil {
		s.anchored = integrity.NewAnchors(s.operator, integrity.NewLeafTopic(s.cfg.Kafka, s.cfg.LeafTopic))
	}
	var target *integrity.Anchor
	for _, p := range parts {
		anchors, err := s.anchored.List(ctx, stream, int32(p.ID), 0, -1)
		if err != nil {
			return fmt.Errorf("simulate history tamper: anchors: %w", err)
		}
		// The newest range not altered already: each scenario is a
		// finding of its own.
		for i := len(anchors) - 1; i >= 0; i-- {
			if s.tamperedAnchors[anchors[i].ID] {
				continue
			}
			if target == nil || anchors[i].LastTimestamp.After(target.LastTimestamp) {
				target = &anchors[i]
			}
			break
		}
	}
	if target == nil {
		s.log.Info("simulated trust scenario skipped: nothing anchored yet", "scenario", ScenarioHistoryTamper)
		s.trustSkipped++
		return nil
	}
	victim := target.FirstOffset + s.trustRng.Int64N(target.Count)
	var device string
	err = s.cfg.Forger.ForgeRecord(ctx, s.cfg.Topic, target.Partition, victim, func(v []byte) []byte {
		var rec struct {
			DeviceID string `json:"device_id"`
		}
		_ = json.Unmarshal(v, &rec)
		device = rec.DeviceID
		return hideBytesOut(v)
	})
	if err != nil {
		// The scenario is an extra: a broker that cannot be forged (or a
		// run that is ending) skips it rather than stop the simulation.
		if ctx.Err() == nil {
			s.log.Warn("simulated trust scenario skipped: the broker could not be forged", "scenario", ScenarioHistoryTamper, "err", err)
		}
		s.trustSkipped++
		return nil
	}
	s.tampered++
	if s.tamperedAnchors == nil {
		s.tamperedAnchors = map[string]bool{}
	}
	s.tamperedAnchors[target.ID] = true
	profile := ""
	for _, d := range s.Fleet {
		if d.ID == device {
			profile = d.Profile.Name
		}
	}
	s.log.Info("simulated trust scenario scheduled", "scenario", ScenarioHistoryTamper, "device", device,
		"anchor", target.ID, "offset", victim)
	return s.writeTruth(device, profile, ScenarioHistoryTamper, target.FirstTimestamp, target.LastTimestamp, "")
}

// hideBytesOut rewrites a native flow record's bytes_out to 1; a value
// without one gets its last byte changed.
func hideBytesOut(v []byte) []byte {
	out := append([]byte(nil), v...)
	key := []byte(`"bytes_out":`)
	i := bytes.Index(out, key)
	if i < 0 {
		out[len(out)-1] ^= 0x01
		return out
	}
	start := i + len(key)
	end := start
	for end < len(out) && out[end] >= '0' && out[end] <= '9' {
		end++
	}
	return append(append(out[:start:start], '1'), v[end:]...)
}
