package decode

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestDecodeNativeFlow(t *testing.T) {
	var r FlowRecord
	err := NativeFlow([]byte(`{"device_id":"m-1","time":"2026-11-24T10:00:00.5Z","src_mac":"AA:BB:CC:DD:EE:FF","dst_ip":"10.0.0.1","dst_port":443,"proto":6,"bytes_out":10,"packets_out":1}`), &r)
	if err != nil {
		t.Fatal(err)
	}
	if r.DeviceID != "m-1" || r.Proto != "tcp" || r.SrcMAC != "aa:bb:cc:dd:ee:ff" || !r.Time.Equal(time.Date(2026, 11, 24, 10, 0, 0, 5e8, time.UTC)) {
		t.Fatalf("decoded %+v", r)
	}
	if f := r.Feature(); !f.Failed {
		t.Error("TCP flow with no packet back should count as failed")
	}
	if err := NativeFlow([]byte(`{"src_ip":"10.1.1.1","time_ms":1764000000000,"dst_ip":"::1","proto":"UDP","failed":false}`), &r); err != nil || r.Proto != "udp" || r.Feature().Failed {
		t.Fatalf("udp record: %+v, %v", r, err)
	}
}

func TestDecodeRejectsWithReasons(t *testing.T) {
	cases := map[string]string{
		`not json`: "not JSON",
		`{"device_id":"d","time_ms":1,"proto":"tcp"}`:                                                  "missing dst_ip",
		`{"device_id":"d","dst_ip":"1.2.3.4","proto":"tcp"}`:                                           "missing time",
		`{"device_id":"d","time":"yesterday","dst_ip":"1.2.3.4","proto":"tcp"}`:                        "not RFC 3339",
		`{"device_id":"d","time_ms":1,"dst_ip":"1.2.3.999","proto":"tcp"}`:                             "dst_ip",
		`{"time_ms":1,"dst_ip":"1.2.3.4","proto":"tcp"}`:                                               "no device_id, src_mac or src_ip",
		`{"device_id":"d","time_ms":1,"dst_ip":"1.2.3.4"}`:                                             "missing proto",
		`{"device_id":"d","time_ms":1,"dst_ip":"1.2.3.4","proto":"tcp","bytes_out":-3}`:                "bytes_out",
		`{"device_id":"d","time_ms":1,"time":"2026-01-01T00:00:00Z","dst_ip":"1.2.3.4","proto":"tcp"}`: "both time and time_ms",
	}
	for in, want := range cases {
		var r FlowRecord
		err := NativeFlow([]byte(in), &r)
		var de *Error
		if !errors.As(err, &de) || !strings.Contains(de.Reason, want) {
			t.Errorf("%s: err = %v, want a Error mentioning %q", in, err, want)
		}
	}
}

// FuzzDecodeNativeFlow checks that no input panics and that every failure is
// a Error with a reason, which the dead-letter header needs.
func FuzzDecodeNativeFlow(f *testing.F) {
	f.Add([]byte(`{"device_id":"meter-0001","time_ms":1764000000000,"src_ip":"10.20.0.1","dst_ip":"52.16.0.1","dst_port":443,"proto":"tcp","bytes_out":900,"bytes_in":400,"packets_out":1,"packets_in":1,"tcp_flags":27}`))
	f.Add([]byte(`{"src_mac":"02:00:0a:14:00:01","time":"2026-11-24T00:00:00Z","dst_ip":"::1","proto":17}`))
	f.Add([]byte(`{}`))
	f.Add([]byte(`[1,2]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var r FlowRecord
		checkDecoded(t, &r, NativeFlow(b, &r))
	})
}

// checkDecoded holds every flow decoder to one contract: an accepted record
// is complete, a refused one says why (the dead-letter header needs it).
func checkDecoded(t *testing.T, r *FlowRecord, err error) {
	if err == nil {
		if !r.DstIP.IsValid() || r.Time.IsZero() || r.Proto == "" {
			t.Fatalf("accepted an incomplete record: %+v", r)
		}
		return
	}
	var de *Error
	if !errors.As(err, &de) || de.Reason == "" {
		t.Fatalf("failure without a reason: %v", err)
	}
}

// FuzzFastPathMatchesEncodingJSON is a differential test: whatever the fast
// native decoder accepts, the encoding/json path must accept too, with the
// identical record.
func FuzzFastPathMatchesEncodingJSON(f *testing.F) {
	f.Add([]byte(`{"device_id":"meter-0001","time_ms":1764000000000,"src_ip":"10.20.0.1","src_mac":"02:00:0A:14:00:01","src_port":5,"dst_ip":"52.16.0.1","dst_port":443,"proto":"tcp","bytes_out":900,"bytes_in":400,"packets_out":1,"packets_in":1,"tcp_flags":27}`))
	f.Add([]byte(` { "src_ip" : "::1" , "time" : "2026-11-24T00:00:00.5Z" , "dst_ip" : "10.0.0.1" , "proto" : 17 , "failed" : true } `))
	f.Add([]byte(`{"device_id":"a","time_ms":1,"dst_ip":"1.2.3.4","proto":47,"time_ms":2}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var fast FlowRecord
		if !fastNativeFlow(b, &fast) {
			return
		}
		var slow FlowRecord
		if err := decodeNativeFlowSlow(b, &slow); err != nil {
			t.Fatalf("fast path accepted what encoding/json rejects (%v): %q", err, b)
		}
		ff, sf := fast.Failed, slow.Failed
		fast.Failed, slow.Failed = nil, nil
		if fast != slow || (ff == nil) != (sf == nil) || (ff != nil && *ff != *sf) {
			t.Fatalf("paths disagree on %q:\nfast %+v\nslow %+v", b, fast, slow)
		}
	})
}

