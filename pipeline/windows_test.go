package pipeline

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/chainwatch/chainwatch/models"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/chainwatch/chainwatch/ledgerclient/contract"
	"github.com/chainwatch/chainwatch/models/features"
	"github.com/chainwatch/chainwatch/pipeline/incidents"
)

func TestWindowsCloseAtTheWatermarkAndTrackCommittableOffsets(t *testing.T) {
	p := newPartitionWindows(WindowConfig{Size: time.Minute, AllowedLateness: 10 * time.Second}, 0)
	t0 := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	flow := features.Flow{Dst: 1, DstPort: 443, BytesOut: 100, PacketsOut: 1}
	var closed []ClosedWindow
	add := func(dev string, at time.Duration, off int64) bool {
		var ok bool
		closed, ok = p.Add(dev, "meter", t0.Add(at), off, flow, closed[:0])
		return ok
	}
	add("a", 5*time.Second, 0)
	add("b", 20*time.Second, 1)
	add("a", 50*time.Second, 2)
	if len(closed) != 0 || p.committable() != -1 {
		t.Fatalf("nothing should close or be committable yet (closed %d, committable %d)", len(closed), p.committable())
	}
	// b moves into the next window. Its window stays open until the
	// watermark passes 12:01:10 too: flow records are stamped with their
	// end and come in no strict order, and a record of b's first window
	// arriving after one of its next still joins it.
	add("b", 65*time.Second, 3)
	if len(closed) != 0 {
		t.Fatalf("closed %+v before the watermark passed any window", closed)
	}
	if !add("b", 58*time.Second, 4) {
		t.Fatal("b's record for its previous window, 7 s behind the watermark, refused")
	}
	if p.openWindows() != 3 || p.committable() != -1 {
		t.Fatalf("%d windows open, committable %d: want a's, b's two and -1", p.openWindows(), p.committable())
	}
	// A record 10 s late for a's open window is still accepted.
	if !add("a", 55*time.Second, 5) {
		t.Fatal("record within a's open window refused")
	}
	add("c", 71*time.Second, 6) // watermark 12:01:11 → the windows [12:00, 12:01) close
	if len(closed) != 2 || closed[0].DeviceID != "a" || closed[0].Vector[features.Flows] != 3 || closed[0].FirstOffset != 0 || closed[0].LastOffset != 5 ||
		closed[1].DeviceID != "b" || closed[1].Vector[features.Flows] != 2 || closed[1].FirstOffset != 1 || closed[1].LastOffset != 4 {
		t.Fatalf("closed %+v, want a's window with 3 flows over offsets 0..5 and b's with 2 over 1..4", closed)
	}
	p.Release(&closed[0], true)
	p.Release(&closed[1], true)
	if got := p.committable(); got != 2 {
		t.Fatalf("committable %d, want 2 (b's open window starts at offset 3)", got)
	}
	// A record for a's closed window is too late.
	if add("a", 30*time.Second, 7) || add("b", 40*time.Second, 8) {
		t.Fatal("record for a closed window accepted")
	}
}

func TestHistoryLearnsOnlyFromNormalWindows(t *testing.T) {
	p := newPartitionWindows(WindowConfig{}, 0)
	// A device past its first windows (a bare history checkpoint restores
	// one as mature), whose new destinations count.
	var empty features.History
	bare, _ := empty.MarshalBinary()
	p.restore = func(d *deviceState) { _ = d.feat.UnmarshalBinary(bare) }
	t0 := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	var closed []ClosedWindow
	closed, _ = p.Add("a", "meter", t0, 0, features.Flow{Dst: 7}, closed)
	// Each record passes the watermark (less the default 10 s lateness)
	// beyond the window before it, which closes.
	next := func(minutes int) time.Time { return t0.Add(time.Duration(minutes)*time.Minute + 15*time.Second) }
	closed, _ = p.Add("a", "meter", next(1), 1, features.Flow{Dst: 7}, closed[:0])
	p.Release(&closed[0], false) // judged anomalous: destination 7 is not learned
	closed, _ = p.Add("a", "meter", next(2), 2, features.Flow{Dst: 7}, closed[:0])
	if closed[0].Vector[features.NewDst] != 1 {
		t.Fatalf("new_dst %v, want 1: an anomalous window must not teach the history", closed[0].Vector[features.NewDst])
	}
	p.Release(&closed[0], true)
	closed, _ = p.Add("a", "meter", next(3), 3, features.Flow{Dst: 8}, closed[:0])
	if closed[0].Vector[features.NewDst] != 0 {
		t.Fatalf("new_dst %v, want 0 after a normal window taught destination 7", closed[0].Vector[features.NewDst])
	}
}

