package decode

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	flowpb "github.com/netsampler/goflow2/v2/pb"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// goflow2 (github.com/netsampler/goflow2) turns NetFlow v5/v9, IPFIX and
// sFlow into one record per flow on Kafka, as JSON (-format json) or as
// varint-delimited protobuf FlowMessage (-format bin). Its flows are
// unidirectional: the source sent Bytes to the destination. DetectStage
// attributes a flow to its source device, or, when only the destination is
// a registered device, to that device as inbound traffic.

// goflowJSON is the subset of goflow2's JSON output chainwatch reads.
type goflowJSON struct {
	Type           string          `json:"type"`
	TimeReceivedNs uint64          `json:"time_received_ns"`
	TimeFlowEndNs  uint64          `json:"time_flow_end_ns"`
	SamplingRate   uint64          `json:"sampling_rate"`
	Bytes          uint64          `json:"bytes"`
	Packets        uint64          `json:"packets"`
	SrcAddr        string          `json:"src_addr"`
	DstAddr        string          `json:"dst_addr"`
	Proto          json.RawMessage `json:"proto"`
	SrcPort        uint16          `json:"src_port"`
	DstPort        uint16          `json:"dst_port"`
	SrcMac         string          `json:"src_mac"`
	DstMac         string          `json:"dst_mac"`
	TCPFlags       uint8           `json:"tcp_flags"`
}

// isGoflowJSON tells goflow2's JSON from the native schema by its keys.
func isGoflowJSON(value []byte) bool {
	return bytes.Contains(value, []byte(`"dst_addr"`)) || bytes.Contains(value, []byte(`"sampler_address"`))
}

// GoflowJSON decodes one record of goflow2's JSON format.
func GoflowJSON(value []byte, rec *FlowRecord) error {
	var g goflowJSON
	if err := json.Unmarshal(value, &g); err != nil {
		return rejectf("goflow2 JSON: %v", err)
	}
	var proto string
	if len(g.Proto) > 0 && g.Proto[0] == '"' {
		_ = json.Unmarshal(g.Proto, &proto)
	} else if len(g.Proto) > 0 {
		var n uint8
		if err := json.Unmarshal(g.Proto, &n); err != nil {
			return rejectf("goflow2 JSON: proto %s is not a protocol name or number", g.Proto)
		}
		proto = fmt.Sprint(n)
	}
	src, err := netip.ParseAddr(g.SrcAddr)
	if err != nil {
		return rejectf("goflow2 JSON: src_addr %q is not an IP address", g.SrcAddr)
	}
	dst, err := netip.ParseAddr(g.DstAddr)
	if err != nil {
		return rejectf("goflow2 JSON: dst_addr %q is not an IP address", g.DstAddr)
	}
	return fillGoflow(rec, goflowFields{
		endNs: g.TimeFlowEndNs, receivedNs: g.TimeReceivedNs, rate: g.SamplingRate,
		bytes: g.Bytes, packets: g.Packets, src: src, dst: dst, proto: proto,
		srcPort: g.SrcPort, dstPort: g.DstPort, srcMAC: g.SrcMac, dstMAC: g.DstMac, tcpFlags: g.TCPFlags,
	})
}

// GoflowProtobuf decodes one FlowMessage of goflow2's binary format,
// with or without its varint length prefix.
func GoflowProtobuf(value []byte, rec *FlowRecord) error {
	body := value
	if n, k := protowire.ConsumeVarint(value); k > 0 && n == uint64(len(value)-k) {
		body = value[k:]
	}
	var m flowpb.FlowMessage
	if err := proto.Unmarshal(body, &m); err != nil {
		return rejectf("not a goflow2 FlowMessage: %v", err)
	}
	src, ok1 := netip.AddrFromSlice(m.GetSrcAddr())
	dst, ok2 := netip.AddrFromSlice(m.GetDstAddr())
	if !ok1 || !ok2 {
		return rejectf("goflow2 FlowMessage: source or destination address missing")
	}
	return fillGoflow(rec, goflowFields{
		endNs: m.GetTimeFlowEndNs(), receivedNs: m.GetTimeReceivedNs(), rate: m.GetSamplingRate(),
		bytes: m.GetBytes(), packets: m.GetPackets(), src: src.Unmap(), dst: dst.Unmap(), proto: fmt.Sprint(m.GetProto()),
		srcPort: uint16(m.GetSrcPort()), dstPort: uint16(m.GetDstPort()),
		srcMAC: macFromUint64(m.GetSrcMac()), dstMAC: macFromUint64(m.GetDstMac()), tcpFlags: uint8(m.GetTcpFlags()),
	})
}

type goflowFields struct {
	endNs, receivedNs, rate, bytes, packets uint64
	src, dst                                netip.Addr
	proto, srcMAC, dstMAC                   string
	srcPort, dstPort                        uint16
	tcpFlags                                uint8
}

const (
	tcpSYN = 0x02
	tcpACK = 0x10
)

func fillGoflow(rec *FlowRecord, g goflowFields) error {
	ns := g.endNs
	if ns == 0 {
		ns = g.receivedNs
	}
	if ns == 0 {
		return rejectf("goflow2 record has neither time_flow_end_ns nor time_received_ns")
	}
	if g.proto == "" {
		return rejectf("goflow2 record has no proto")
	}
	rate := max(g.rate, 1) // sampled flows stand for rate times as much traffic
	*rec = FlowRecord{
		Time: time.Unix(0, int64(ns)).UTC(), SrcIP: g.src, DstIP: g.dst, SrcPort: g.srcPort, DstPort: g.dstPort,
		Proto: protoName(strings.ToLower(g.proto)), BytesOut: g.bytes * rate, PacketsOut: g.packets * rate,
		TCPFlags: g.tcpFlags, SrcMAC: canonicalMAC(g.srcMAC), DstMAC: canonicalMAC(g.dstMAC),
	}
	// One direction only: a TCP flow that opened (SYN) but never saw an
	// acknowledgement is a connection that failed.
	failed := rec.Proto == "tcp" && g.tcpFlags&tcpSYN != 0 && g.tcpFlags&tcpACK == 0
	rec.Failed = &failed
	return nil
}

// canonicalMAC lower-cases a MAC and drops the all-zero address exporters
// send when they do not know it.
func canonicalMAC(s string) string {
	hw, err := net.ParseMAC(s)
	if err != nil || bytes.Equal(hw, make([]byte, len(hw))) {
		return ""
	}
	return hw.String()
}

func macFromUint64(v uint64) string {
	if v == 0 {
		return ""
	}
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], v)
	return net.HardwareAddr(b[2:]).String()
}

// Flow decodes a record in any accepted flow format: the native JSON
// schema, goflow2's JSON, or goflow2's protobuf FlowMessage.
func Flow(value []byte, rec *FlowRecord) error {
	trimmed := bytes.TrimLeft(value, " \t\r\n")
	switch {
	case len(trimmed) > 0 && trimmed[0] == '{' && isGoflowJSON(trimmed):
		return GoflowJSON(value, rec)
	case len(trimmed) > 0 && trimmed[0] == '{':
		return NativeFlow(value, rec)
	default:
		return GoflowProtobuf(value, rec)
	}
}
