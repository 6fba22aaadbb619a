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

// Attack is one scheduled attack: a ground-truth row.
type Attack struct {
	Device   *Device
	Scenario string
	Start    time.Time
	End      time.Time
	target   netip.Addr
	peers    []netip.Addr // lateral movement's victims
}

func (a *Attack) active(t time.Time) bool { return !t.Before(a.Start) && t.Before(a.End) }

// attackFlows appends the attack's flows during one simulated minute.
func (a *Attack) attackFlows(rng *rand.Rand, minute time.Time, out []flow) []flow {
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

// newAttack prepares an attack of the given scenario on device d.
func newAttack(rng *rand.Rand, scenario string, d *Device, fleet []*Device, start time.Time, length time.Duration) *Attack {
	a := &Attack{Device: d, Scenario: scenario, Start: start, End: start.Add(length)}
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