func TestRestoredHistoryKnowsItsDestinations(t *testing.T) {
	// A device checkpoint of this version restores the destination
	// history, the baseline and the open incident; one of version 11 all of
	// them but the baseline's trends, one of version 10 nor its mean
	// flows, one of version 9 nor its shares
	// of raised windows either. One of version 8 (its
	// destinations keyed by address, feature schema 3), 7 (before the
	// port history) or 6 (before the incident state kept its windows'
	// evidence) restores the open incident but neither the destinations,
	// which no window keys so any longer, nor the baseline; a bare history
	// as schema 1 wrote it restores nothing.
	saved := newDeviceState("", "")
	saved.feat.History.Add(7)
	saved.feat.Ports.Add(443)
	saved.baseline.Weight = 12
	saved.baseline.Elevated, saved.baseline.Persistent = 0.25, 0.125
	saved.baseline.Flows = 6.5
	saved.baseline.Trend[features.Flows] = 0.01
	saved.incident.Observe(incidents.Rule{}, incidents.Window{Index: 100, Level: incidents.High, Score: 0.9}, nil)
	current := marshalDevice(saved)
	// Version 7 (feature schema 2): no port history (54 bytes) nor recent
	// hosts' peers (8 bytes each), and a baseline of 14 features, which is
	// not restored. Version 8 (feature schema 3): no recent hosts' peers.
	feat, _ := saved.feat.MarshalBinary()
	inc, _ := saved.incident.MarshalBinary()
	v7 := append([]byte{7}, feat[:len(feat)-54-features.RecentSize*8]...)
	v7 = append(v7, make([]byte, models.DeviceBaselineEncodingSizeV2)...)
	v7 = append(v7, inc...)
	v6 := append([]byte{6}, v7[1:len(v7)-4*incidents.EvidenceSlots]...)
	base, _ := saved.baseline.MarshalBinary()
	v8 := append([]byte{8}, feat[:len(feat)-features.RecentSize*8]...)
	v8 = append(v8, base[:models.DeviceBaselineEncodingSizeV4]...) // no shares of raised windows
	v8 = append(v8, inc...)
	// Version 9: the baseline without its shares of raised windows.
	v9 := append([]byte{9}, feat...)
	v9 = append(v9, base[:models.DeviceBaselineEncodingSizeV4]...)
	v9 = append(v9, inc...)
	// Version 10: the baseline without its mean flows.
	v10 := append([]byte{10}, feat...)
	v10 = append(v10, base[:models.DeviceBaselineEncodingSizeV4Shares]...)
	v10 = append(v10, inc...)
	// Version 11: the baseline without its trends.
	v11 := append([]byte{11}, feat...)
	v11 = append(v11, base[:models.DeviceBaselineEncodingSizeV4Flows]...)
	v11 = append(v11, inc...)
	bare, _ := saved.feat.History.MarshalBinary()
	for _, raw := range [][]byte{current, v11, v10, v9, v8, v7, v6, bare} {
		d := newDeviceState("", "")
		if err := unmarshalDevice(raw, d); err != nil {
			t.Fatalf("checkpoint of version %d not restored: %v", raw[0], err)
		}
		this := raw[0] >= 9 && len(raw) != len(bare)
		if d.feat.History.Contains(7) != this || d.feat.History.Len() > 0 && !this {
			t.Fatalf("checkpoint of version %d: destination history of %d restored", raw[0], d.feat.History.Len())
		}
		if ports := raw[0] >= 8; d.feat.Ports.Contains(443) != ports {
			t.Fatalf("checkpoint of version %d: ports restored %v, want %v", raw[0], !ports, ports)
		}
		if len(raw) != len(bare) && !d.incident.Open() {
			t.Fatalf("checkpoint of version %d: incident not restored", raw[0])
		}
		want := float32(0) // a baseline of an older schema, or none, starts afresh
		if this {
			want = 12
		}
		if d.baseline.Weight != want {
			t.Fatalf("checkpoint of version %d: baseline weight %v, want %v", raw[0], d.baseline.Weight, want)
		}
		wantFlows := float32(0) // none before version 11
		if raw[0] >= 11 && len(raw) != len(bare) {
			wantFlows = 6.5
		}
		if d.baseline.Flows != wantFlows {
			t.Fatalf("checkpoint of version %d: mean flows %v, want %v", raw[0], d.baseline.Flows, wantFlows)
		}
		wantTrend := float32(0) // a flat forecast before version 12
		if raw[0] == deviceCheckpointVersion && len(raw) != len(bare) {
			wantTrend = 0.01
		}
		if got := d.baseline.Trend[features.Flows]; got != wantTrend {
			t.Fatalf("checkpoint of version %d: trend of flows %v, want %v", raw[0], got, wantTrend)
		}
		if raw[0] >= 10 && len(raw) != len(bare) {
			if d.baseline.Elevated != 0.25 || d.baseline.Persistent != 0.125 {
				t.Fatalf("checkpoint of version %d: shares of raised windows %v, %v, want 0.25, 0.125", raw[0], d.baseline.Elevated, d.baseline.Persistent)
			}
		} else if d.baseline.Elevated != 0 || d.baseline.Persistent != 0 {
			t.Fatalf("checkpoint of version %d: shares of raised windows %v, %v restored, want none", raw[0], d.baseline.Elevated, d.baseline.Persistent)
		}
	}
	// A device restored from an older checkpoint shows its peers again
	// before one counts as new: its first windows see no new host.
	old := newDeviceState("a", "meter")
	if err := unmarshalDevice(v8, old); err != nil {
		t.Fatal(err)
	}
	w := features.NewWindow()
	w.Add(features.Flow{Dst: 9})
	if v := old.feat.Observe(w, 1, nil); v[features.NewDst] != 0 {
		t.Fatalf("a device restored from a version 8 checkpoint took its peer for new: new_dst %v", v[features.NewDst])
	}
	p := newPartitionWindows(WindowConfig{}, 0)
	p.restore = func(d *deviceState) {
		if d.id == "a" {
			_ = unmarshalDevice(current, d)
		}
	}
	t0 := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	closed, _ := p.Add("a", "meter", t0, 0, features.Flow{Dst: 7}, nil)
	closed, _ = p.Add("a", "meter", t0.Add(75*time.Second), 1, features.Flow{Dst: 7}, closed[:0]) // the watermark passes the first window
	if len(closed) != 1 || closed[0].Vector[features.NewDst] != 0 {
		t.Fatalf("restored device took its known destination for new: %+v", closed)
	}
}

