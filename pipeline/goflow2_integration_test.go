package pipeline_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/chainwatch/chainwatch/ledgerclient/contract"
	"github.com/chainwatch/chainwatch/pipeline"
)

// requireTool finds an external program for an integration test. In CI
// (CI set) a missing tool fails the test, since .ci/run installs it;
// elsewhere the test skips and says how to get it.
func requireTool(t *testing.T, name, install string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, dir := range []string{filepath.Join(os.Getenv("HOME"), "go", "bin"), "/usr/sbin"} {
		if p := filepath.Join(dir, name); fileExists(p) {
			return p
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("%s is missing; .ci/run installs it with: %s", name, install)
	}
	t.Skipf("%s is not installed (%s)", name, install)
	return ""
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

// TestGoflow2RecordsReachFeatureWindows runs the real exporter chain: a
// packet capture of a device's TCP conversations → softflowd (NetFlow v9
// exporter) → goflow2 (collector, JSON or protobuf to Kafka) → the detection
// stage, and checks the device's flows — both legs — reach its feature
// windows. goflow2 runs as the README says (records hashed to partitions by
// a mapping's key, the exporter's address), and the device's flows stay in
// one of the topic's two partitions; run without -transport.kafka.hashing,
// as goflow2 runs by default, it spreads them round-robin over both, and
// the service reports the device split.
func TestGoflow2RecordsReachFeatureWindows(t *testing.T) {
	softflowd := requireTool(t, "softflowd", "apt-get install softflowd")
	goflow2 := requireTool(t, "goflow2", "go install github.com/netsampler/goflow2/v2/cmd/goflow2@v2.2.6")
	for _, format := range []string{"json", "bin"} {
		t.Run(format, func(t *testing.T) {
			if split := runExporterChain(t, softflowd, goflow2, format, true); split != 0 {
				t.Errorf("keyed by exporter: %v devices on several partitions, want 0", split)
			}
		})
	}
	t.Run("json/round-robin", func(t *testing.T) {
		if split := runExporterChain(t, softflowd, goflow2, "json", false); split != 1 {
			t.Errorf("goflow2's default partitioning: %v devices on several partitions, want the device reported split", split)
		}
	})
}

// runExporterChain runs the chain once, goflow2 keying records by exporter
// when keyed is set, and returns chainwatch_devices_on_several_partitions
// once every record is in.
func runExporterChain(t *testing.T, softflowd, goflow2, format string, keyed bool) float64 {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	env := startEmbeddedDefault(t, 2)
	deviceMAC := net.HardwareAddr{0x02, 0x00, 0x0a, 0x14, 0x00, 0x07}
	if _, err := env.as(contract.RoleManufacturer).RegisterDevice(ctx, contract.Device{
		ID: "camera-0007", Profile: "camera", Owner: "acme", MACs: []string{deviceMAC.String()}, IPs: []string{"10.20.0.7"},
	}); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	svc := pipeline.NewService(pipeline.ServiceConfig{Kafka: env.kafka, Partitions: 2, ModelDir: filepath.Join(env.dir, "models"), OutboxPath: filepath.Join(env.dir, "outbox.db"),
		Detect: pipeline.DetectConfig{Window: pipeline.WindowConfig{Size: time.Minute, AllowedLateness: time.Second}}}, env.as(contract.RoleService), reg, testLogger(t))
	if err := svc.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer svc.Shutdown(context.Background())

	// goflow2 collecting NetFlow on a free UDP port, producing to iot.flows.
	// One decoding worker: with several, a data packet can be decoded before
	// the template packet that precedes it on the wire, and its flows are
	// dropped ("template error") until softflowd resends the template.
	port := freeUDPPort(t)
	args := []string{"-listen", fmt.Sprintf("netflow://127.0.0.1:%d?workers=1", port),
		"-transport", "kafka", "-transport.kafka.brokers", env.brokers[0], "-transport.kafka.topic", env.topics.Flows,
		"-transport.kafka.flushfreq", "100ms", "-format", format}
	if keyed {
		mapping := filepath.Join(env.dir, "mapping.yaml")
		if err := os.WriteFile(mapping, []byte("formatter:\n  key:\n    - sampler_address\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		args = append(args, "-transport.kafka.hashing", "-mapping", mapping)
	}
	collector := exec.CommandContext(ctx, goflow2, args...)
	var collectorLog strings.Builder
	collector.Stdout, collector.Stderr = &collectorLog, &collectorLog
	if err := collector.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = collector.Process.Kill(); _ = collector.Wait() }()
	time.Sleep(500 * time.Millisecond) // let it bind

	// Five minutes of a camera's TCP conversations with two cloud peers.
	pcap := filepath.Join(env.dir, "camera.pcap")
	conversations := writeConversationPcap(t, pcap, deviceMAC)
	exporter := exec.CommandContext(ctx, softflowd, "-r", pcap, "-n", fmt.Sprintf("127.0.0.1:%d", port), "-v", "9", "-d")
	if out, err := exporter.CombinedOutput(); err != nil {
		t.Fatalf("softflowd: %v\n%s", err, out)
	}

	// Every conversation is two unidirectional flows; all reach the stage,
	// none is taken for a rogue device, and the device's windows close with
	// features (they feed the camera profile's warm-up).
	summary := &svc.Metrics().Summary
	want := int64(2 * conversations)
	for summary.RecordsConsumed.Load() < want || warmupWindows(t, reg, "camera") < 3 {
		if ctx.Err() != nil {
			t.Fatalf("consumed %d of %d flow records, %v camera windows closed\ngoflow2:\n%s",
				summary.RecordsConsumed.Load(), want, warmupWindows(t, reg, "camera"), collectorLog.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	if r := summary.RecordsRejected.Load(); r != 0 {
		t.Errorf("%d goflow2 records were dead-lettered", r)
	}
	if byKind := summary.AlertsByKind(); byKind[contract.AlertRogueDevice] != 0 {
		t.Errorf("reply legs taken for rogue devices: %v", byKind)
	}
	// The split gauge is refreshed at each commit (every second): read it
	// once a commit has run after every record was in, so that a 0 is not
	// merely the value from before the second partition's records.
	time.Sleep(1500 * time.Millisecond)
	split := gaugeValue(t, reg, "chainwatch_devices_on_several_partitions")
	t.Logf("format %s, keyed %v: %d flow records from %d conversations, %v camera windows, %v devices on several partitions",
		format, keyed, summary.RecordsConsumed.Load(), conversations, warmupWindows(t, reg, "camera"), split)
	return split
}

func gaugeValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) > 0 {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	return 0
}

func warmupWindows(t *testing.T, reg *prometheus.Registry, profile string) float64 {
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "chainwatch_warmup_windows" {
			continue
		}
		for _, m := range mf.GetMetric() {
			if labelIs(m, "profile", profile) {
				return m.GetGauge().GetValue()
			}
		}
	}
	return 0
}

func labelIs(m *dto.Metric, name, value string) bool {
	for _, l := range m.GetLabel() {
		if l.GetName() == name && l.GetValue() == value {
			return true
		}
	}
	return false
}

func freeUDPPort(t *testing.T) int {
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}

// writeConversationPcap writes a classic pcap of complete TCP conversations
// (handshake, request, response, close) from the device to two peers, one
// every 10 s for five minutes of capture time, and returns their number.
func writeConversationPcap(t *testing.T, path string, deviceMAC net.HardwareAddr) int {
	gateway := net.HardwareAddr{0x02, 0x00, 0x0a, 0x14, 0x00, 0x01}
	device := net.IPv4(10, 20, 0, 7).To4()
	peers := []net.IP{net.IPv4(52, 16, 0, 3).To4(), net.IPv4(52, 16, 0, 4).To4()}
	var b []byte
	b = binary.LittleEndian.AppendUint32(b, 0xa1b2c3d4)
	b = binary.LittleEndian.AppendUint16(b, 2)
	b = binary.LittleEndian.AppendUint16(b, 4)
	b = binary.LittleEndian.AppendUint32(b, 0)     // thiszone
	b = binary.LittleEndian.AppendUint32(b, 0)     // sigfigs
	b = binary.LittleEndian.AppendUint32(b, 65535) // snaplen
	b = binary.LittleEndian.AppendUint32(b, 1)     // Ethernet
	start := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	n := 0
	for i := 0; i < 30; i++ {
		at := start.Add(time.Duration(i) * 10 * time.Second)
		peer := peers[i%2]
		sport := uint16(40000 + i)
		type seg struct {
			fromDevice bool
			flags      byte
			payload    int
		}
		for k, s := range []seg{{true, 0x02, 0}, {false, 0x12, 0}, {true, 0x10, 0}, {true, 0x18, 120}, {false, 0x18, 1400}, {true, 0x11, 0}, {false, 0x11, 0}, {true, 0x10, 0}} {
			ts := at.Add(time.Duration(k) * 20 * time.Millisecond)
			var frame []byte
			if s.fromDevice {
				frame = tcpFrame(deviceMAC, gateway, device, peer, sport, 443, s.flags, s.payload)
			} else {
				frame = tcpFrame(gateway, deviceMAC, peer, device, 443, sport, s.flags, s.payload)
			}
			b = binary.LittleEndian.AppendUint32(b, uint32(ts.Unix()))
			b = binary.LittleEndian.AppendUint32(b, uint32(ts.Nanosecond()/1000))
			b = binary.LittleEndian.AppendUint32(b, uint32(len(frame)))
			b = binary.LittleEndian.AppendUint32(b, uint32(len(frame)))
			b = append(b, frame...)
		}
		n++
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return n
}

func tcpFrame(srcMAC, dstMAC net.HardwareAddr, src, dst net.IP, sport, dport uint16, flags byte, payload int) []byte {
	f := append(append([]byte{}, dstMAC...), srcMAC...)
	f = binary.BigEndian.AppendUint16(f, 0x0800)
	ip := make([]byte, 20)
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(20+20+payload))
	ip[8], ip[9] = 64, 6
	copy(ip[12:16], src)
	copy(ip[16:20], dst)
	var sum uint32
	for i := 0; i < 20; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(ip[i:]))
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	binary.BigEndian.PutUint16(ip[10:], ^uint16(sum))
	tcp := make([]byte, 20)
	binary.BigEndian.PutUint16(tcp[0:], sport)
	binary.BigEndian.PutUint16(tcp[2:], dport)
	tcp[12] = 5 << 4
	tcp[13] = flags
	binary.BigEndian.PutUint16(tcp[14:], 65535)
	f = append(append(f, ip...), tcp...)
	return append(f, make([]byte, payload)...)
}
