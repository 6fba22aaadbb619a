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

// goflowV1JSON is the same subset in the JSON of goflow2 before v2 and of
// cloudflare/goflow v3, which name each field as the FlowMessage's Go field
// (SrcAddr, TimeFlowEnd) and give times in seconds, and from goflow2 v1.1 in
// milliseconds as well (TimeFlowEndMs). Many exporters' collectors still run
// them.
type goflowV1JSON struct {
	TimeReceived  uint64          `json:"TimeReceived"`
	TimeFlowEnd   uint64          `json:"TimeFlowEnd"`
	TimeFlowEndMs uint64          `json:"TimeFlowEndMs"`
	SamplingRate  uint64          `json:"SamplingRate"`
	Bytes         uint64          `json:"Bytes"`
	Packets       uint64          `json:"Packets"`
	SrcAddr       string          `json:"SrcAddr"`
	DstAddr       string          `json:"DstAddr"`
	Proto         json.RawMessage `json:"Proto"`
	SrcPort       uint16          `json:"SrcPort"`
	DstPort       uint16          `json:"DstPort"`
	SrcMac        json.RawMessage `json:"SrcMac"` // text, or the FlowMessage's number
	DstMac        json.RawMessage `json:"DstMac"`
	TCPFlags      uint8           `json:"TCPFlags"`
}

// isGoflowJSON tells goflow2's JSON from the native schema by its keys.
func isGoflowJSON(value []byte) bool {
	return bytes.Contains(value, []byte(`"dst_addr"`)) || bytes.Contains(value, []byte(`"sampler_address"`))
}

// isGoflowV1JSON tells the JSON of goflow2 v1 and goflow by its keys.
func isGoflowV1JSON(value []byte) bool {
	return bytes.Contains(value, []byte(`"DstAddr"`))
}

// GoflowJSON decodes one record of goflow2's JSON format.
func GoflowJSON(value []byte, rec *FlowRecord) error {
	var g goflowJSON
	if err := json.Unmarshal(value, &g); err != nil {
		return rejectf("goflow2 JSON: %v", err)
	}
	proto, err := goflowProto(g.Proto, "proto")
	if err != nil {
		return err
	}
	src, dst, err := goflowAddrs(g.SrcAddr, g.DstAddr, "src_addr", "dst_addr")
	if err != nil {
		return err
	}
	return fillGoflow(rec, goflowFields{
		endNs: g.TimeFlowEndNs, receivedNs: g.TimeReceivedNs, rate: g.SamplingRate,
		bytes: g.Bytes, packets: g.Packets, src: src, dst: dst, proto: proto,
		srcPort: g.SrcPort, dstPort: g.DstPort, srcMAC: g.SrcMac, dstMAC: g.DstMac, tcpFlags: g.TCPFlags,
	})
}

// GoflowV1JSON decodes one record of the JSON of goflow2 v1 or goflow.
func GoflowV1JSON(value []byte, rec *FlowRecord) error {
	var g goflowV1JSON
	if err := json.Unmarshal(value, &g); err != nil {
		return rejectf("goflow JSON: %v", err)
	}
	proto, err := goflowProto(g.Proto, "Proto")
	if err != nil {
		return err
	}
	src, dst, err := goflowAddrs(g.SrcAddr, g.DstAddr, "SrcAddr", "DstAddr")
	if err != nil {
		return err
	}
	endNs := g.TimeFlowEndMs * uint64(time.Millisecond)
	if endNs == 0 {
		endNs = g.TimeFlowEnd * uint64(time.Second)
	}
	return fillGoflow(rec, goflowFields{
		endNs: endNs, receivedNs: g.TimeReceived * uint64(time.Second), rate: g.SamplingRate,
		bytes: g.Bytes, packets: g.Packets, src: src, dst: dst, proto: proto,
		srcPort: g.SrcPort, dstPort: g.DstPort, srcMAC: goflowMAC(g.SrcMac), dstMAC: goflowMAC(g.DstMac), tcpFlags: g.TCPFlags,
	})
}

// goflowMAC reads a MAC written as text ("02:00:0a:14:00:07") or as the
// FlowMessage's 64-bit number; anything else is no MAC.
func goflowMAC(raw json.RawMessage) string {
	var text string
	if json.Unmarshal(raw, &text) == nil {
		return text
	}
	var n uint64
	if json.Unmarshal(raw, &n) == nil {
		return macFromUint64(n)
	}
	return ""
}

// goflowProto reads a protocol given by name ("TCP") or number (6).
func goflowProto(raw json.RawMessage, key string) (string, error) {
	switch {
	case len(raw) == 0:
		return "", nil
	case raw[0] == '"':
		var name string
		_ = json.Unmarshal(raw, &name)
		return name, nil
	}
	var n uint8
	if err := json.Unmarshal(raw, &n); err != nil {
		return "", rejectf("goflow2 JSON: %s %s is not a protocol name or number", key, raw)
	}
	return fmt.Sprint(n), nil
}

// goflowAddrs parses a flow's source and destination addresses.
func goflowAddrs(srcAddr, dstAddr, srcKey, dstKey string) (netip.Addr, netip.Addr, error) {
	src, err := netip.ParseAddr(srcAddr)
	if err != nil {
		return src, src, rejectf("goflow2 JSON: %s %q is not an IP address", srcKey, srcAddr)
	}
	dst, err := netip.ParseAddr(dstAddr)
	if err != nil {
		return src, dst, rejectf("goflow2 JSON: %s %q is not an IP address", dstKey, dstAddr)
	}
	return src, dst, nil
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
		return rejectf("goflow2 record has no flow end or receive time (time_flow_end_ns, time_received_ns; TimeFlowEndMs, TimeFlowEnd, TimeReceived)")
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
// schema, goflow2's JSON (v2, or v1 and goflow's), or goflow2's protobuf
// FlowMessage.
//
// A JSON object goes to the native schema's fast path first: it takes a
// record only when every key is one of the native schema's, and turns a
// goflow2 record away at the first key the native schema lacks (as goflow2
// writes them, its first: "type"). Looking for goflow2's keys first
// scanned every native record three times end to end (7 % of the service's
// CPU on the end-to-end benchmark).
func Flow(value []byte, rec *FlowRecord) error {
	trimmed := bytes.TrimLeft(value, " \t\r\n")
	switch {
	case len(trimmed) > 0 && trimmed[0] == '{' && fastNativeFlow(trimmed, rec):
		return nil
	case len(trimmed) > 0 && trimmed[0] == '{' && isGoflowJSON(trimmed):
		return GoflowJSON(value, rec)
	case len(trimmed) > 0 && trimmed[0] == '{' && isGoflowV1JSON(trimmed):
		return GoflowV1JSON(value, rec)
	case len(trimmed) > 0 && trimmed[0] == '{':
		return decodeNativeFlowSlow(value, rec)
	default:
		return GoflowProtobuf(value, rec)
	}
}
