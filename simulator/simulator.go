package simulator

import (
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/chainwatch/chainwatch/ledgerclient"
	"github.com/chainwatch/chainwatch/ledgerclient/contract"
	"github.com/chainwatch/chainwatch/pipeline/integrity"
	"github.com/chainwatch/chainwatch/pipeline/kafkaconn"
)

// Config configures a simulation. The zero value simulates 48 devices with
// 25 hours of attack-free history (a day for the service's warm-up plus an
// hour of scored baseline), then live traffic at 60× real time with an
// attack every 20 simulated minutes, starting 5 minutes into live time.
type Config struct {
	// Kafka is the cluster the fleet produces to.
	Kafka *kafkaconn.Cluster
	Topic string // default iot.flows
	// Balancer places flow records on partitions. Default kafka.Hash of
	// the record key, the device id: each device on one partition, as the
	// service wants. kafka.RoundRobin spreads them as a producer that keys
	// nothing does.
	Balancer kafka.Balancer
	// Devices in the fleet. Default 48.
	Devices int
	// Seed makes the fleet, its traffic and the attack schedule
	// reproducible.
	Seed uint64
	// Speed is simulated seconds per wall-clock second in the live phase;
	// a negative value produces as fast as possible. Default 60.
	Speed float64
	// History is the attack-free traffic produced at once before the live
	// phase, so the service has a baseline to warm up on. Default 25h;
	// negative means none.
	History time.Duration
	// Duration is how much live event time to produce; zero runs until the
	// context ends.
	Duration time.Duration
	// Start is the event time of the first record. Default: now − History,
	// on a minute boundary.
	Start time.Time
	// FirstAttackAfter is the event time from the start of the live phase
	// to the first attack. Default 5m.
	FirstAttackAfter time.Duration
	// AttackEvery is the event time between attack starts. Default 20m.
	AttackEvery time.Duration
	// FirstTrustAfter and TrustEvery schedule the trust scenarios (rogue
	// device, bad signature, firmware tamper, revocation) in live event
	// time. Defaults 15m and 20m; negative TrustEvery disables them.
	FirstTrustAfter time.Duration
	TrustEvery      time.Duration
	// TelemetryTopic receives each device's signed telemetry, one envelope
	// per simulated minute. Default iot.telemetry.
	TelemetryTopic string
	// LeafTopic is the service's batch index and leaf hashes topic, where
	// the history-tamper scenario finds what is anchored (empty: the
	// default).
	LeafTopic string
	// GroundTruth is the CSV file that receives one row per attack.
	GroundTruth string
	// Resume continues the simulated timeline after the newest record
	// already in the topic, without producing history again, so that a
	// restarted demo carries on where it stopped instead of replaying the
	// past into a stream whose event time has moved on.
	Resume bool
	// Forger lets the history-tamper scenario make the broker serve an
	// altered record; nil skips that scenario (only the embedded broker
	// can be asked).
	Forger HistoryForger
	// Heterogeneity spreads the devices of one profile: each device's
	// traffic rate and flow sizes are its profile's times a factor
	// e^(h·N(0,1)) of its own. Default 0: devices of a profile alike.
	Heterogeneity float64
	// RateScale multiplies every profile's flow rate (Profile.
	// FlowsPerMinute): 0.125 plays a fleet of sparse devices, a flow every
	// one to four minutes, whose windows are mostly empty. Default 1.
	RateScale float64
	// Attacks, when set, is the rotation of attacks played instead of
	// Scenarios at their built-in strength: each an attack kind at an
	// intensity relative to the attacked device's own normal traffic
	// (AttackSpec). Attacks then start every AttackEvery on a device not
	// under attack already, so several may run at once.
	Attacks []AttackSpec
	// AttackLength bounds an attack's duration: each lasts a whole number
	// of minutes drawn from [AttackLength/2, AttackLength). Default 16m.
	AttackLength time.Duration
	// Outbreak, when positive, makes each attack strike that share of the
	// chosen device's profile at once, every struck device with the same
	// target and length: a botnet's flood from every camera, a worm's
	// spread through a profile's firmware. Each struck device has its own
	// ground-truth row. Default 0: one device an attack.
	Outbreak float64
	// Joining, when positive, is the share of the fleet installed during
	// the live phase: registered with the others, each such device sends
	// nothing until a time drawn evenly over the first half of Duration
	// (the first hour when Duration is zero), and is attacked only after
	// it. Default 0: every device sends from the start.
	Joining float64
	// Shift, when set, changes a profile's normal behaviour part-way
	// through the live phase, as a firmware update does: the drift that
	// retraining answers. It is not an attack and has no ground-truth row.
	Shift *Shift
}