// A destination on the internet belongs to the peer of its network, a
// host of the device's site is a peer of its own: two addresses of one
// cloud /24 (or IPv6 /48) are one peer, two hosts of the site's LAN — or
// of a site whose devices have global addresses — are two. Each address
// keeps a key of its own.
func TestPeerKeyKeysInternetPeersByNetwork(t *testing.T) {
	addr := netip.MustParseAddr
	lan, v6site := addr("10.20.0.7"), addr("2a02:6b8:7:1::10")
	same := [][3]string{ // device, destination, destination
		{"10.20.0.7", "34.100.0.7", "34.100.0.201"},
		{"10.20.0.7", "34.100.0.7", "::ffff:34.100.0.9"}, // IPv4-mapped
		{"2a02:6b8:7:1::10", "2600:1f18:4000::1", "2600:1f18:4000:ffff::2"},
		{"", "34.100.0.7", "34.100.0.8"}, // a record that names its device only
	}
	for _, c := range same {
		src, _ := netip.ParseAddr(c[0])
		a, b := addr(c[1]), addr(c[2])
		if PeerKey(src, a) != PeerKey(src, b) {
			t.Errorf("from %s: %s and %s are keyed apart, want one peer", c[0], c[1], c[2])
		}
		if DstKey(a) == DstKey(b) {
			t.Errorf("%s and %s share an address key", c[1], c[2])
		}
		if OnSite(src, a) || OnSite(src, b) {
			t.Errorf("from %s: %s or %s taken for a host of the site", c[0], c[1], c[2])
		}
	}
	apart := [][3]string{
		{"10.20.0.7", "34.100.0.7", "34.100.1.7"}, // another /24
		{"2a02:6b8:7:1::10", "2600:1f18:4000::1", "2600:1f18:4001::1"},
		{"10.20.0.7", "10.20.0.8", "10.20.0.9"}, // hosts of the site
		{"10.20.0.7", "172.16.0.1", "172.16.0.2"},
		{"10.20.0.7", "192.168.1.1", "192.168.1.2"},
		{"2a02:6b8:7:1::10", "fd00::1", "fd00::2"},
		{"2a02:6b8:7:1::10", "fe80::1", "fe80::2"},
		{"2a02:6b8:7:1::10", "2a02:6b8:7:2::20", "2a02:6b8:7:3::30"}, // a global site: its own /48
		{"100.24.7.7", "100.24.7.8", "100.24.7.9"},                   // a public /24 of its own
		{"10.20.0.7", "203.0.113.10", "203.0.113.66"},                // documentation prefixes: each address its own
		{"10.20.0.7", "198.51.100.10", "198.51.100.66"},
		{"10.20.0.7", "2001:db8:1::10", "2001:db8:1::66"},
		{"10.20.0.7", "10.20.0.8", "34.100.0.7"},
	}
	for _, c := range apart {
		src, _ := netip.ParseAddr(c[0])
		if PeerKey(src, addr(c[1])) == PeerKey(src, addr(c[2])) {
			t.Errorf("from %s: %s and %s share a key, want two peers", c[0], c[1], c[2])
		}
	}
	// A host of the site is its own peer, and lateral fan-out.
	for _, c := range [][2]netip.Addr{{lan, addr("10.20.0.8")}, {v6site, addr("2a02:6b8:7:2::20")}, {addr("100.24.7.7"), addr("100.24.7.8")}} {
		if !OnSite(c[0], c[1]) || PeerKey(c[0], c[1]) != DstKey(c[1]) {
			t.Errorf("from %s: %s not a host of the site keyed by its address", c[0], c[1])
		}
	}
	// Records decode to flows that carry both keys.
	r := FlowRecord{SrcIP: v6site, DstIP: addr("2a02:6b8:7:2::20"), Proto: "udp"}
	if f := r.Feature(); !f.Internal || f.Peer != f.Dst {
		t.Errorf("an on-site IPv6 destination decoded as %+v", f)
	}
	r.DstIP = addr("2600:1f18:4000::1")
	if f := r.Feature(); f.Internal || f.Peer == f.Dst || f.Peer != PeerKey(v6site, addr("2600:1f18:4000::2")) {
		t.Errorf("an internet IPv6 destination decoded as %+v", f)
	}
}
