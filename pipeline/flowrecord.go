package pipeline

import (
	"hash/maphash"
	"net/netip"
	"strings"
	"time"

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

// dstSeed keys destination hashing; it only has to be stable within one
// process, since device histories are rebuilt from the log on restart.
var dstSeed = maphash.MakeSeed()

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
	dst := r.DstIP.As16()
	return features.Flow{
		Dst:        maphash.Bytes(dstSeed, dst[:]),
		DstPort:    r.DstPort,
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