// Shift changes every device of Profile from After into the live phase on:
// its flow rate is multiplied by Factor (a camera firmware that streams
// twice as often doubles its flows and its bytes) and, with NewCloud, its
// cloud traffic goes to endpoints it never used before (the vendor's new
// service), the same ones from then on.
type Shift struct {
	Profile  string
	After    time.Duration
	Factor   float64
	NewCloud bool
}

func (c Config) withDefaults() Config {
	if c.RateScale == 0 {
		c.RateScale = 1
	}
	if c.Topic == "" {
		c.Topic = "iot.flows"
	}
	if c.Devices == 0 {
		c.Devices = 48
	}
	if c.Balancer == nil {
		c.Balancer = &kafka.Hash{}
	}
	if c.Speed == 0 {
		c.Speed = 60
	}
	if c.History == 0 {
		c.History = 25 * time.Hour
	}
	if c.History < 0 {
		c.History = 0
	}
	if c.Start.IsZero() {
		c.Start = time.Now().Add(-c.History).Truncate(time.Minute)
	}
	if c.FirstAttackAfter == 0 {
		c.FirstAttackAfter = 5 * time.Minute
	}
	if c.AttackEvery == 0 {
		c.AttackEvery = 20 * time.Minute
	}
	if c.FirstTrustAfter == 0 {
		c.FirstTrustAfter = 15 * time.Minute
	}
	if c.TrustEvery == 0 {
		c.TrustEvery = 20 * time.Minute
	}
	if c.TelemetryTopic == "" {
		c.TelemetryTopic = "iot.telemetry"
	}
	if c.AttackLength == 0 {
		c.AttackLength = 16 * time.Minute
	}
	return c
}

// Validate names the first unusable field.
func (c Config) Validate() error {
	switch {
	case c.Kafka == nil:
		return errors.New("simulate: no Kafka cluster")
	case c.Shift != nil && (c.Shift.Factor <= 0 || c.Shift.After < 0 || c.Shift.Profile == ""):
		return fmt.Errorf("simulate: shift needs a profile, a positive factor and a non-negative start, got %+v", *c.Shift)
	case c.Devices < 0 || c.Devices > 60000:
		return fmt.Errorf("simulate: devices must be in [1, 60000], got %d", c.Devices)
	case c.AttackEvery < 0 || c.FirstAttackAfter < 0:
		return errors.New("simulate: attack timings must be positive")
	case c.Heterogeneity < 0:
		return fmt.Errorf("simulate: heterogeneity must not be negative, got %v", c.Heterogeneity)
	case c.RateScale < 0:
		return fmt.Errorf("simulate: rate scale must not be negative, got %v", c.RateScale)
	case c.Outbreak < 0 || c.Outbreak > 1:
		return fmt.Errorf("simulate: outbreak must be a share in [0, 1], got %v", c.Outbreak)
	case c.Joining < 0 || c.Joining > 1:
		return fmt.Errorf("simulate: joining must be a share in [0, 1], got %v", c.Joining)
	}
	for i, a := range c.Attacks {
		if !slices.Contains(Scenarios, a.Scenario) {
			return fmt.Errorf("simulate: attacks[%d]: unknown scenario %q (want one of %v)", i, a.Scenario, Scenarios)
		}
		if a.Intensity < 0 || (a.Scenario == ScenarioC2Beacon && a.Intensity > 0 && a.Intensity < 1) {
			return fmt.Errorf("simulate: attacks[%d]: intensity %v out of range", i, a.Intensity)
		}
	}
	return nil
}

