// Package campus is a second fleet generator, written apart from the
// simulator package so that detection is not only ever measured on the
// traffic it was developed against. Its devices are a building's —
// thermostats, badge readers, network video recorders, HVAC controllers —
// with other profile shapes and daily cycles: strictly periodic reports, a
// business-hours square wave, bursty uploads with a nightly backup, two
// daily peaks. It writes what a NetFlow/IPFIX exporter behind goflow2 does:
// goflow2's JSON, one record per direction, no device id (the service
// resolves devices from their registered addresses).
package campus

import (
	"context"
	"encoding/csv"
	"fmt"
	"math"
	"math/rand/v2"
	"net/netip"
	"os"
	"strconv"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/chainwatch/chainwatch/pipeline/kafkaconn"
)

// Attack kinds and their intensities, with the meaning simulator.AttackSpec
// gives them (written again here, as another team's generator would).
const (
	DDoS            = "ddos"             // × the device's normal flow rate
	Exfiltration    = "exfiltration"     // × the device's normal bytes sent
	PortScan        = "port_scan"        // distinct ports a minute
	C2Beacon        = "c2_beacon"        // seconds between beacons
	LateralMovement = "lateral_movement" // internal hosts over the attack
)

// VictimSuffix marks ground-truth rows of devices an attack probed (the
// scanned host, the hosts of a lateral movement): "port_scan_victim".
const VictimSuffix = "_victim"

// Attack is an attack kind at an intensity.
type Attack struct {
	Kind      string
	Intensity float64
}

// Config configures a campus fleet run. Zero values are defaults.
type Config struct {
	// Kafka is the cluster the fleet produces to.
	Kafka   *kafkaconn.Cluster
	Topic   string // default iot.flows
	Devices int    // default 60
	Seed    uint64
	// Start is the first record's event time; History is attack-free
	// traffic before the live part of Duration, which carries the attacks.
	Start    time.Time
	History  time.Duration
	Duration time.Duration
	// Heterogeneity spreads devices of one profile by e^(h·N(0,1)).
	// Default 0.6.
	Heterogeneity float64
	Attacks       []Attack
	AttackEvery   time.Duration // default 6m
	AttackLength  time.Duration // default 14m: lengths drawn from [7m, 14m)
	GroundTruth   string        // CSV: device_id,profile,scenario,start,end,intensity
	// CloudPools puts every device's cloud endpoints behind load
	// balancers and its time service on a public pool, as real cloud
	// services are: half of a device's connections to a cloud host go to
	// another address of that host's /24, and a thermostat's NTP
	// exchanges each to a server anywhere (pool.ntp.org). Off by default:
	// each device then keeps its own few addresses.
	CloudPools bool
	// DNSLookups has a device ask the site's resolver (Resolver, UDP 53)
	// before three in ten of its connections to a cloud host, as one does
	// whose cached answer expired: about 70 bytes out and 130 back. Off
	// by default.
	DNSLookups bool
	// FlowLength, when set, has every flow last up to that long (drawn
	// uniformly, from a generator of its own, so that the traffic is
	// otherwise the same), as streams and long sessions do; a record is
	// stamped with its flow's end and produced with the minute its flow
	// began in, so records reach Kafka that much out of event-time order.
	// Default: flows of 50 ms to 2 s.
	FlowLength time.Duration
	// Balancer spreads records over partitions. Default: by key, the
	// initiating device's address, as goflow2 -transport.kafka.hashing
	// keeps an exporter's flows together; kafka.RoundRobin plays a
	// producer that keys nothing.
	Balancer kafka.Balancer
}

// Device is one campus device, for registering it on the ledger.
type Device struct {
	ID, Profile, MAC string
	IP               netip.Addr
	scale            float64
	peers            []netip.Addr
	phase            time.Duration // of its periodic reports
}

type profile struct {
	name string
	// rate is the mean flows a minute at hour h (fractional), at scale 1.
	rate func(h float64) float64
	// flow draws one normal flow: destination index, port, protocol,
	// bytes out and in.
	flow     func(r *rand.Rand, d *Device, h float64) (peer int, port uint16, proto string, out, in float64)
	peers    int
	periodic time.Duration // > 0: reports at this period instead of Poisson arrivals
}

