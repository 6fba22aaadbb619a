package decode

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"
)

// Error says why a record was rejected; its Reason goes into the
// dead-letter record's header.
type Error struct {
	Reason string
}

func (e *Error) Error() string { return "undecodable record: " + e.Reason }

func rejectf(format string, args ...any) error {
	return &Error{Reason: fmt.Sprintf(format, args...)}
}

// nativeFlow is the native JSON flow schema (README, "Native flow schema").
type nativeFlow struct {
	DeviceID   string          `json:"device_id"`
	Time       string          `json:"time"`
	TimeMs     *int64          `json:"time_ms"`
	SrcIP      string          `json:"src_ip"`
	SrcMAC     string          `json:"src_mac"`
	SrcPort    uint16          `json:"src_port"`
	DstIP      string          `json:"dst_ip"`
	DstPort    uint16          `json:"dst_port"`
	Proto      json.RawMessage `json:"proto"`
	BytesOut   uint64          `json:"bytes_out"`
	BytesIn    uint64          `json:"bytes_in"`
	PacketsOut uint64          `json:"packets_out"`
	PacketsIn  uint64          `json:"packets_in"`
	TCPFlags   uint8           `json:"tcp_flags"`
	Failed     *bool           `json:"failed"`
}

// NativeFlow decodes one record of the native JSON flow schema. Every
// problem comes back as a *Error naming the field.
func NativeFlow(value []byte, rec *FlowRecord) error {
	if fastNativeFlow(value, rec) {
		return nil
	}
	return decodeNativeFlowSlow(value, rec)
}

// decodeNativeFlowSlow is the encoding/json path: it takes every record the
// fast path leaves, and words the reasons for rejecting one.
func decodeNativeFlowSlow(value []byte, rec *FlowRecord) error {
	var n nativeFlow
	if err := json.Unmarshal(value, &n); err != nil {
		var syn *json.SyntaxError
		var typ *json.UnmarshalTypeError
		switch {
		case errors.As(err, &typ):
			return rejectf("field %s: %s is not a valid %s", typ.Field, typ.Value, typ.Type)
		case errors.As(err, &syn):
			return rejectf("not JSON: %v at byte %d", syn, syn.Offset)
		}
		return rejectf("not JSON: %v", err)
	}
	*rec = FlowRecord{
		DeviceID: n.DeviceID, SrcPort: n.SrcPort, DstPort: n.DstPort,
		BytesOut: n.BytesOut, BytesIn: n.BytesIn, PacketsOut: n.PacketsOut, PacketsIn: n.PacketsIn,
		TCPFlags: n.TCPFlags, Failed: n.Failed,
	}
	switch {
	case n.TimeMs != nil && n.Time != "":
		return rejectf("both time and time_ms are set")
	case n.TimeMs != nil:
		if *n.TimeMs <= 0 {
			return rejectf("time_ms %d is not a positive Unix time", *n.TimeMs)
		}
		rec.Time = time.UnixMilli(*n.TimeMs).UTC()
	case n.Time != "":
		t, err := time.Parse(time.RFC3339Nano, n.Time)
		if err != nil {
			return rejectf("time %q is not RFC 3339", n.Time)
		}
		rec.Time = t.UTC()
	default:
		return rejectf("missing time (or time_ms)")
	}
	if n.DstIP == "" {
		return rejectf("missing dst_ip")
	}
	var err error
	if rec.DstIP, err = netip.ParseAddr(n.DstIP); err != nil {
		return rejectf("dst_ip %q is not an IP address", n.DstIP)
	}
	if n.SrcIP != "" {
		if rec.SrcIP, err = netip.ParseAddr(n.SrcIP); err != nil {
			return rejectf("src_ip %q is not an IP address", n.SrcIP)
		}
	}
	if n.SrcMAC != "" {
		hw, err := net.ParseMAC(n.SrcMAC)
		if err != nil {
			return rejectf("src_mac %q is not a MAC address", n.SrcMAC)
		}
		rec.SrcMAC = hw.String()
	}
	if rec.DeviceID == "" && rec.SrcMAC == "" && !rec.SrcIP.IsValid() {
		return rejectf("no device_id, src_mac or src_ip to identify the device")
	}
	switch {
	case len(n.Proto) == 0:
		return rejectf("missing proto")
	case n.Proto[0] == '"':
		var s string
		if err := json.Unmarshal(n.Proto, &s); err != nil || s == "" {
			return rejectf("proto %s is not a protocol name or number", n.Proto)
		}
		rec.Proto = protoName(s)
	default:
		var num uint8
		if err := json.Unmarshal(n.Proto, &num); err != nil {
			return rejectf("proto %s is not a protocol name or number", n.Proto)
		}
		rec.Proto = protoName(fmt.Sprint(num))
	}
	return nil
}
