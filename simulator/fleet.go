package simulator

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math"
	"math/rand/v2"
	"net/netip"
	"time"
)

// Profile is a device type and its normal behaviour.
type Profile struct {
	Name string
	// FlowsPerMinute is the mean flow rate at the daily average.
	FlowsPerMinute float64
	// Diurnal is the amplitude of the daily cycle of the rate (0: flat).
	Diurnal float64
	// Peers are the usual destinations a device of this profile talks to.
	Peers []Peer
}

// Peer is a usual destination and the shape of flows towards it.
type Peer struct {
	Kind      string // "cloud" (one of a pool of external endpoints) or "site" (an on-site server)
	Port      uint16
	Proto     string
	Weight    float64
	BytesOut  float64 // median bytes sent per flow
	BytesIn   float64 // median bytes received per flow
	Pool      int     // distinct addresses behind a cloud peer; a device picks a few
	PerDevice int     // how many of the pool one device uses
}

// Profiles are the simulated device types.
var Profiles = []Profile{
	{Name: "meter", FlowsPerMinute: 2, Diurnal: 0.1, Peers: []Peer{
		{Kind: "cloud", Port: 443, Proto: "tcp", Weight: 0.8, BytesOut: 900, BytesIn: 400, Pool: 8, PerDevice: 2},
		{Kind: "site", Port: 123, Proto: "udp", Weight: 0.1, BytesOut: 76, BytesIn: 76},
		{Kind: "site", Port: 53, Proto: "udp", Weight: 0.1, BytesOut: 70, BytesIn: 140},
	}},
	{Name: "camera", FlowsPerMinute: 4, Diurnal: 0.3, Peers: []Peer{
		{Kind: "site", Port: 554, Proto: "tcp", Weight: 0.6, BytesOut: 1_500_000, BytesIn: 20_000},
		{Kind: "cloud", Port: 443, Proto: "tcp", Weight: 0.3, BytesOut: 30_000, BytesIn: 4_000, Pool: 6, PerDevice: 2},
		{Kind: "site", Port: 53, Proto: "udp", Weight: 0.1, BytesOut: 70, BytesIn: 140},
	}},
	{Name: "plc", FlowsPerMinute: 8, Diurnal: 0.2, Peers: []Peer{
		{Kind: "site", Port: 502, Proto: "tcp", Weight: 0.9, BytesOut: 300, BytesIn: 260},
		{Kind: "site", Port: 123, Proto: "udp", Weight: 0.1, BytesOut: 76, BytesIn: 76},
	}},
	{Name: "gateway", FlowsPerMinute: 10, Diurnal: 0.5, Peers: []Peer{
		{Kind: "cloud", Port: 443, Proto: "tcp", Weight: 0.6, BytesOut: 12_000, BytesIn: 30_000, Pool: 40, PerDevice: 12},
		{Kind: "cloud", Port: 8883, Proto: "tcp", Weight: 0.3, BytesOut: 2_000, BytesIn: 800, Pool: 4, PerDevice: 2},
		{Kind: "site", Port: 53, Proto: "udp", Weight: 0.1, BytesOut: 70, BytesIn: 140},
	}},
}

// Device is one simulated device with its birth-certificate facts.
type Device struct {
	ID         string
	Profile    *Profile
	IP         netip.Addr
	MAC        string
	PublicKey  ed25519.PublicKey
	PrivateKey ed25519.PrivateKey
	Firmware   string         // hex SHA-256 of its firmware image
	peers      [][]netip.Addr // per Profile.Peers entry, the addresses this device uses
	retired    bool           // taken off the network after its revocation
	joins      time.Time      // installed then (Config.Joining); zero: from the start
	scale      float64        // its traffic relative to its profile's (0: 1)
}

// siteServer is the on-site server of a profile's site peer i.
func siteServer(profile, i int) netip.Addr {
	return netip.AddrFrom4([4]byte{10, 0, byte(profile), byte(10 + i)})
}

// cloudAddr is address k of the pool behind profile's cloud peer i.
func cloudAddr(profile, i, k int) netip.Addr {
	return netip.AddrFrom4([4]byte{52, byte(16 + profile), byte(i), byte(1 + k)})
}

// FirmwareHash is the approved firmware image hash of a profile.
func FirmwareHash(profile string) string {
	h := sha256.Sum256([]byte("chainwatch-simulated-firmware/" + profile + "/v1.4.2"))
	return hex.EncodeToString(h[:])
}

// NewFleet builds n devices spread round-robin over the profiles,
// deterministically from seed.
func NewFleet(n int, seed uint64) []*Device {
	rng := rand.New(rand.NewPCG(seed, 0xf1ee7))
	fleet := make([]*Device, n)
	counts := map[string]int{}
	for i := range n {
		pi := i % len(Profiles)
		p := &Profiles[pi]
		counts[p.Name]++
		keySeed := make([]byte, ed25519.SeedSize)
		for j := range keySeed {
			keySeed[j] = byte(rng.Uint32())
		}
		priv := ed25519.NewKeyFromSeed(keySeed)
		d := &Device{
			ID:        fmt.Sprintf("%s-%04d", p.Name, counts[p.Name]),
			Profile:   p,
			IP:        netip.AddrFrom4([4]byte{10, 20, byte(i / 250), byte(1 + i%250)}),
			MAC:       fmt.Sprintf("02:00:0a:14:%02x:%02x", i/250, 1+i%250),
			PublicKey: priv.Public().(ed25519.PublicKey), PrivateKey: priv,
			Firmware: FirmwareHash(p.Name),
		}
		for pe, peer := range p.Peers {
			switch peer.Kind {
			case "site":
				d.peers = append(d.peers, []netip.Addr{siteServer(pi, pe)})
			default:
				picks := rng.Perm(peer.Pool)[:peer.PerDevice]
				addrs := make([]netip.Addr, len(picks))
				for k, c := range picks {
					addrs[k] = cloudAddr(pi, pe, c)
				}
				d.peers = append(d.peers, addrs)
			}
		}
		fleet[i] = d
	}
	return fleet
}

// poisson draws from Poisson(λ) (Knuth for small λ, normal approximation above 30).
func poisson(rng *rand.Rand, lambda float64) int {
	if lambda <= 0 {
		return 0
	}
	if lambda > 30 {
		return max(0, int(math.Round(lambda+math.Sqrt(lambda)*rng.NormFloat64())))
	}
	l, k, p := math.Exp(-lambda), 0, 1.0
	for {
		p *= rng.Float64()
		if p <= l {
			return k
		}
		k++
	}
}

// lognormal draws around a median with a multiplicative spread σ.
func lognormal(rng *rand.Rand, median, sigma float64) float64 {
	return median * math.Exp(sigma*rng.NormFloat64())
}