// Stats counts what a simulation produced.
type Stats struct {
	Records   int64 `json:"records"`
	Telemetry int64 `json:"telemetry"`
	Attacks   int   `json:"attacks"`
}

// Simulator produces a fleet's flows.
type Simulator struct {
	cfg     Config
	Fleet   []*Device
	rng     *rand.Rand
	log     *slog.Logger
	attacks []*Attack
	// scheduled counts the attacks scheduled (an outbreak is one), which
	// the rotation steps through.
	scheduled int
	// trust scenarios draw from their own stream, so that adding them
	// leaves the behaviour traffic of a seed unchanged.
	trust    []*trustEvent
	trustRng *rand.Rand
	// trustSkipped counts scenarios skipped for want of a device, so the
	// rotation moves on to the next scenario.
	trustSkipped int
	// tampered counts history-tamper scenarios played, on the anchored
	// ranges in tamperedAnchors.
	tampered        int
	tamperedAnchors map[string]bool
	// anchored reads what is anchored, its batch index read once and
	// then only for what is new (the history-tamper scenario).
	anchored *integrity.Anchors
	operator *ledgerclient.Client
	truth    *csv.Writer
	file     *os.File
	stats    Stats
	// shiftFrom is when Config.Shift takes effect.
	shiftFrom time.Time
}

// New builds the fleet. Nothing is produced until Run.
func New(cfg Config, log *slog.Logger) (*Simulator, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	fleet := NewFleet(cfg.Devices, cfg.Seed)
	if cfg.Heterogeneity > 0 {
		// Its own stream, so that a seed's fleet is the same with and
		// without heterogeneity but for the scale.
		hr := rand.New(rand.NewPCG(cfg.Seed, 0x4e7e))
		for _, d := range fleet {
			d.scale = math.Exp(cfg.Heterogeneity * hr.NormFloat64())
		}
	}
	if cfg.Joining > 0 {
		// Its own stream too: the same seed plays the same traffic for
		// every device that is on the network.
		jr := rand.New(rand.NewPCG(cfg.Seed, 0x101e))
		span := cfg.Duration / 2
		if span <= 0 {
			span = time.Hour
		}
		live := cfg.Start.Add(cfg.History)
		for _, i := range jr.Perm(len(fleet))[:int(math.Round(cfg.Joining*float64(len(fleet))))] {
			fleet[i].joins = live.Add(time.Duration(jr.Int64N(int64(span))).Truncate(time.Minute))
		}
	}
	return &Simulator{cfg: cfg, Fleet: fleet, rng: rand.New(rand.NewPCG(cfg.Seed, 0x51a7)),
		trustRng: rand.New(rand.NewPCG(cfg.Seed, 0x7e1e)), log: log}, nil
}