// A device restored from its checkpoint gets its history, baseline and open
// incident — unless the checkpoint was written by its state on a partition
// this instance no longer reads (another instance's now, which carries that
// incident on; a copy here would close it a second time under the same id).
// A second partition of this instance that sees the device shares its
// model: nothing is restored over it, and there is one incident.
func TestCheckpointedIncidentStaysWithItsPartition(t *testing.T) {
	saved := newDeviceState("", "")
	saved.feat.History.Add(7)
	saved.baseline.Weight = 12
	saved.incident.Observe(incidents.Rule{}, incidents.Window{Index: 100, Level: incidents.High, Score: 0.9}, nil)
	if !saved.incident.Open() {
		t.Fatal("an extreme window opened no incident")
	}
	raw := marshalDevice(saved)
	s := &DetectStage{histories: map[string][]byte{"a": raw}, historyFrom: map[string]int32{}, partitions: map[int]*partitionWindows{},
		models: map[string]*deviceModel{}}
	restore := func(part int32) *deviceState {
		d := newDeviceState("a", "meter")
		s.restoreDevice(d, part)
		if !d.feat.History.Contains(7) || d.baseline.Weight != 12 {
			t.Fatalf("partition %d: history or baseline not restored: %+v", part, d.baseline)
		}
		return d
	}
	if d := restore(1); !d.incident.Open() {
		t.Fatal("after a restart the checkpoint's open incident was not restored")
	}
	s.historyFrom["a"] = 1
	if d := restore(1); !d.incident.Open() {
		t.Fatal("the partition that wrote the checkpoint lost its open incident")
	}
	if d := restore(2); d.incident.Open() {
		t.Fatal("a state on another partition took over the incident of a partition this instance no longer reads")
	}
	// Two partitions of this instance: one model.
	delete(s.historyFrom, "a")
	first := newDeviceState("a", "meter")
	first.deviceModel, first.shared = s.deviceModel("a")
	s.restoreDevice(first, 3)
	first.baseline.Weight = 40 // it learns on
	second := newDeviceState("a", "meter")
	second.deviceModel, second.shared = s.deviceModel("a")
	s.restoreDevice(second, 2)
	if !second.shared || second.deviceModel != first.deviceModel || second.baseline.Weight != 40 || !second.incident.Open() {
		t.Fatalf("second partition's state: shared %v, baseline weight %v", second.shared, second.baseline.Weight)
	}
}