var profiles = []profile{
	{name: "thermostat", periodic: time.Minute, peers: 2,
		flow: func(r *rand.Rand, d *Device, h float64) (int, uint16, string, float64, float64) {
			if r.Float64() < 0.07 {
				return 1, 123, "UDP", 76, 76
			}
			return 0, 8883, "TCP", 420 * math.Exp(0.1*r.NormFloat64()), 310 * math.Exp(0.1*r.NormFloat64())
		}},
	{name: "badge-reader", peers: 1,
		rate: func(h float64) float64 {
			if h >= 7.5 && h < 18.5 {
				return 3
			}
			return 0.15
		},
		flow: func(r *rand.Rand, d *Device, h float64) (int, uint16, string, float64, float64) {
			return 0, 443, "TCP", 900 * math.Exp(0.3*r.NormFloat64()), 1400 * math.Exp(0.3*r.NormFloat64())
		}},
	{name: "nvr", peers: 3,
		rate: func(h float64) float64 {
			if h >= 2 && h < 3 {
				return 6 // nightly backup
			}
			return 1.2
		},
		flow: func(r *rand.Rand, d *Device, h float64) (int, uint16, string, float64, float64) {
			if h >= 2 && h < 3 {
				return 2, 443, "TCP", 40e6 * math.Exp(0.5*r.NormFloat64()), 80e3
			}
			if r.Float64() < 0.3 {
				return 1, 443, "TCP", 1500, 3000
			}
			return 0, 443, "TCP", 3e6 * math.Exp(1.0*r.NormFloat64()), 20e3
		}},
	{name: "hvac", peers: 5,
		rate: func(h float64) float64 {
			return 2 + 3*math.Exp(-(h-7)*(h-7)/4) + 2.5*math.Exp(-(h-17)*(h-17)/4)
		},
		flow: func(r *rand.Rand, d *Device, h float64) (int, uint16, string, float64, float64) {
			return r.IntN(len(d.peers)), 47808, "UDP", 180 * math.Exp(0.25*r.NormFloat64()), 240 * math.Exp(0.25*r.NormFloat64())
		}},
}

// Fleet builds the devices of a run.
func Fleet(cfg Config) []*Device {
	cfg = cfg.withDefaults()
	r := rand.New(rand.NewPCG(cfg.Seed, 0xca4b))
	out := make([]*Device, cfg.Devices)
	counts := map[string]int{}
	for i := range out {
		p := &profiles[i%len(profiles)]
		counts[p.name]++
		d := &Device{
			ID: fmt.Sprintf("%s-%03d", p.name, counts[p.name]), Profile: p.name,
			IP:    netip.AddrFrom4([4]byte{172, 16, byte(1 + i/200), byte(10 + i%200)}),
			MAC:   fmt.Sprintf("0a:ca:00:%02x:%02x:%02x", i>>16&0xff, i>>8&0xff, i&0xff),
			scale: math.Exp(cfg.Heterogeneity * r.NormFloat64()),
			phase: time.Duration(r.Int64N(int64(time.Minute))),
		}
		for k := range p.peers {
			if p.name == "hvac" || p.name == "badge-reader" {
				d.peers = append(d.peers, netip.AddrFrom4([4]byte{172, 16, 0, byte(1 + k + 10*(i%len(profiles)))}))
			} else {
				d.peers = append(d.peers, netip.AddrFrom4([4]byte{34, byte(100 + i%len(profiles)), byte(k), byte(1 + r.IntN(200))}))
			}
		}
		out[i] = d
	}
	return out
}

func (c Config) withDefaults() Config {
	if c.Topic == "" {
		c.Topic = "iot.flows"
	}
	if c.Devices == 0 {
		c.Devices = 60
	}
	if c.Heterogeneity == 0 {
		c.Heterogeneity = 0.6
	}
	if c.AttackEvery == 0 {
		c.AttackEvery = 6 * time.Minute
	}
	if c.AttackLength == 0 {
		c.AttackLength = 14 * time.Minute
	}
	return c
}

func profileOf(name string) *profile {
	for i := range profiles {
		if profiles[i].name == name {
			return &profiles[i]
		}
	}
	return nil
}

// expectedRate is a device's mean flows a minute at hour h.
func expectedRate(p *profile, d *Device, h float64) float64 {
	if p.periodic > 0 {
		return float64(time.Minute) / float64(p.periodic)
	}
	return d.scale * p.rate(h)
}

type record struct {
	start, end   time.Time
	src, dst     netip.Addr
	sport, dport uint16
	proto        string
	bytes, pkts  uint64
	flags        uint8
	key          string
}

