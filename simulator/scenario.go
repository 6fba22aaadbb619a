package simulator

import (
	"math/rand/v2"
	"net/netip"
	"time"
)

// Scenario names as written to the ground-truth CSV.
const (
	ScenarioDDoS            = "ddos"
	ScenarioExfiltration    = "exfiltration"
	ScenarioPortScan        = "port_scan"
	ScenarioC2Beacon        = "c2_beacon"
	ScenarioLateralMovement = "lateral_movement"
)

// Scenarios lists the attack scenarios in schedule order.
var Scenarios = []string{ScenarioDDoS, ScenarioExfiltration, ScenarioPortScan, ScenarioC2Beacon, ScenarioLateralMovement}

// AttackSpec is an attack kind at an intensity. Intensity 0 plays the
// kind at its built-in strength (the demo's). Otherwise it is, per kind:
//
//	ddos              flood flows a minute, as a multiple of the device's normal flow rate
//	exfiltration      extra bytes sent a minute, as a multiple of the device's normal bytes sent
//	port_scan         distinct ports probed a minute
//	c2_beacon         seconds between beacons
//	lateral_movement  distinct internal hosts probed over the attack
type AttackSpec struct {
	Scenario  string
	Intensity float64
}

// Attack is one scheduled attack: a ground-truth row.
type Attack struct {
	Device    *Device
	Scenario  string
	Intensity float64
	Start     time.Time
	End       time.Time
	target    netip.Addr
	peers     []netip.Addr // lateral movement's victims
	next      time.Time    // a beacon's next contact
}

// normal is the attacked device's expected traffic in one minute.
type normal struct {
	flows    float64
	bytesOut float64
}

func (a *Attack) active(t time.Time) bool { return !t.Before(a.Start) && t.Before(a.End) }

// attackFlows appends the attack's flows during one simulated minute.
func (a *Attack) attackFlows(rng *rand.Rand, minute time.Time, n normal, out []flow) []flow {
	if a.Intensity > 0 {
		return a.scaledFlows(rng, minute, n, out)
	}
	d := a.Device
	at := func() time.Time { return minute.Add(time.Duration(rng.Int64N(int64(time.Minute)))) }
	switch a.Scenario {
	case ScenarioDDoS:
		for range 300 + rng.IntN(300) {
			pk := uint64(20 + rng.IntN(30))
			out = append(out, flow{dev: d, t: at(), dst: a.target, dstPort: 80, srcPort: uint16(1024 + rng.IntN(60000)),
				proto: "tcp", bytesOut: pk * 60, packetsOut: pk, tcpFlags: 0x02})
		}
	case ScenarioExfiltration:
		for range 3 + rng.IntN(4) {
			b := uint64(lognormal(rng, 10e6, 0.4))
			out = append(out, flow{dev: d, t: at(), dst: a.target, dstPort: 443, srcPort: uint16(1024 + rng.IntN(60000)),
				proto: "tcp", bytesOut: b, bytesIn: b / 200, packetsOut: b / 1400, packetsIn: b / 2800, tcpFlags: 0x1b})
		}
	case ScenarioPortScan:
		for range 100 + rng.IntN(200) {
			f := flow{dev: d, t: at(), dst: a.target, dstPort: uint16(1 + rng.IntN(65535)), srcPort: uint16(1024 + rng.IntN(60000)),
				proto: "tcp", bytesOut: 60, packetsOut: 1, tcpFlags: 0x02}
			if rng.Float64() < 0.3 { // closed port answers with a reset
				f.bytesIn, f.packetsIn, f.tcpFlags = 40, 1, 0x16
			}
			out = append(out, f)
		}
	case ScenarioC2Beacon:
		for k := range 2 {
			out = append(out, flow{dev: d, t: minute.Add(time.Duration(k)*30*time.Second + time.Duration(rng.IntN(2000))*time.Millisecond),
				dst: a.target, dstPort: 4444, srcPort: uint16(1024 + rng.IntN(60000)), proto: "tcp",
				bytesOut: uint64(200 + rng.IntN(200)), bytesIn: uint64(100 + rng.IntN(200)), packetsOut: 4, packetsIn: 3, tcpFlags: 0x1b})
		}
	case ScenarioLateralMovement:
		ports := []uint16{22, 23, 445, 3389}
		for range 20 + rng.IntN(20) {
			f := flow{dev: d, t: at(), dst: a.peers[rng.IntN(len(a.peers))], dstPort: ports[rng.IntN(len(ports))],
				srcPort: uint16(1024 + rng.IntN(60000)), proto: "tcp", bytesOut: 120, packetsOut: 2, tcpFlags: 0x02}
			if rng.Float64() < 0.3 {
				f.bytesOut, f.bytesIn, f.packetsOut, f.packetsIn, f.tcpFlags = 2400, 5200, 12, 10, 0x1b
			}
			out = append(out, f)
		}
	}
	return out
}