// Records not keyed by device put each device's flows on every partition:
// the stage counts such devices and says so once they are most of them;
// an attack's few victims, whose reply legs travel with the attacker's
// records, are counted but raise nothing.
func TestRecordsNotKeyedByDeviceAreReported(t *testing.T) {
	var logged bytes.Buffer
	s := &DetectStage{metrics: NewMetrics(prometheus.NewRegistry()), log: slog.New(slog.NewTextHandler(&logged, nil)),
		partitions: map[int]*partitionWindows{}}
	for part := range 4 {
		s.partitions[part] = newPartitionWindows(WindowConfig{}, int32(part))
	}
	track := func(part int, id string) { s.partitions[part].devices[id] = newDeviceState(id, "") }
	// Keyed: 40 devices, ten per partition, and three victims of a scan
	// from partition 0 seen there too.
	for i := range 40 {
		track(i%4, fmt.Sprintf("d-%02d", i))
	}
	for _, v := range []string{"d-01", "d-02", "d-03"} {
		track(0, v)
	}
	s.checkKeying()
	if n := testutil.ToFloat64(s.metrics.SplitDevices); n != 3 {
		t.Fatalf("%v devices on several partitions, want the 3 victims", n)
	}
	if logged.Len() != 0 {
		t.Fatalf("victims of a scan reported as unkeyed records: %s", logged.String())
	}
	// Round-robin: every device on every partition.
	for i := range 40 {
		for part := range 4 {
			track(part, fmt.Sprintf("d-%02d", i))
		}
	}
	s.checkKeying()
	s.checkKeying()
	if n := testutil.ToFloat64(s.metrics.SplitDevices); n != 40 {
		t.Fatalf("%v devices on several partitions, want 40", n)
	}
	if c := strings.Count(logged.String(), "records are not keyed by device"); c != 1 {
		t.Fatalf("said %d times, want once: %s", c, logged.String())
	}
}