// Register records the fleet's birth certificates and its profiles'
// approved firmware on the ledger, as the manufacturer and the operator
// would. Devices already registered are left as they are.
func (s *Simulator) Register(ctx context.Context, manufacturer, operator *ledgerclient.Client) error {
	s.operator = operator
	for _, p := range Profiles {
		if _, err := operator.ApproveFirmware(ctx, contract.Firmware{Profile: p.Name, Hash: FirmwareHash(p.Name), Version: "1.4.2"}); err != nil {
			return fmt.Errorf("approve firmware of %s: %w", p.Name, err)
		}
	}
	registered := 0
	for _, d := range s.Fleet {
		_, err := manufacturer.RegisterDevice(ctx, contract.Device{
			ID: d.ID, Profile: d.Profile.Name, Owner: "simulated-site", Manufacturer: "chainwatch-sim",
			PublicKey: d.PublicKey, MACs: []string{d.MAC}, IPs: []string{d.IP.String()}, Firmware: d.Firmware,
		})
		switch {
		case err == nil:
			registered++
		case errors.Is(err, contract.ErrConflict):
		default:
			return fmt.Errorf("register %s: %w", d.ID, err)
		}
	}
	// A device revoked in an earlier run was taken off the network then;
	// it stays off.
	onLedger, err := manufacturer.ListDevices(ctx)
	if err != nil {
		return fmt.Errorf("list devices: %w", err)
	}
	revoked := map[string]bool{}
	for _, d := range onLedger {
		if d.Status == contract.DeviceRevoked {
			revoked[d.ID] = true
		}
	}
	retired := 0
	for _, d := range s.Fleet {
		if revoked[d.ID] {
			d.retired = true
			retired++
		}
	}
	s.log.Info("simulated fleet registered on the ledger", "devices", len(s.Fleet), "new", registered, "revoked_earlier", retired)
	return nil
}

// flow is one generated flow before encoding.
type flow struct {
	dev                   *Device
	t                     time.Time
	dst                   netip.Addr
	dstPort, srcPort      uint16
	proto                 string
	bytesOut, bytesIn     uint64
	packetsOut, packetsIn uint64
	tcpFlags              uint8
}