type attack struct {
	dev        *Device
	kind       string
	x          float64
	start, end time.Time
	target     netip.Addr
	hosts      []netip.Addr
	next       time.Time
}

// Run produces the fleet's traffic, history first, then the live part
// with attacks, as fast as the broker takes it. It returns the records
// written.
func Run(ctx context.Context, cfg Config, fleet []*Device) (int64, error) {
	cfg = cfg.withDefaults()
	r := rand.New(rand.NewPCG(cfg.Seed, 0x6f10))
	balancer := cfg.Balancer
	if balancer == nil {
		balancer = &kafka.Hash{}
	}
	w := &kafka.Writer{Addr: cfg.Kafka.Addr(), Transport: cfg.Kafka.Transport(), Topic: cfg.Topic, Balancer: balancer,
		BatchSize: 5000, BatchBytes: kafkaconn.MaxBatchBytes, BatchTimeout: 5 * time.Millisecond, RequiredAcks: kafka.RequireAll}
	defer w.Close()
	var truth *csv.Writer
	if cfg.GroundTruth != "" {
		f, err := os.Create(cfg.GroundTruth)
		if err != nil {
			return 0, err
		}
		defer f.Close()
		truth = csv.NewWriter(f)
		defer truth.Flush()
		_ = truth.Write([]string{"device_id", "profile", "scenario", "start", "end", "intensity"})
	}
	var lengths *rand.Rand
	if cfg.FlowLength > 0 {
		lengths = rand.New(rand.NewPCG(cfg.Seed, 0x1e57))
	}
	live := cfg.Start.Add(cfg.History)
	nextAttack := live.Add(cfg.AttackEvery)
	var attacks []*attack
	var recs []record
	var msgs []kafka.Message
	var written int64
	seq := uint32(0)
	for minute := cfg.Start; minute.Before(live.Add(cfg.Duration)); minute = minute.Add(time.Minute) {
		if err := ctx.Err(); err != nil {
			return written, err
		}
		if len(cfg.Attacks) > 0 && !minute.Before(nextAttack) {
			a := newAttack(r, cfg, fleet, attacks, minute, cfg.Attacks[len(attacks)%len(cfg.Attacks)])
			attacks = append(attacks, a)
			if truth != nil {
				x := strconv.FormatFloat(a.x, 'g', -1, 64)
				_ = truth.Write([]string{a.dev.ID, a.dev.Profile, a.kind, a.start.Format(time.RFC3339), a.end.Format(time.RFC3339), x})
				// Devices the attack probes answer it: their reply legs
				// are flows of theirs, and change their behaviour too.
				for _, v := range a.victims(fleet) {
					_ = truth.Write([]string{v.ID, v.Profile, a.kind + VictimSuffix, a.start.Format(time.RFC3339), a.end.Format(time.RFC3339), x})
				}
			}
			nextAttack = nextAttack.Add(cfg.AttackEvery)
		}
		recs = recs[:0]
		h := float64(minute.Hour()) + float64(minute.Minute())/60
		for _, d := range fleet {
			p := profileOf(d.Profile)
			recs = normalMinute(r, p, d, minute, h, cfg, recs)
			for _, a := range attacks {
				if a.dev == d && !minute.Before(a.start) && minute.Before(a.end) {
					recs = a.minute(r, p, minute, h, recs)
				}
			}
		}
		if lengths != nil {
			lengthen(lengths, recs, cfg.FlowLength)
		}
		msgs = msgs[:0]
		for i := range recs {
			seq++
			msgs = append(msgs, kafka.Message{Key: []byte(recs[i].key), Value: recs[i].json(seq), Time: recs[i].end})
		}
		if err := w.WriteMessages(ctx, msgs...); err != nil {
			return written, fmt.Errorf("campus: produce: %w", err)
		}
		written += int64(len(msgs))
	}
	return written, nil
}

// lengthen draws every flow's length anew, up to max, and ends its
// record there, and its reply leg's (the record after it, with the same
// start, that appendExchange wrote).
func lengthen(r *rand.Rand, recs []record, max time.Duration) {
	for i := 0; i < len(recs); i++ {
		end := recs[i].start.Add(time.Duration(r.Int64N(int64(max))))
		recs[i].end = end
		if i+1 < len(recs) && recs[i+1].start.Equal(recs[i].start) && recs[i+1].src == recs[i].dst && recs[i+1].dst == recs[i].src {
			i++
			recs[i].end = end
		}
	}
}