// A device whose records arrive on several partitions (records not keyed
// by device, or a victim's reply legs) has one model in the stage: a
// destination one partition's state learnt is known to another's.
func TestDeviceModelIsSharedBetweenPartitions(t *testing.T) {
	s := &DetectStage{models: map[string]*deviceModel{}, histories: map[string][]byte{}, historyFrom: map[string]int32{},
		partitions: map[int]*partitionWindows{}}
	var h features.History
	bare, _ := h.MarshalBinary()
	m, _ := s.deviceModel("a")
	if err := m.feat.UnmarshalBinary(bare); err != nil { // a bare history restores a mature device
		t.Fatal(err)
	}
	for part := range 2 {
		p := newPartitionWindows(WindowConfig{}, int32(part))
		p.model = s.deviceModel
		s.partitions[part] = p
	}
	t0 := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	p0, p1 := s.partitions[0], s.partitions[1]
	closed, _ := p0.Add("a", "meter", t0, 0, features.Flow{Dst: 7}, nil)
	closed, _ = p0.Add("a", "meter", t0.Add(75*time.Second), 1, features.Flow{Dst: 9}, closed[:0]) // past the first window and its lateness
	if closed[0].Vector[features.NewDst] != 1 {
		t.Fatalf("new_dst %v on partition 0, want 1", closed[0].Vector[features.NewDst])
	}
	p0.Release(&closed[0], true) // normal: destination 7 is learnt
	closed, _ = p1.Add("a", "meter", t0.Add(time.Minute), 0, features.Flow{Dst: 7}, closed[:0])
	closed, _ = p1.Add("a", "meter", t0.Add(135*time.Second), 1, features.Flow{Dst: 7}, closed[:0])
	if len(closed) != 1 || closed[0].Vector[features.NewDst] != 0 {
		t.Fatalf("partition 1 took the destination partition 0 learnt for new: %+v", closed)
	}
	if p0.devices["a"].deviceModel != p1.devices["a"].deviceModel {
		t.Fatal("two models for one device")
	}
}

// A device whose incident was open when its partition was checkpointed, and
// which never sends again (it fell silent, or was revoked) across a
// restart: the partition's next owner closes the incident once the device
// has been silent for Silence windows, once, and stops listing it as open.
func TestIncidentOfADeviceSilentAcrossARestartCloses(t *testing.T) {
	const size = int64(time.Minute)
	rule := incidents.Rule{}.WithDefaults()
	// The incident as the last owner left it: opened at window 1000 by an
	// extreme window.
	last := newDeviceState("meter-7", "meter")
	if ev := last.incident.Observe(rule, incidents.Window{Index: 1000, Level: incidents.High, Score: 0.95}, nil); len(ev) != 1 {
		t.Fatalf("no incident opened: %v", ev)
	}
	raw := marshalDevice(last)
	d := NewDetector(DetectorConfig{}, nil, nil, "iot.flows", NewMetrics(prometheus.NewRegistry()), slog.New(slog.NewTextHandler(io.Discard, nil)))

	p := newPartitionWindows(WindowConfig{Size: time.Minute, AllowedLateness: 10 * time.Second}, 3)
	p.restore = func(ds *deviceState) {
		if ds.id == "meter-7" {
			if err := unmarshalDevice(raw, ds); err != nil {
				t.Fatal(err)
			}
		}
	}
	p.resume(partitionCheckpoint{Watermark: 1001 * size, Processed: 10, Open: map[string]openIncident{"meter-7": {Profile: "meter", Last: 1000}}})
	none := func(string) bool { return false }
	at := func(index int64) []*contract.Alert {
		p.watermark = (index+1)*size + p.lateness // closes window index
		return d.ExpireIncidents(p, none, nil)
	}
	if got := at(1000 + int64(rule.Silence) - 1); len(got) != 0 {
		t.Fatalf("closed before %d silent windows: %v", rule.Silence, got)
	}
	if cp := p.checkpoint(nil); cp.Open["meter-7"] != (openIncident{Profile: "meter", Last: 1000}) {
		t.Fatalf("a checkpoint before the incident closed drops it: %v", cp.Open)
	}
	got := at(1000 + int64(rule.Silence))
	if len(got) != 1 || got[0].Incident == nil || got[0].Incident.Status != "closed" || got[0].DeviceID != "meter-7" || got[0].Evidence.Partition != 3 {
		t.Fatalf("want one closing of meter-7's incident on partition 3, got %+v", got)
	}
	if again := at(1000 + int64(rule.Silence) + 5); len(again) != 0 {
		t.Fatalf("closed twice: %+v", again)
	}
	if cp := p.checkpoint(nil); len(cp.Open) != 0 {
		t.Fatalf("a closed incident still listed open: %v", cp.Open)
	}
}