// Run produces the history, then live traffic, until Duration of live event
// time has been produced or ctx ends.
func (s *Simulator) Run(ctx context.Context) (Stats, error) {
	cfg := s.cfg
	w := &kafka.Writer{
		Addr: cfg.Kafka.Addr(), Transport: cfg.Kafka.Transport(), Topic: cfg.Topic, Balancer: cfg.Balancer,
		BatchSize: 5000, BatchBytes: kafkaconn.MaxBatchBytes, BatchTimeout: 5 * time.Millisecond, RequiredAcks: kafka.RequireAll,
	}
	defer w.Close()
	defer func() {
		if s.anchored != nil {
			s.anchored.Index().Close()
		}
	}()
	if cfg.Resume {
		last, err := lastEventTime(ctx, cfg.Kafka, cfg.Topic)
		if err != nil {
			return s.stats, fmt.Errorf("simulate: resume: %w", err)
		}
		if !last.IsZero() {
			cfg.Start = last.Truncate(time.Minute).Add(time.Minute)
			cfg.History = 0
			s.log.Info("simulated timeline resumed after the topic's newest record", "event_time", cfg.Start.Format(time.RFC3339))
		}
	}
	if cfg.GroundTruth != "" {
		flags := os.O_CREATE | os.O_WRONLY | os.O_TRUNC
		if cfg.Resume && cfg.History == 0 {
			flags = os.O_CREATE | os.O_WRONLY | os.O_APPEND
		}
		f, err := os.OpenFile(cfg.GroundTruth, flags, 0o644)
		if err != nil {
			return s.stats, fmt.Errorf("simulate: ground truth: %w", err)
		}
		defer f.Close()
		s.file, s.truth = f, csv.NewWriter(f)
		if info, err := f.Stat(); err == nil && info.Size() == 0 {
			if err := s.truth.Write([]string{"device_id", "profile", "scenario", "start", "end", "intensity"}); err != nil {
				return s.stats, err
			}
			s.truth.Flush()
		}
	}

	tw := &kafka.Writer{
		Addr: cfg.Kafka.Addr(), Transport: cfg.Kafka.Transport(), Topic: cfg.TelemetryTopic, Balancer: &kafka.Hash{},
		BatchSize: 5000, BatchTimeout: 5 * time.Millisecond, RequiredAcks: kafka.RequireAll,
	}
	defer tw.Close()
	liveStart := cfg.Start.Add(cfg.History)
	if cfg.Shift != nil {
		s.shiftFrom = liveStart.Add(cfg.Shift.After)
	}
	nextAttack := liveStart.Add(cfg.FirstAttackAfter)
	nextTrust := liveStart.Add(cfg.FirstTrustAfter)
	var telemetry []kafka.Message
	var buf []flow
	var msgs []kafka.Message
	wallStart := time.Now()
	for minute := cfg.Start; ; minute = minute.Add(time.Minute) {
		if cfg.Duration > 0 && !minute.Before(liveStart.Add(cfg.Duration)) {
			break
		}
		live := !minute.Before(liveStart)
		if live && cfg.Speed > 0 {
			// Pace the live phase: minute m is due at wall start + (m − live start)/speed.
			due := wallStart.Add(time.Duration(float64(minute.Sub(liveStart)) / cfg.Speed))
			if cfg.History > 0 && minute.Equal(liveStart) {
				wallStart = time.Now()
				due = wallStart
			}
			if d := time.Until(due); d > 0 {
				select {
				case <-ctx.Done():
					return s.stats, nil
				case <-time.After(d):
				}
			}
		}
		if err := ctx.Err(); err != nil {
			return s.stats, nil
		}
		if live && !minute.Before(nextAttack) {
			if err := s.schedule(minute); err != nil {
				return s.stats, err
			}
			nextAttack = nextAttack.Add(cfg.AttackEvery)
		}
		if live && cfg.TrustEvery > 0 && !minute.Before(nextTrust) {
			if err := s.scheduleTrust(ctx, minute); err != nil {
				if ctx.Err() != nil { // stopped while a scenario read the ledger or the broker
					return s.stats, nil
				}
				return s.stats, err
			}
			nextTrust = nextTrust.Add(cfg.TrustEvery)
		}
		s.retire(minute)
		buf = s.minuteOfTraffic(minute, buf[:0])
		var err error
		telemetry, err = s.telemetry(minute, append(s.Fleet, s.rogues(minute)...), telemetry[:0])
		if err != nil {
			return s.stats, err
		}
		if err := tw.WriteMessages(ctx, telemetry...); err != nil {
			if ctx.Err() != nil {
				return s.stats, nil
			}
			return s.stats, fmt.Errorf("simulate: produce telemetry to %v: %w", cfg.Kafka.Brokers(), err)
		}
		s.stats.Telemetry += int64(len(telemetry))
		msgs = msgs[:0]
		for i := range buf {
			msgs = append(msgs, kafka.Message{Key: []byte(buf[i].dev.ID), Value: encodeFlow(nil, &buf[i]), Time: buf[i].t})
		}
		// History goes out in large batches; live minutes go out at once.
		if err := w.WriteMessages(ctx, msgs...); err != nil {
			if ctx.Err() != nil {
				return s.stats, nil
			}
			return s.stats, fmt.Errorf("simulate: produce to %v: %w", cfg.Kafka.Brokers(), err)
		}
		s.stats.Records += int64(len(msgs))
		if minute.Equal(liveStart) && cfg.History > 0 {
			s.log.Info("simulated history produced", "records", s.stats.Records, "event_time", cfg.History.String())
		}
	}
	return s.stats, nil
}