// normalMinute appends one device's normal flows of a minute, each with
// its reply leg.
func normalMinute(r *rand.Rand, p *profile, d *Device, minute time.Time, h float64, cfg Config, out []record) []record {
	var times []time.Time
	if p.periodic > 0 {
		for t := minute.Add(d.phase % p.periodic); t.Before(minute.Add(time.Minute)); t = t.Add(p.periodic) {
			times = append(times, t.Add(time.Duration(r.NormFloat64()*float64(2*time.Second))))
		}
	} else {
		for range poissonDraw(r, d.scale*p.rate(h)) {
			times = append(times, minute.Add(time.Duration(r.Int64N(int64(time.Minute)))))
		}
	}
	for _, t := range times {
		peer, port, proto, bo, bi := p.flow(r, d, h)
		if p.periodic == 0 {
			bo, bi = bo*d.scale, bi*d.scale
		}
		dst := d.peers[peer%len(d.peers)]
		if cfg.DNSLookups && !dst.IsPrivate() && r.Float64() < 0.3 {
			out = appendExchange(r, out, d, t.Add(-20*time.Millisecond), Resolver, 53, "UDP", 70, 130)
		}
		if cfg.CloudPools && !dst.IsPrivate() {
			dst = pooled(r, dst, port)
		}
		out = appendExchange(r, out, d, t, dst, port, proto, bo, bi)
	}
	return out
}

// Resolver is the site's DNS resolver (Config.DNSLookups).
var Resolver = netip.AddrFrom4([4]byte{172, 16, 0, 53})

// pooled is the address a connection to the cloud host dst reaches when
// its service is pooled (Config.CloudPools): NTP any public server, other
// services half the time another address of dst's /24.
func pooled(r *rand.Rand, dst netip.Addr, port uint16) netip.Addr {
	if port == 123 {
		// 20.0.0.0–99.255.255.255: public, none of it private or shared space.
		return netip.AddrFrom4([4]byte{byte(20 + r.IntN(80)), byte(r.IntN(256)), byte(r.IntN(256)), byte(1 + r.IntN(254))})
	}
	if r.Float64() < 0.5 {
		b := dst.As4()
		b[3] = byte(1 + r.IntN(254))
		return netip.AddrFrom4(b)
	}
	return dst
}

// appendExchange appends a flow from the device and, when bi > 0, its
// reply leg, as a one-directional exporter reports them.
func appendExchange(r *rand.Rand, out []record, d *Device, t time.Time, dst netip.Addr, port uint16, proto string, bo, bi float64) []record {
	dur := time.Duration(50+r.IntN(2000)) * time.Millisecond
	sport := uint16(32768 + r.IntN(28000))
	flags := uint8(0)
	if proto == "TCP" {
		flags = 0x1b
		if bi == 0 {
			flags = 0x02
		}
	}
	out = append(out, record{start: t, end: t.Add(dur), src: d.IP, dst: dst, sport: sport, dport: port, proto: proto,
		bytes: uint64(bo), pkts: uint64(bo/1300) + 1, flags: flags, key: d.IP.String()})
	if bi > 0 {
		out = append(out, record{start: t, end: t.Add(dur), src: dst, dst: d.IP, sport: port, dport: sport, proto: proto,
			bytes: uint64(bi), pkts: uint64(bi/1300) + 1, flags: flags, key: d.IP.String()})
	}
	return out
}

func newAttack(r *rand.Rand, cfg Config, fleet []*Device, running []*attack, minute time.Time, spec Attack) *attack {
	d := fleet[r.IntN(len(fleet))]
	for tries := 0; tries < 100; tries++ {
		busy := false
		for _, a := range running {
			busy = busy || (a.dev == d && minute.Before(a.end))
		}
		if !busy {
			break
		}
		d = fleet[r.IntN(len(fleet))]
	}
	half := int(cfg.AttackLength/time.Minute) / 2
	a := &attack{dev: d, kind: spec.Kind, x: spec.Intensity, start: minute,
		end:    minute.Add(time.Duration(half+r.IntN(max(half, 1))) * time.Minute),
		target: netip.AddrFrom4([4]byte{185, byte(r.IntN(250)), byte(r.IntN(250)), byte(1 + r.IntN(250))})}
	if spec.Kind == PortScan || spec.Kind == LateralMovement {
		a.target = netip.AddrFrom4([4]byte{172, 16, byte(1 + r.IntN(2)), byte(10 + r.IntN(200))})
	}
	for range int(spec.Intensity) * boolInt(spec.Kind == LateralMovement) {
		a.hosts = append(a.hosts, netip.AddrFrom4([4]byte{172, 16, byte(r.IntN(4)), byte(1 + r.IntN(250))}))
	}
	return a
}

