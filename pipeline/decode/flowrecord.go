package decode

import (
	"net/netip"
	"strings"
	"time"

	"github.com/cespare/xxhash/v2"

	"github.com/chainwatch/chainwatch/models/features"
)

// FlowRecord is one decoded flow, whatever format it arrived in. The device
// is the flow's initiator: bytes and packets "out" are what it sent.
type FlowRecord struct {
	DeviceID   string // empty when the record names none; resolved from SrcMAC/SrcIP
	Time       time.Time
	SrcIP      netip.Addr
	SrcMAC     string // canonical lower-case, or empty
	SrcPort    uint16
	DstIP      netip.Addr
	DstMAC     string // canonical lower-case, or empty
	DstPort    uint16
	Proto      string // "tcp", "udp", "icmp", … lower case
	BytesOut   uint64
	BytesIn    uint64
	PacketsOut uint64
	PacketsIn  uint64
	TCPFlags   uint8
	// Failed is the record's own verdict when it has one; otherwise a TCP
	// flow that got no packet back counts as failed.
	Failed *bool
}

// DstKey is the stable 64-bit key of a destination address (xxHash64 of
// its 16-byte form). Device histories are checkpointed and read back by
// other processes, so the key must not change between processes, as a
// randomly seeded hash would.
func DstKey(a netip.Addr) uint64 {
	b := a.As16()
	return xxhash.Sum64(b[:])
}

// PeerKey is the stable 64-bit key of the peer destination dst of device
// address src belongs to, by which a device's history knows its
// destinations: the address itself for a host of the device's site
// (OnSite), its network for a host on the internet — the /24 of an IPv4
// address (PeerPrefixV4), the /48 of an IPv6 one (PeerPrefixV6).
//
// Why networks: a cloud service answers from many addresses. A device's
// broker or API sits behind a load balancer and its firmware comes from a
// CDN's edge, and one connection reaches an address the last did not.
// Known by address, each of them is a host the device never met, and new
// hosts and their first contacts — the evidence of a beacon or an
// exfiltration — become what the device does every few minutes: on the
// campus fleet with its cloud endpoints load-balanced over their /24
// (docs/DETECTION.md, campus-pools), strong attacks caught within three
// windows fell from 0.957 to 0.905 over seven seeds. A /24 is the longest
// IPv4 prefix operators route between networks, and a /48 the IPv6 prefix
// of one site (RFC 6177), so the addresses of one are one operator's, at
// one place. The price: a host in the very network of one of the device's
// own peers is no new host to it. Hosts of the site are kept apart, since
// fan-out across them is lateral movement, and so are addresses of the
// prefixes reserved for documentation and benchmarking (unrouted). Which
// address recurs stays the address's own (DstKey): a C2 server is one
// host, while a device that spreads its connections over a provider's
// many networks meets one of them again by chance, more often the busier
// it is.
func PeerKey(src, dst netip.Addr) uint64 { return peerKey(OnSite(src, dst), dst) }

// peerKey is PeerKey with OnSite already decided.
func peerKey(site bool, dst netip.Addr) uint64 {
	if site || unrouted(dst) {
		return DstKey(dst)
	}
	return DstKey(network(dst.Unmap()))
}

// unroutedPrefixes are reserved for documentation (RFC 5737, RFC 3849)
// and benchmarking (RFC 2544): no operator's network, never routed on the
// internet. Test fleets and lab captures use them for any host they need,
// cloud peers and attackers alike, so an address in them stands for
// itself: keyed by network, every such host of a fleet would be one peer.
var unroutedPrefixes = []netip.Prefix{
	netip.MustParsePrefix("192.0.2.0/24"),
	netip.MustParsePrefix("198.51.100.0/24"),
	netip.MustParsePrefix("203.0.113.0/24"),
	netip.MustParsePrefix("198.18.0.0/15"),
	netip.MustParsePrefix("2001:db8::/32"),
}

// unrouted reports whether a lies in unroutedPrefixes.
func unrouted(a netip.Addr) bool {
	a = a.Unmap()
	for _, p := range unroutedPrefixes {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// PeerPrefixV4 and PeerPrefixV6 are the prefix lengths PeerKey keys an
// internet destination by, and the network OnSite takes for a device's
// own.
const (
	PeerPrefixV4 = 24
	PeerPrefixV6 = 48
)

// network returns the first address of a's /24 (IPv4) or /48 (IPv6).
func network(a netip.Addr) netip.Addr {
	bits := PeerPrefixV6
	if a.Is4() {
		bits = PeerPrefixV4
	}
	if p, err := a.Prefix(bits); err == nil {
		return p.Addr()
	}
	return a
}

// OnSite reports whether destination dst is a host of the site of the
// device at src rather than of the internet: a private (RFC 1918,
// RFC 4193), link-local or loopback address, or one in the device's own
// network (its /24, or /48 for IPv6) — a site whose devices have global
// addresses, as IPv6 ones mostly do, or a cellular device's neighbours.
// src may be invalid (a record that names its device only): then only
// the address space says.
func OnSite(src, dst netip.Addr) bool {
	dst = dst.Unmap()
	if dst.IsPrivate() || dst.IsLinkLocalUnicast() || dst.IsLoopback() {
		return true
	}
	src = src.Unmap()
	return src.IsValid() && src.Is4() == dst.Is4() && network(src) == network(dst)
}

// Inbound returns the record seen from its destination device, for
// unidirectional flows (NetFlow, IPFIX) whose source is not a device: what
// the source sent is what the device received.
func (r *FlowRecord) Inbound() features.Flow {
	return features.Flow{Inbound: true, BytesIn: r.BytesOut, PacketsIn: r.PacketsOut}
}

// Feature returns the record as the feature extractor sees it.
func (r *FlowRecord) Feature() features.Flow {
	failed := false
	switch {
	case r.Failed != nil:
		failed = *r.Failed
	case r.Proto == "tcp":
		failed = r.PacketsIn == 0 || (r.TCPFlags&tcpRST != 0 && r.BytesIn == 0)
	}
	site := OnSite(r.SrcIP, r.DstIP)
	return features.Flow{
		Dst:        DstKey(r.DstIP),
		Peer:       peerKey(site, r.DstIP),
		DstPort:    r.DstPort,
		Internal:   site,
		BytesOut:   r.BytesOut,
		BytesIn:    r.BytesIn,
		PacketsOut: r.PacketsOut,
		PacketsIn:  r.PacketsIn,
		Failed:     failed,
	}
}

const tcpRST = 0x04

// protoName normalises IANA protocol numbers and names.
func protoName(p string) string {
	switch p {
	case "6":
		return "tcp"
	case "17":
		return "udp"
	case "1":
		return "icmp"
	}
	return strings.ToLower(p)
}