// schedule starts the next attack in the rotation at minute: on one
// device, or with Outbreak on a share of its profile.
func (s *Simulator) schedule(minute time.Time) error {
	spec := AttackSpec{Scenario: Scenarios[s.scheduled%len(Scenarios)]}
	if len(s.cfg.Attacks) > 0 {
		spec = s.cfg.Attacks[s.scheduled%len(s.cfg.Attacks)]
	}
	s.scheduled++
	d := s.Fleet[s.rng.IntN(len(s.Fleet))]
	if len(s.cfg.Attacks) > 0 {
		// One attack at a time per device, and none on a retired one.
		for tries := 0; tries < 100 && (d.retired || s.underAttack(d, minute) || minute.Before(d.joins)); tries++ {
			d = s.Fleet[s.rng.IntN(len(s.Fleet))]
		}
	}
	half := max(int(s.cfg.AttackLength/time.Minute)/2, 1)
	length := time.Duration(half+s.rng.IntN(half)) * time.Minute
	first := newAttack(s.rng, spec, d, s.Fleet, minute, length)
	struck := []*Attack{first}
	if s.cfg.Outbreak > 0 {
		var peers []*Device
		size := 0
		for _, p := range s.Fleet {
			if p.Profile.Name != d.Profile.Name {
				continue
			}
			size++
			if p != d && !p.retired && !s.underAttack(p, minute) && !minute.Before(p.joins) {
				peers = append(peers, p)
			}
		}
		s.rng.Shuffle(len(peers), func(i, j int) { peers[i], peers[j] = peers[j], peers[i] })
		n := min(int(math.Ceil(s.cfg.Outbreak*float64(size)))-1, len(peers))
		for _, p := range peers[:max(n, 0)] {
			a := *first
			a.Device = p
			struck = append(struck, &a)
		}
	}
	intensity := ""
	if spec.Intensity > 0 {
		intensity = strconv.FormatFloat(spec.Intensity, 'g', -1, 64)
	}
	for _, a := range struck {
		s.attacks = append(s.attacks, a)
		s.stats.Attacks++
		s.log.Info("simulated attack scheduled", "scenario", spec.Scenario, "intensity", spec.Intensity, "device", a.Device.ID,
			"start", a.Start.Format(time.RFC3339), "end", a.End.Format(time.RFC3339))
		if err := s.writeTruth(a.Device.ID, a.Device.Profile.Name, spec.Scenario, a.Start, a.End, intensity); err != nil {
			return err
		}
	}
	return nil
}

func (s *Simulator) underAttack(d *Device, t time.Time) bool {
	for _, a := range s.attacks {
		if a.Device == d && t.Before(a.End) {
			return true
		}
	}
	return false
}

// writeTruth appends one ground-truth row.
func (s *Simulator) writeTruth(device, profile, scenario string, start, end time.Time, intensity string) error {
	if s.truth == nil {
		return nil
	}
	if err := s.truth.Write([]string{device, profile, scenario, start.Format(time.RFC3339), end.Format(time.RFC3339), intensity}); err != nil {
		return err
	}
	s.truth.Flush()
	return s.truth.Error()
}

// minuteOfTraffic generates every device's flows for one simulated minute.
// Fleet traffic draws from the behaviour stream, rogue devices' from the
// trust stream, and the traffic of a retired device, or of one not yet
// installed (Config.Joining), is drawn and dropped: so a seed's behaviour
// traffic never depends on the trust scenarios.
func (s *Simulator) minuteOfTraffic(minute time.Time, out []flow) []flow {
	for _, d := range s.Fleet {
		n := len(out)
		out = s.deviceTraffic(s.rng, d, minute, out)
		if d.retired || minute.Before(d.joins) {
			out = out[:n]
		}
	}
	for _, d := range s.rogues(minute) {
		out = s.deviceTraffic(s.trustRng, d, minute, out)
	}
	return out
}

