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

// internalAddr reports whether a destination is on the site rather than
// the internet: private (RFC 1918, RFC 4193), link-local or loopback.
func internalAddr(a netip.Addr) bool {
	a = a.Unmap()
	return a.IsPrivate() || a.IsLinkLocalUnicast() || a.IsLoopback()
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
	return features.Flow{
		Dst:        DstKey(r.DstIP),
		DstPort:    r.DstPort,
		Internal:   internalAddr(r.DstIP),
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