// A producer that sends each minute's records in the order their flows
// began, each stamped with its flow's end, sends them as far out of order
// as its flows are long. The partition loses what comes later than the
// allowed lateness the first time, then waits that long for its windows,
// at most a window, and forgets it after two hours of records in order; a
// restart keeps what it learnt, and records read again do not teach it.
func TestAPartitionWaitsAsLongAsItsRecordsComeOutOfOrder(t *testing.T) {
	const size, lateness = int64(time.Minute), int64(10 * time.Second)
	p := newPartitionWindows(WindowConfig{}, 0)
	t0 := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	flow := features.Flow{Dst: 1, DstPort: 443, BytesOut: 100, PacketsOut: 1}
	var offset int64
	refused := 0
	flows := map[int64]float64{}
	// Minute m: a 65 s flow begun at m:20 (ending m+1:25), then flows
	// begun and ended at m:30 and m:50.
	minute := func(m int) {
		for _, at := range []time.Duration{85 * time.Second, 30 * time.Second, 50 * time.Second} {
			closed, ok := p.Add("a", "meter", t0.Add(time.Duration(m)*time.Minute+at), offset, flow, nil)
			offset++
			if !ok {
				refused++
			}
			for i := range closed {
				flows[closed[i].Index-t0.Unix()/60] = closed[i].Vector[features.Flows]
				p.Release(&closed[i], true)
			}
		}
	}
	// A flow of 12:00:10 opens minute 0; 12:01:25 then closes it, and
	// 12:00:30 and 12:00:50 come 55 and 35 s behind, too late.
	if _, ok := p.Add("a", "meter", t0.Add(10*time.Second), offset, flow, nil); !ok {
		t.Fatal("first record refused")
	}
	offset++
	minute(0)
	if refused != 2 || p.wait() != 55*int64(time.Second) {
		t.Fatalf("refused %d, wait %v; want the two records of the closed minute refused, and a wait of 55 s since", refused, time.Duration(p.wait()))
	}
	for m := 1; m < 10; m++ {
		minute(m)
	}
	if refused != 2 {
		t.Fatalf("refused %d records, want none after the first minute's", refused)
	}
	for m := int64(1); m < 8; m++ {
		if flows[m] != 3 {
			t.Fatalf("minute %d closed with %v flows, want 3 (%v)", m, flows[m], flows)
		}
	}
	// A restart: the checkpoint carries the wait, and the records read
	// again (behind the restored watermark) do not lengthen it.
	cp := p.checkpoint(nil)
	q := newPartitionWindows(WindowConfig{}, 0)
	q.resume(cp)
	if q.wait() != p.wait() {
		t.Fatalf("wait %v after the restart, want %v", time.Duration(q.wait()), time.Duration(p.wait()))
	}
	q.Add("a", "meter", t0.Add(5*time.Minute), 0, flow, nil)
	if q.wait() != p.wait() {
		t.Fatalf("a record read again made the wait %v", time.Duration(q.wait()))
	}
	// A straggler five minutes behind lengthens the wait to a window, no
	// more.
	p.Add("a", "meter", t0.Add(5*time.Minute), offset, flow, nil)
	offset++
	if p.wait() != size {
		t.Fatalf("wait %v after a straggler, want a window", time.Duration(p.wait()))
	}
	// Two hours of records in order: back to the allowed lateness.
	for m := 10; m < 200; m++ {
		p.Add("a", "meter", t0.Add(time.Duration(m)*time.Minute), offset, flow, nil)
		offset++
	}
	if p.wait() != lateness {
		t.Fatalf("wait %v after two hours in order, want the lateness", time.Duration(p.wait()))
	}
}