// deviceTraffic appends one device's flows for one minute: its usual
// peers at its profile's diurnal rate, plus any attack it is under.
func (s *Simulator) deviceTraffic(rng *rand.Rand, d *Device, minute time.Time, out []flow) []flow {
	hour := float64(minute.Hour()) + float64(minute.Minute())/60
	p := d.Profile
	rate := d.scaled() * s.cfg.RateScale * p.FlowsPerMinute * (1 + p.Diurnal*math.Sin(2*math.Pi*(hour-8)/24))
	shifted := false
	if sh := s.cfg.Shift; sh != nil && p.Name == sh.Profile && !minute.Before(s.shiftFrom) {
		rate *= sh.Factor
		shifted = sh.NewCloud
	}
	for range poisson(rng, rate) {
		pe := pickPeer(rng, p.Peers)
		peer := p.Peers[pe]
		addrs := d.peers[pe]
		dst := addrs[rng.IntN(len(addrs))]
		if shifted && peer.Kind == "cloud" {
			a := dst.As4()
			a[0] ^= 0x40 // 52.x.y.z → 116.x.y.z: a new provider, stable per endpoint
			dst = netip.AddrFrom4(a)
		}
		if peer.Kind == "cloud" && rng.Float64() < 0.003 {
			// Now and then a cloud endpoint moves: a benign new destination.
			dst = netip.AddrFrom4([4]byte{52, 200, byte(rng.IntN(256)), byte(1 + rng.IntN(254))})
		}
		bOut := uint64(lognormal(rng, d.scaled()*peer.BytesOut, 0.35))
		bIn := uint64(lognormal(rng, d.scaled()*peer.BytesIn, 0.35))
		f := flow{dev: d, t: minute.Add(time.Duration(rng.Int64N(int64(time.Minute)))), dst: dst, dstPort: peer.Port,
			srcPort: uint16(1024 + rng.IntN(60000)), proto: peer.Proto, bytesOut: bOut, bytesIn: bIn,
			packetsOut: 1 + bOut/1200, packetsIn: 1 + bIn/1200}
		if peer.Proto == "tcp" {
			f.tcpFlags = 0x1b
		}
		out = append(out, f)
	}
	for _, a := range s.attacks {
		if a.Device == d && a.active(minute) {
			out = a.attackFlows(rng, minute, normal{flows: rate, bytesOut: rate * d.meanBytesOut()}, out)
		}
	}
	return out
}

// scaled is the device's own scale factor (1 without heterogeneity).
func (d *Device) scaled() float64 {
	if d.scale == 0 {
		return 1
	}
	return d.scale
}

// meanBytesOut is the expected bytes sent per flow of the device:
// Σ weight × median × e^(σ²/2) over its profile's peers.
func (d *Device) meanBytesOut() float64 {
	m := 0.0
	for _, p := range d.Profile.Peers {
		m += p.Weight * p.BytesOut
	}
	return d.scaled() * m * math.Exp(0.35*0.35/2)
}

func pickPeer(rng *rand.Rand, peers []Peer) int {
	u := rng.Float64()
	for i, p := range peers {
		if u < p.Weight {
			return i
		}
		u -= p.Weight
	}
	return len(peers) - 1
}

// encodeFlow appends the native JSON encoding of f (README, "Native flow
// schema"). Hand-written because the simulator must outpace the pipeline.
func encodeFlow(b []byte, f *flow) []byte {
	b = append(b, `{"device_id":"`...)
	b = append(b, f.dev.ID...)
	b = append(b, `","time_ms":`...)
	b = strconv.AppendInt(b, f.t.UnixMilli(), 10)
	b = append(b, `,"src_ip":"`...)
	b = f.dev.IP.AppendTo(b)
	b = append(b, `","src_mac":"`...)
	b = append(b, f.dev.MAC...)
	b = append(b, `","src_port":`...)
	b = strconv.AppendUint(b, uint64(f.srcPort), 10)
	b = append(b, `,"dst_ip":"`...)
	b = f.dst.AppendTo(b)
	b = append(b, `","dst_port":`...)
	b = strconv.AppendUint(b, uint64(f.dstPort), 10)
	b = append(b, `,"proto":"`...)
	b = append(b, f.proto...)
	b = append(b, `","bytes_out":`...)
	b = strconv.AppendUint(b, f.bytesOut, 10)
	b = append(b, `,"bytes_in":`...)
	b = strconv.AppendUint(b, f.bytesIn, 10)
	b = append(b, `,"packets_out":`...)
	b = strconv.AppendUint(b, f.packetsOut, 10)
	b = append(b, `,"packets_in":`...)
	b = strconv.AppendUint(b, f.packetsIn, 10)
	b = append(b, `,"tcp_flags":`...)
	b = strconv.AppendUint(b, uint64(f.tcpFlags), 10)
	return append(b, '}')
}
