package decode

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"bytes"

	flowpb "github.com/netsampler/goflow2/v2/pb"
	"google.golang.org/protobuf/encoding/protodelim"
	"google.golang.org/protobuf/proto"
)

// goflowJSONSample is goflow2 v2.2.6's JSON for one NetFlow v9 flow exported
// by softflowd, as that exporter chain produces it.
const goflowJSONSample = `{"type":"NETFLOW_V9","time_received_ns":1764000000123456789,"sequence_num":1,"sampling_rate":1,"sampler_address":"127.0.0.1","time_flow_start_ns":1764000000000000000,"time_flow_end_ns":1764000000100000000,"bytes":399,"packets":6,"src_addr":"10.20.0.7","dst_addr":"52.16.0.3","etype":"IPv4","proto":"TCP","src_port":46756,"dst_port":443,"in_if":0,"out_if":0,"src_mac":"02:00:0A:14:00:07","dst_mac":"00:00:00:00:00:00","tcp_flags":27}`

func TestDecodeGoflowJSON(t *testing.T) {
	var r FlowRecord
	if err := Flow([]byte(goflowJSONSample), &r); err != nil {
		t.Fatal(err)
	}
	want := FlowRecord{Time: time.Unix(0, 1764000000100000000).UTC(), SrcIP: netip.MustParseAddr("10.20.0.7"), SrcMAC: "02:00:0a:14:00:07",
		SrcPort: 46756, DstIP: netip.MustParseAddr("52.16.0.3"), DstPort: 443, Proto: "tcp", BytesOut: 399, PacketsOut: 6, TCPFlags: 27}
	if r.Failed == nil || *r.Failed {
		t.Errorf("an acknowledged TCP flow must not count as failed: %v", r.Failed)
	}
	r.Failed = nil
	if r != want {
		t.Fatalf("decoded\n%+v\nwant\n%+v", r, want)
	}
	if f := r.Inbound(); !f.Inbound || f.BytesIn != 399 || f.PacketsIn != 6 {
		t.Errorf("inbound view %+v", f)
	}
}

func TestDecodeGoflowProtobufWithAndWithoutDelimiter(t *testing.T) {
	m := &flowpb.FlowMessage{
		TimeFlowEndNs: 1764000000100000000, Bytes: 120, Packets: 2, SamplingRate: 10,
		SrcAddr: netip.MustParseAddr("10.20.0.9").AsSlice(), DstAddr: netip.MustParseAddr("10.20.0.1").AsSlice(),
		Proto: 6, SrcPort: 50000, DstPort: 22, TcpFlags: tcpSYN, SrcMac: 0x02000a140009,
	}
	plain, _ := proto.Marshal(m)
	var delimited bytes.Buffer
	if _, err := protodelim.MarshalTo(&delimited, m); err != nil {
		t.Fatal(err)
	}
	for name, b := range map[string][]byte{"plain": plain, "delimited": delimited.Bytes()} {
		var r FlowRecord
		if err := Flow(b, &r); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if r.SrcMAC != "02:00:0a:14:00:09" || r.Proto != "tcp" || r.DstPort != 22 || r.BytesOut != 1200 || r.PacketsOut != 20 || !*r.Failed {
			t.Fatalf("%s: %+v (want sampling-scaled bytes and an unanswered SYN as failed)", name, r)
		}
	}
	var r FlowRecord
	var de *Error
	if err := Flow([]byte{0xff, 0xff, 0xff}, &r); !errors.As(err, &de) {
		t.Fatalf("garbage: %v", err)
	}
}

// FuzzDecodeFlow covers every format through the dispatcher. Its seed
// corpus is committed under testdata/fuzz/FuzzDecodeFlow.
func FuzzDecodeFlow(f *testing.F) {
	f.Add([]byte(goflowJSONSample))
	f.Add([]byte(goflowV1JSONSample))
	f.Add([]byte(`{"device_id":"m-1","time_ms":1764000000000,"dst_ip":"10.0.0.1","proto":"udp"}`))
	m, _ := proto.Marshal(&flowpb.FlowMessage{TimeReceivedNs: 1, SrcAddr: []byte{10, 0, 0, 1}, DstAddr: []byte{10, 0, 0, 2}, Proto: 17})
	f.Add(m)
	f.Fuzz(func(t *testing.T, b []byte) {
		var r FlowRecord
		checkDecoded(t, &r, Flow(b, &r))
	})
}