// scaledFlows plays an attack at its intensity (AttackSpec), relative to
// the device's own normal traffic n where the kind is a volume.
func (a *Attack) scaledFlows(rng *rand.Rand, minute time.Time, n normal, out []flow) []flow {
	d, x := a.Device, a.Intensity
	at := func() time.Time { return minute.Add(time.Duration(rng.Int64N(int64(time.Minute)))) }
	src := func() uint16 { return uint16(1024 + rng.IntN(60000)) }
	switch a.Scenario {
	case ScenarioDDoS: // small UDP datagrams to one outside host
		for range poisson(rng, x*n.flows) {
			pk := uint64(5 + rng.IntN(20))
			out = append(out, flow{dev: d, t: at(), dst: a.target, dstPort: 53, srcPort: src(), proto: "udp",
				bytesOut: pk * 64, packetsOut: pk})
		}
	case ScenarioExfiltration: // the extra bytes in one to three uploads
		k := 1 + rng.IntN(3)
		total := x * n.bytesOut
		for range k {
			b := uint64(total / float64(k))
			out = append(out, flow{dev: d, t: at(), dst: a.target, dstPort: 443, srcPort: src(), proto: "tcp",
				bytesOut: b, bytesIn: b/100 + 200, packetsOut: b/1400 + 1, packetsIn: b/14000 + 1, tcpFlags: 0x1b})
		}
	case ScenarioPortScan: // SYNs to x distinct ports of one host; closed ports answer with a reset
		for _, port := range rng.Perm(65535)[:min(int(x), 65535)] {
			f := flow{dev: d, t: at(), dst: a.target, dstPort: uint16(port + 1), srcPort: src(), proto: "tcp",
				bytesOut: 60, packetsOut: 1, tcpFlags: 0x02}
			if rng.Float64() < 0.3 {
				f.bytesIn, f.packetsIn, f.tcpFlags = 40, 1, 0x16
			}
			out = append(out, f)
		}
	case ScenarioC2Beacon: // a small exchange with one new host every x seconds
		if a.next.IsZero() {
			a.next = a.Start.Add(time.Duration(rng.Int64N(int64(5 * time.Second))))
		}
		for end := minute.Add(time.Minute); a.next.Before(end); a.next = a.next.Add(time.Duration(x * float64(time.Second))) {
			if a.next.Before(minute) {
				continue
			}
			jitter := time.Duration(rng.Int64N(int64(time.Second)))
			out = append(out, flow{dev: d, t: a.next.Add(jitter), dst: a.target, dstPort: 8443, srcPort: src(), proto: "tcp",
				bytesOut: uint64(150 + rng.IntN(150)), bytesIn: uint64(100 + rng.IntN(200)), packetsOut: 3, packetsIn: 3, tcpFlags: 0x1b})
		}
	case ScenarioLateralMovement: // x internal hosts over the attack, probed on remote-access ports
		minutes := max(int(a.End.Sub(a.Start)/time.Minute), 1)
		i := int(minute.Sub(a.Start) / time.Minute)
		lo, hi := i*len(a.peers)/minutes, (i+1)*len(a.peers)/minutes
		ports := []uint16{22, 23, 445, 3389, 5985}
		for _, p := range a.peers[lo:hi] {
			for range 1 + rng.IntN(3) {
				f := flow{dev: d, t: at(), dst: p, dstPort: ports[rng.IntN(len(ports))], srcPort: src(), proto: "tcp",
					bytesOut: 120, packetsOut: 2, tcpFlags: 0x02}
				if rng.Float64() < 0.3 {
					f.bytesOut, f.bytesIn, f.packetsOut, f.packetsIn, f.tcpFlags = 2400, 5200, 12, 10, 0x1b
				}
				out = append(out, f)
			}
		}
	}
	return out
}

// newAttack prepares an attack of the given kind and intensity on device d.
func newAttack(rng *rand.Rand, spec AttackSpec, d *Device, fleet []*Device, start time.Time, length time.Duration) *Attack {
	scenario := spec.Scenario
	a := &Attack{Device: d, Scenario: scenario, Intensity: spec.Intensity, Start: start, End: start.Add(length)}
	if spec.Intensity > 0 && scenario == ScenarioLateralMovement {
		// Hosts of the site's address space, not only fleet devices.
		for range int(spec.Intensity) {
			a.peers = append(a.peers, netip.AddrFrom4([4]byte{10, 20, byte(rng.IntN(8)), byte(1 + rng.IntN(250))}))
		}
		return a
	}
	switch scenario {
	case ScenarioDDoS:
		a.target = netip.AddrFrom4([4]byte{198, 51, 100, byte(1 + rng.IntN(254))})
	case ScenarioExfiltration, ScenarioC2Beacon:
		a.target = netip.AddrFrom4([4]byte{203, 0, 113, byte(1 + rng.IntN(254))})
	case ScenarioPortScan:
		a.target = fleet[rng.IntN(len(fleet))].IP
	case ScenarioLateralMovement:
		for range 5 + rng.IntN(10) {
			a.peers = append(a.peers, fleet[rng.IntN(len(fleet))].IP)
		}
	}
	return a
}