// victims are the fleet's devices among the attack's targets.
func (a *attack) victims(fleet []*Device) []*Device {
	var out []*Device
	for _, d := range fleet {
		hit := (a.kind == PortScan && d.IP == a.target)
		for _, h := range a.hosts {
			hit = hit || d.IP == h
		}
		if hit && d != a.dev {
			out = append(out, d)
		}
	}
	return out
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// minute appends the attack's flows of one minute.
func (a *attack) minute(r *rand.Rand, p *profile, minute time.Time, h float64, out []record) []record {
	d := a.dev
	at := func() time.Time { return minute.Add(time.Duration(r.Int64N(int64(time.Minute)))) }
	rate := expectedRate(p, d, h)
	switch a.kind {
	case DDoS:
		for range poissonDraw(r, a.x*rate) {
			out = appendExchange(r, out, d, at(), a.target, 123, "UDP", float64(48*(4+r.IntN(12))), 0)
		}
	case Exfiltration:
		// bytes a minute the device normally sends, estimated from a few draws
		var sum float64
		for range 16 {
			_, _, _, bo, _ := p.flow(r, d, h)
			if p.periodic == 0 {
				bo *= d.scale
			}
			sum += bo
		}
		total := a.x * rate * sum / 16
		out = appendExchange(r, out, d, at(), a.target, 443, "TCP", total, total/80)
	case PortScan:
		for _, port := range r.Perm(65535)[:min(int(a.x), 65535)] {
			bi := 0.0
			if r.Float64() < 0.25 {
				bi = 40
			}
			out = appendExchange(r, out, d, at(), a.target, uint16(port+1), "TCP", 44, bi)
		}
	case C2Beacon:
		if a.next.IsZero() {
			a.next = a.start.Add(time.Duration(r.Int64N(int64(3 * time.Second))))
		}
		for ; a.next.Before(minute.Add(time.Minute)); a.next = a.next.Add(time.Duration(a.x * float64(time.Second))) {
			if !a.next.Before(minute) {
				out = appendExchange(r, out, d, a.next, a.target, 443, "TCP", float64(200+r.IntN(100)), float64(120+r.IntN(300)))
			}
		}
	case LateralMovement:
		minutes := max(int(a.end.Sub(a.start)/time.Minute), 1)
		i := int(minute.Sub(a.start) / time.Minute)
		for _, host := range a.hosts[i*len(a.hosts)/minutes : (i+1)*len(a.hosts)/minutes] {
			bi := 0.0
			if r.Float64() < 0.35 {
				bi = 3000
			}
			out = appendExchange(r, out, d, at(), host, []uint16{22, 445, 3389, 502}[r.IntN(4)], "TCP", 300, bi)
		}
	}
	return out
}

func (rec *record) json(seq uint32) []byte {
	proto := rec.proto
	b := fmt.Appendf(nil, `{"type":"IPFIX","time_received_ns":%d,"sequence_num":%d,"sampling_rate":1,"sampler_address":"172.16.255.1",`+
		`"time_flow_start_ns":%d,"time_flow_end_ns":%d,"bytes":%d,"packets":%d,"src_addr":"%s","dst_addr":"%s","etype":"IPv4","proto":"%s",`+
		`"src_port":%d,"dst_port":%d,"in_if":1,"out_if":2,"src_mac":"00:00:00:00:00:00","dst_mac":"00:00:00:00:00:00","tcp_flags":%d}`,
		rec.end.Add(time.Second).UnixNano(), seq, rec.start.UnixNano(), rec.end.UnixNano(), rec.bytes, rec.pkts, rec.src, rec.dst, proto,
		rec.sport, rec.dport, rec.flags)
	return b
}

func poissonDraw(r *rand.Rand, l float64) int {
	if l <= 0 {
		return 0
	}
	if l > 30 {
		return max(0, int(math.Round(l+math.Sqrt(l)*r.NormFloat64())))
	}
	k, p, e := 0, 1.0, math.Exp(-l)
	for {
		p *= r.Float64()
		if p <= e {
			return k
		}
		k++
	}
}