// FuzzDecodeTelemetry checks envelopes never panic the decoder and that a
// decoded envelope's signing bytes exist. Seed corpus in
// testdata/fuzz/FuzzDecodeTelemetry.
func FuzzDecodeTelemetry(f *testing.F) {
	f.Add([]byte(`{"device_id":"plc-1","seq":3,"time_ms":1764000000000,"firmware":"` + strings.Repeat("ab", 32) + `","payload":"e30=","signature":"` + strings.Repeat("A", 86) + `=="}`))
	f.Add([]byte(`{"device_id":"","seq":0}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var tm Envelope
		if err := Telemetry(b, &tm); err == nil {
			if _, err := tm.SigningBytes(); err != nil {
				t.Fatalf("accepted an envelope without signing bytes: %v", err)
			}
		} else if de := (*Error)(nil); !errors.As(err, &de) {
			t.Fatalf("failure without a reason: %v", err)
		}
	})
}

// goflowV1JSONSample is the same flow as goflow2 v1's JSON formatter writes
// it (format/common: each FlowMessage field under its Go name, addresses and
// MACs as text, times in seconds and milliseconds), as cloudflare/goflow v3
// wrote it too, without the milliseconds.
const goflowV1JSONSample = `{"Type":"NETFLOW_V9","TimeReceived":1764000001,"SequenceNum":1,"SamplingRate":0,"SamplerAddress":"127.0.0.1","TimeFlowStart":1764000000,"TimeFlowEnd":1764000000,"TimeFlowStartMs":1764000000000,"TimeFlowEndMs":1764000000100,"Bytes":399,"Packets":6,"SrcAddr":"10.20.0.7","DstAddr":"52.16.0.3","Etype":2048,"Proto":6,"SrcPort":46756,"DstPort":443,"InIf":0,"OutIf":0,"SrcMac":"02:00:0a:14:00:07","DstMac":"00:00:00:00:00:00","TcpFlags":27}`

func TestDecodeGoflowV1JSON(t *testing.T) {
	want := FlowRecord{Time: time.Unix(0, 1764000000100000000).UTC(), SrcIP: netip.MustParseAddr("10.20.0.7"), SrcMAC: "02:00:0a:14:00:07",
		SrcPort: 46756, DstIP: netip.MustParseAddr("52.16.0.3"), DstPort: 443, Proto: "tcp", BytesOut: 399, PacketsOut: 6, TCPFlags: 27}
	var r FlowRecord
	if err := Flow([]byte(goflowV1JSONSample), &r); err != nil {
		t.Fatal(err)
	}
	if r.Failed == nil || *r.Failed {
		t.Errorf("an acknowledged TCP flow must not count as failed: %v", r.Failed)
	}
	r.Failed = nil
	if r != want {
		t.Fatalf("decoded\n%+v\nwant\n%+v", r, want)
	}
	// goflow v3: seconds only.
	secondsOnly := strings.Replace(strings.Replace(goflowV1JSONSample, `"TimeFlowEndMs":1764000000100,`, "", 1), `"TimeFlowStartMs":1764000000000,`, "", 1)
	if err := Flow([]byte(secondsOnly), &r); err != nil || !r.Time.Equal(time.Unix(1764000000, 0)) {
		t.Fatalf("seconds only: %v, time %v", err, r.Time)
	}
	// A MAC as the FlowMessage's number.
	numeric := strings.Replace(goflowV1JSONSample, `"SrcMac":"02:00:0a:14:00:07"`, `"SrcMac":2199192338439`, 1)
	if err := Flow([]byte(numeric), &r); err != nil || r.SrcMAC != "02:00:0a:14:00:07" {
		t.Fatalf("numeric MAC: %v, %q", err, r.SrcMAC)
	}
	// What is wrong is named.
	bad := strings.Replace(goflowV1JSONSample, `"DstAddr":"52.16.0.3"`, `"DstAddr":"nowhere"`, 1)
	if err := Flow([]byte(bad), &r); err == nil || !strings.Contains(err.Error(), "DstAddr") {
		t.Fatalf("bad address: %v", err)
	}
}
