package decode

import (
	"net/netip"
	"strconv"
	"time"
	"unsafe"
)

// fastNativeFlow decodes the native schema without encoding/json when the
// record is a flat object of known keys with plain values — what collectors
// and the simulator send. It reports false on anything else (escapes,
// unknown or differently-cased keys, nulls, floats, nesting, bad values),
// and NativeFlow then takes the encoding/json path, which also words
// the errors. FuzzFastPathMatchesEncodingJSON checks both paths agree.
func fastNativeFlow(b []byte, rec *FlowRecord) bool {
	*rec = FlowRecord{}
	var (
		timeMs              int64
		haveTimeMs, haveRFC bool
		rfc, dst, src, mac  []byte
		proto               []byte
		protoNum            uint64
		protoIsNum          bool
		failed              bool
		haveFailed          bool
	)
	i := skipSpace(b, 0)
	if i >= len(b) || b[i] != '{' {
		return false
	}
	i = skipSpace(b, i+1)
	if i < len(b) && b[i] == '}' {
		return false // empty object: let the slow path word the error
	}
	for {
		key, j, ok := plainString(b, i)
		if !ok {
			return false
		}
		i = skipSpace(b, j)
		if i >= len(b) || b[i] != ':' {
			return false
		}
		i = skipSpace(b, i+1)
		switch string(key) { // no allocation: the compiler converts in place
		case "device_id":
			v, j, ok := plainString(b, i)
			if !ok {
				return false
			}
			rec.DeviceID, i = string(v), j
		case "time":
			rfc, i, ok = plainString(b, i)
			haveRFC = ok
		case "src_ip":
			src, i, ok = plainString(b, i)
		case "src_mac":
			mac, i, ok = plainString(b, i)
		case "dst_ip":
			dst, i, ok = plainString(b, i)
		case "proto":
			if i < len(b) && b[i] == '"' {
				proto, i, ok = plainString(b, i)
			} else {
				protoNum, i, ok = plainUint(b, i, 255)
				protoIsNum = true
			}
		case "time_ms":
			var v uint64
			v, i, ok = plainUint(b, i, 1<<63-1)
			timeMs, haveTimeMs = int64(v), true
		case "src_port", "dst_port":
			var v uint64
			v, i, ok = plainUint(b, i, 65535)
			if key[0] == 's' {
				rec.SrcPort = uint16(v)
			} else {
				rec.DstPort = uint16(v)
			}
		case "bytes_out":
			rec.BytesOut, i, ok = plainUint(b, i, 1<<64-1)
		case "bytes_in":
			rec.BytesIn, i, ok = plainUint(b, i, 1<<64-1)
		case "packets_out":
			rec.PacketsOut, i, ok = plainUint(b, i, 1<<64-1)
		case "packets_in":
			rec.PacketsIn, i, ok = plainUint(b, i, 1<<64-1)
		case "tcp_flags":
			var v uint64
			v, i, ok = plainUint(b, i, 255)
			rec.TCPFlags = uint8(v)
		case "failed":
			switch {
			case hasPrefixAt(b, i, "true"):
				failed, i = true, i+4
			case hasPrefixAt(b, i, "false"):
				failed, i = false, i+5
			default:
				return false
			}
			haveFailed = true
		default:
			return false
		}
		if !ok {
			return false
		}
		i = skipSpace(b, i)
		if i >= len(b) {
			return false
		}
		if b[i] == '}' {
			if skipSpace(b, i+1) != len(b) {
				return false
			}
			break
		}
		if b[i] != ',' {
			return false
		}
		i = skipSpace(b, i+1)
	}

	// The same checks, in the same order, as the encoding/json path.
	switch {
	case haveTimeMs && haveRFC:
		return false
	case haveTimeMs:
		if timeMs <= 0 {
			return false
		}
		rec.Time = time.UnixMilli(timeMs).UTC()
	case haveRFC:
		t, err := time.Parse(time.RFC3339Nano, unsafe.String(unsafe.SliceData(rfc), len(rfc)))
		if err != nil {
			return false
		}
		rec.Time = t.UTC()
	default:
		return false
	}
	var err error
	if len(dst) == 0 {
		return false
	}
	if rec.DstIP, err = netip.ParseAddr(unsafe.String(unsafe.SliceData(dst), len(dst))); err != nil {
		return false
	}
	if len(src) > 0 {
		if rec.SrcIP, err = netip.ParseAddr(unsafe.String(unsafe.SliceData(src), len(src))); err != nil {
			return false
		}
	}
	if len(mac) > 0 {
		var ok bool
		if rec.SrcMAC, ok = canonicalMAC48(mac); !ok {
			return false
		}
	}
	if rec.DeviceID == "" && rec.SrcMAC == "" && !rec.SrcIP.IsValid() {
		return false
	}
	switch {
	case protoIsNum:
		rec.Proto = protoNumberName(protoNum)
	case len(proto) == 0:
		return false
	default:
		rec.Proto = protoName(string(proto))
	}
	if haveFailed {
		rec.Failed = &failed
	}
	return true
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

func hasPrefixAt(b []byte, i int, s string) bool {
	return len(b)-i >= len(s) && string(b[i:i+len(s)]) == s
}

// plainString reads a JSON string without escapes or control characters.
func plainString(b []byte, i int) ([]byte, int, bool) {
	if i >= len(b) || b[i] != '"' {
		return nil, i, false
	}
	for j := i + 1; j < len(b); j++ {
		switch c := b[j]; {
		case c == '"':
			return b[i+1 : j], j + 1, true
		case c == '\\' || c < 0x20 || c >= 0x80:
			return nil, i, false // escapes and non-ASCII: the slow path decides
		}
	}
	return nil, i, false
}

// plainUint reads a JSON integer without sign, leading zero, fraction or
// exponent, no larger than limit.
func plainUint(b []byte, i int, limit uint64) (uint64, int, bool) {
	j := i
	var v uint64
	for j < len(b) && b[j] >= '0' && b[j] <= '9' {
		d := uint64(b[j] - '0')
		if v > (limit-d)/10 {
			return 0, i, false
		}
		v = v*10 + d
		j++
	}
	if j == i || (b[i] == '0' && j-i > 1) {
		return 0, i, false
	}
	if j < len(b) && (b[j] == '.' || b[j] == 'e' || b[j] == 'E') {
		return 0, i, false
	}
	return v, j, true
}

// canonicalMAC48 lower-cases a colon-separated 48-bit MAC.
func canonicalMAC48(b []byte) (string, bool) {
	if len(b) != 17 {
		return "", false
	}
	var out [17]byte
	for k := range 17 {
		c := b[k]
		if k%3 == 2 {
			if c != ':' {
				return "", false
			}
			out[k] = c
			continue
		}
		switch {
		case c >= '0' && c <= '9', c >= 'a' && c <= 'f':
			out[k] = c
		case c >= 'A' && c <= 'F':
			out[k] = c + 'a' - 'A'
		default:
			return "", false
		}
	}
	return string(out[:]), true
}

// protoNumberName names an IANA protocol number as protoName does.
func protoNumberName(n uint64) string {
	switch n {
	case 6:
		return "tcp"
	case 17:
		return "udp"
	case 1:
		return "icmp"
	}
	return protoName(strconv.FormatUint(n, 10))
}
