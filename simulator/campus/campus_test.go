package campus

import (
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"

	"github.com/chainwatch/chainwatch/pipeline/decode"
)

// The records are goflow2 JSON that the service's decoder reads as such:
// a flow from the device, its reply leg the other way, times in ns.
func TestRecordsAreGoflow2JSON(t *testing.T) {
	fleet := Fleet(Config{Devices: 8, Seed: 1})
	d := fleet[0]
	r := rand.New(rand.NewPCG(1, 2))
	at := time.Date(2026, 11, 2, 9, 0, 0, 0, time.UTC)
	recs := appendExchange(r, nil, d, at, d.peers[0], 8883, "TCP", 420, 310)
	if len(recs) != 2 {
		t.Fatalf("%d records for an answered flow, want 2", len(recs))
	}
	var out, back decode.FlowRecord
	if err := decode.Flow(recs[0].json(1), &out); err != nil {
		t.Fatal(err)
	}
	if err := decode.Flow(recs[1].json(2), &back); err != nil {
		t.Fatal(err)
	}
	if out.SrcIP != d.IP || out.DstPort != 8883 || out.BytesOut != 420 || out.Proto != "tcp" || out.Failed == nil || *out.Failed {
		t.Errorf("forward leg decoded as %+v", out)
	}
	if back.DstIP != d.IP || back.BytesOut != 310 || !back.Time.Equal(out.Time) {
		t.Errorf("reply leg decoded as %+v", back)
	}
	// An unanswered SYN is a failed flow with no reply leg.
	if recs := appendExchange(r, nil, d, at, d.peers[0], 22, "TCP", 44, 0); len(recs) != 1 {
		t.Fatalf("%d records for an unanswered flow", len(recs))
	} else if err := decode.Flow(recs[0].json(3), &out); err != nil || !*out.Failed {
		t.Errorf("unanswered SYN decoded as %+v (%v)", out, err)
	}
}

func TestFleetIsDeterministicAndVictimsAreFleetDevices(t *testing.T) {
	a, b := Fleet(Config{Devices: 40, Seed: 9}), Fleet(Config{Devices: 40, Seed: 9})
	for i := range a {
		if a[i].ID != b[i].ID || a[i].IP != b[i].IP || a[i].scale != b[i].scale {
			t.Fatalf("fleet differs at %d", i)
		}
	}
	profiles := map[string]bool{}
	for _, d := range a {
		profiles[d.Profile] = true
	}
	if len(profiles) != 4 {
		t.Fatalf("profiles %v", profiles)
	}
	scan := &attack{dev: a[0], kind: PortScan, target: a[5].IP}
	if v := scan.victims(a); len(v) != 1 || v[0] != a[5] {
		t.Fatalf("victims of a scan of %s: %v", a[5].IP, v)
	}
	lateral := &attack{dev: a[0], kind: LateralMovement, hosts: []netip.Addr{a[1].IP, a[0].IP, netip.MustParseAddr("172.16.3.250")}}
	if v := lateral.victims(a); len(v) != 1 || v[0] != a[1] {
		t.Fatalf("victims of a lateral movement: %v (the attacker itself and a host outside the fleet are none)", v)
	}
}

// tenHours is ten hours of d's normal traffic under cfg, minute by minute
// from 09:00 at that hour's rates, the same draws for every cfg.
func tenHours(d *Device, cfg Config) []record {
	r := rand.New(rand.NewPCG(4, 5))
	start := time.Date(2026, 11, 2, 9, 0, 0, 0, time.UTC)
	var recs []record
	for m := range 600 {
		recs = normalMinute(r, profileOf(d.Profile), d, start.Add(time.Duration(m)*time.Minute), 9, cfg, recs)
	}
	return recs
}

// With pooled cloud services a thermostat's time comes from public
// servers it has mostly never met, and its cloud broker from the
// addresses of one /24; without them every flow goes to the device's own
// peers.
func TestCloudPoolsSpreadCloudAddresses(t *testing.T) {
	fleet := Fleet(Config{Devices: 8, Seed: 3})
	d := fleet[0] // a thermostat
	if d.Profile != "thermostat" {
		t.Fatalf("device 0 is a %s", d.Profile)
	}
	for _, pools := range []bool{false, true} {
		recs := tenHours(d, Config{CloudPools: pools})
		ntp, broker := map[netip.Addr]int{}, map[netip.Addr]int{}
		for _, rec := range recs {
			if rec.src != d.IP {
				continue // a reply leg
			}
			switch rec.dport {
			case 123:
				ntp[rec.dst]++
			case 8883:
				broker[rec.dst]++
				if got, want := netip.PrefixFrom(rec.dst, 24).Masked(), netip.PrefixFrom(d.peers[0], 24).Masked(); got != want {
					t.Fatalf("pools %v: broker flow to %s, outside %s", pools, rec.dst, want)
				}
			}
		}
		if len(ntp) == 0 || len(broker) == 0 {
			t.Fatalf("pools %v: %d NTP and %d broker addresses in 600 minutes", pools, len(ntp), len(broker))
		}
		if !pools && (len(ntp) != 1 || len(broker) != 1) {
			t.Errorf("without pools: %d NTP and %d broker addresses, want 1 each", len(ntp), len(broker))
		}
		if pools {
			for a := range ntp {
				if !a.IsGlobalUnicast() || a.IsPrivate() {
					t.Errorf("NTP server %s is not a public address", a)
				}
			}
			// ~42 NTP exchanges (7 % of 600), nearly all to distinct
			// servers; ~300 broker flows over 254 addresses.
			if len(ntp) < 30 || len(broker) < 100 {
				t.Errorf("with pools: %d NTP and %d broker addresses, want most exchanges on their own", len(ntp), len(broker))
			}
		}
	}
}

// With DNS lookups about three in ten cloud connections follow a query to
// the site's resolver; without them no flow goes to port 53.
func TestDNSLookupsPrecedeCloudConnections(t *testing.T) {
	fleet := Fleet(Config{Devices: 8, Seed: 3})
	d := fleet[2] // a video recorder: cloud peers only
	for _, dns := range []bool{false, true} {
		recs := tenHours(d, Config{DNSLookups: dns})
		lookups, cloud := 0, 0
		for _, rec := range recs {
			switch {
			case rec.src != d.IP: // a reply leg
			case rec.dport == 53:
				lookups++
				if rec.dst != Resolver || rec.proto != "UDP" {
					t.Fatalf("lookup to %s/%s", rec.dst, rec.proto)
				}
			default:
				cloud++
			}
		}
		if !dns && lookups != 0 {
			t.Errorf("%d lookups without DNSLookups", lookups)
		}
		if share := float64(lookups) / float64(cloud); dns && (share < 0.2 || share > 0.4) {
			t.Errorf("%d lookups for %d cloud connections, want about 3 in 10", lookups, cloud)
		}
	}
}
