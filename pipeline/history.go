package pipeline

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/chainwatch/chainwatch/ledgerclient"
	"github.com/chainwatch/chainwatch/models/features"
	"github.com/chainwatch/chainwatch/pipeline/decode"
	"github.com/chainwatch/chainwatch/pipeline/integrity"
	"github.com/chainwatch/chainwatch/pipeline/kafkaconn"
)

// History turns verified history back into the windows the service scored:
// it re-reads a period of the flows topic, proves each partition's records
// against their anchors (integrity.Replay), and runs the records through exactly the
// detection stage's decoding, identity and windowing code. Windows any of
// whose records lie in a range that does not verify are left out and the
// range listed. It is what `features export`, `train`, `evaluate` and
// `models drift` read.

// HistoryRequest selects the history to read.
type HistoryRequest struct {
	Kafka    *kafkaconn.Cluster
	Ledger   *ledgerclient.Client
	Registry *Registry // the devices' birth certificates (SnapshotRegistry)
	Topic    string
	// LeafTopic holds the batch index and leaf hashes (Topics.Leaves;
	// empty: the default).
	LeafTopic string
	// Since and Until bound the windows returned: those that start at or
	// after Since and end at or before Until.
	Since, Until time.Time
	// LeadIn is history read before Since, and not returned, so that each
	// device's feature context (the destinations it contacted, its
	// recent first contacts) is what the service had built by then.
	// Zero means one hour; negative means none.
	LeadIn time.Duration
	// Profile and Device, when set, keep only that profile's or device's
	// windows.
	Profile, Device string
	Window          WindowConfig
	// Progress, when set, is called as records are read with the count
	// read and the count to read.
	Progress func(read, total int64)
}

// HistoryWindow is one device window of verified history.
type HistoryWindow struct {
	Device, Profile string
	Start, End      time.Time
	Partition       int32
	// FirstOffset and LastOffset are the offsets of the window's first and
	// last record on Partition.
	FirstOffset, LastOffset int64
	// Others are the window's records on other partitions, when the
	// device's records arrive on several (records not keyed by device,
	// a victim's reply legs): its parts were joined into one window.
	Others []integrity.OffsetRange
	Vector features.Vector
	// Anchors are the ids of the ledger anchors whose ranges hold the
	// window's records.
	Anchors []string

	// window is the window's flows, valid during emit (TrainOnHistory
	// counts the profile's shared destinations from it).
	window *features.Window
}

// HistoryReport says what a read found.
type HistoryReport struct {
	Records int64 `json:"records"` // records read, lead-in included
	Windows int   `json:"windows"` // windows returned
	// ExcludedWindows were left out because some of their records did not
	// verify; Excluded lists the ranges that did not.
	ExcludedWindows int                     `json:"excluded_windows"`
	Excluded        []integrity.ReplayRange `json:"excluded,omitempty"`
	// Anchors are the verified anchors whose records fed returned windows,
	// sorted: the history's references on the ledger.
	Anchors []string `json:"anchors"`
}

// ReadHistory reads the requested history and calls emit with each
// verified window, so that the same history always yields the same windows
// in the same order. The window passed to emit is reused after emit
// returns.
//
// It reads every partition at once, a record at a time from the partition
// whose next record is oldest, and joins a device's parts of a window from
// several partitions into one window, as the detection stage does
// (assembly.go): on a topic whose records are not keyed by device each
// partition holds part of every device's minute, and a window read from
// one partition alone is not the window the service scored. A part is
// complete once every partition still being read has closed the window
// (its watermark past the window's end by its wait, partitionWindows.wait);
// the joined windows are emitted minute by minute, devices in order, each
// observed in its device's context after the device's previous window.
func ReadHistory(ctx context.Context, req HistoryRequest, emit func(*HistoryWindow) error) (HistoryReport, error) {
	var rep HistoryReport
	if !req.Until.After(req.Since) {
		return rep, fmt.Errorf("history: until (%s) must be after since (%s)", req.Until.Format(time.RFC3339), req.Since.Format(time.RFC3339))
	}
	lead := req.LeadIn
	if lead == 0 {
		lead = time.Hour
	}
	lead = max(lead, 0)
	win := req.Window.WithDefaults()
	parts, err := TopicPartitions(ctx, req.Kafka, req.Topic)
	if err != nil {
		return rep, err
	}
	hr := &historyRead{req: req, emit: emit, rep: &rep, anchors: map[string]bool{}, peers: map[string]*historyPeers{}, ranges: map[int32][]integrity.ReplayRange{},
		models: deviceModels{}, pending: map[int64]map[string][]ClosedWindow{},
		size: int64(win.Size)}
	defer hr.close()
	var total int64
	for _, p := range parts {
		from, to, err := offsetsBetween(ctx, req.Kafka, req.Topic, p, req.Since.Add(-lead), req.Until.Add(max(win.AllowedLateness, win.Size)))
		if err != nil {
			return rep, err
		}
		if from >= to {
			continue
		}
		total += to - from
		ranges, err := integrity.Replay(ctx, req.Ledger, integrity.ReplayRequest{Kafka: req.Kafka, Topic: req.Topic, LeafTopic: req.LeafTopic, Partition: p, From: from, To: to - 1})
		if err != nil {
			return rep, fmt.Errorf("history: verify %s/%d: %w", req.Topic, p, err)
		}
		for _, r := range ranges {
			if r.Status != integrity.RangeVerified {
				rep.Excluded = append(rep.Excluded, r)
			}
		}
		hr.ranges[p] = ranges
		pw := newPartitionWindows(win, p)
		pw.deferVector = true
		pw.model = hr.models.of
		r, err := integrity.NewMarkedReader(req.Kafka, req.Topic, p, from)
		if err != nil {
			return rep, fmt.Errorf("history: %w", err)
		}
		src := &historySource{partition: p, reader: r, to: to, pw: pw}
		hr.sources = append(hr.sources, src)
		if err := src.advance(ctx); err != nil {
			return rep, err
		}
	}
	var rec decode.FlowRecord
	var closed []ClosedWindow
	for {
		src := hr.oldest()
		if src == nil {
			break
		}
		m := src.next
		if err := src.advance(ctx); err != nil {
			return rep, err
		}
		rep.Records++
		if req.Progress != nil && rep.Records%4096 == 0 {
			req.Progress(rep.Records, total)
		}
		closed = closed[:0]
		if decode.Flow(m.Value, &rec) == nil { // else it went to the dead-letter topic then
			dev := req.Registry.Resolve(&rec)
			flow := rec.Feature()
			if dev == nil && rec.DeviceID == "" {
				if to := req.Registry.ResolveDestination(&rec); to != nil {
					dev, flow = to, rec.Inbound()
				}
			}
			if dev != nil && !revokedAt(dev, rec.Time) {
				closed, _ = src.pw.Add(dev.ID, dev.Profile, rec.Time, m.Offset, flow, closed)
			}
		}
		if src.empty {
			// The end of the partition's period closes its windows.
			closed = src.pw.closeThrough(1<<62, closed)
		}
		hr.hold(closed)
		if err := hr.flush(hr.closedBefore()); err != nil {
			return rep, err
		}
	}
	if err := hr.flush(1 << 62); err != nil {
		return rep, err
	}
	if req.Progress != nil {
		req.Progress(rep.Records, total)
	}
	for id := range hr.anchors {
		rep.Anchors = append(rep.Anchors, id)
	}
	slices.Sort(rep.Anchors)
	return rep, nil
}

// historySource is one partition's period being read: its next record,
// read ahead, and its windows.
type historySource struct {
	partition int32
	reader    *integrity.MarkedReader
	to        int64 // the period's end, exclusive
	next      *kgo.Record
	empty     bool // next holds nothing: the period is read
	pw        *partitionWindows
}

// advance reads the partition's next record of the period, if any: a
// transactional producer's markers take offsets but are no records.
func (s *historySource) advance(ctx context.Context) error {
	rec, err := s.reader.NextBefore(ctx, s.to)
	if err != nil {
		return fmt.Errorf("history: %w", err)
	}
	s.next, s.empty = rec, rec == nil
	return nil
}

// historyRead joins the parts of each device's windows from the partitions
// of a history read and emits them.
type historyRead struct {
	req     HistoryRequest
	emit    func(*HistoryWindow) error
	rep     *HistoryReport
	sources []*historySource
	ranges  map[int32][]integrity.ReplayRange
	anchors map[string]bool
	// models is each device's one model across partitions, as the
	// detection stage keeps them.
	models deviceModels
	// pending holds closed parts by window start and device, until every
	// partition has passed the window; starts are its keys, sorted.
	pending map[int64]map[string][]ClosedWindow
	starts  []int64
	size    int64
	hw      HistoryWindow
	devices []string
	// peers counts, per profile, the destinations its devices have shared
	// so far: windows are observed with that view (features.Warming), as
	// the detector observes its warm-up.
	peers map[string]*historyPeers
}

// historyPeers is what one profile's devices have shared so far in a read
// of history, and the view of the profile that gives.
type historyPeers struct {
	counter features.PeerCounter
	view    *features.Profile
}

func (h *historyRead) close() {
	for _, s := range h.sources {
		s.reader.Close()
	}
}

// oldest returns the source whose next record is oldest (the lowest
// partition among equals), nil when every one is read.
func (h *historyRead) oldest() *historySource {
	var best *historySource
	for _, s := range h.sources {
		if s.empty {
			continue
		}
		if best == nil || s.next.Timestamp.Before(best.next.Timestamp) {
			best = s
		}
	}
	return best
}

// closedBefore is how far every partition still being read has closed
// its windows: the oldest of their watermarks, each less its wait. A
// window ending at or before it has all its parts.
func (h *historyRead) closedBefore() int64 {
	wm := int64(1 << 62)
	for _, s := range h.sources {
		if !s.empty {
			wm = min(wm, s.pw.watermark-s.pw.wait())
		}
	}
	return wm
}

// hold keeps closed parts until their window is complete.
func (h *historyRead) hold(parts []ClosedWindow) {
	for _, cw := range parts {
		start := cw.Start.UnixNano()
		byDevice, ok := h.pending[start]
		if !ok {
			byDevice = map[string][]ClosedWindow{}
			h.pending[start] = byDevice
			i, _ := slices.BinarySearch(h.starts, start)
			h.starts = slices.Insert(h.starts, i, start)
		}
		byDevice[cw.DeviceID] = append(byDevice[cw.DeviceID], cw)
	}
}

// flush emits, minute by minute, the windows that end at or before
// closed.
func (h *historyRead) flush(closed int64) error {
	for len(h.starts) > 0 && h.starts[0]+h.size <= closed {
		start := h.starts[0]
		byDevice := h.pending[start]
		h.devices = h.devices[:0]
		for id := range byDevice {
			h.devices = append(h.devices, id)
		}
		slices.Sort(h.devices)
		for _, id := range h.devices {
			if err := h.join(byDevice[id]); err != nil {
				return err
			}
		}
		delete(h.pending, start)
		h.starts = h.starts[1:]
	}
	return nil
}

// join makes one window of a device's parts, observes it with what its
// profile's devices have shared so far (features.Warming, as the
// detector observes its warm-up), emits it when the request keeps it and
// all its records verify, and lets it teach the device's history (every
// window does, as in the warm-up).
func (h *historyRead) join(parts []ClosedWindow) error {
	slices.SortFunc(parts, func(a, b ClosedWindow) int { return cmp.Compare(a.Partition, b.Partition) })
	cw := mergeParts(parts, func(o *ClosedWindow) { h.sourceOf(o.Partition).pw.Release(o, false) })
	peers := h.peers[cw.Profile]
	if peers == nil {
		peers = &historyPeers{}
		peers.view = features.Warming(&peers.counter)
		h.peers[cw.Profile] = peers
	}
	peers.counter.Add(stableHash(cw.DeviceID), cw.window)
	cw.observeAs(peers.view)
	req := h.req
	keep := !cw.Start.Before(req.Since) && !cw.End.After(req.Until) &&
		(req.Profile == "" || cw.Profile == req.Profile) && (req.Device == "" || cw.DeviceID == req.Device)
	if keep {
		ids, ok := coveringAnchors(h.ranges[cw.Partition], cw.FirstOffset, cw.LastOffset, h.hw.Anchors[:0])
		for _, o := range cw.Others {
			if !ok {
				break
			}
			ids, ok = coveringAnchors(h.ranges[o.Partition], o.First, o.Last, ids)
		}
		if !ok {
			h.rep.ExcludedWindows++
		} else {
			slices.Sort(ids)
			ids = slices.Compact(ids)
			h.hw = HistoryWindow{Device: cw.DeviceID, Profile: cw.Profile, Start: cw.Start, End: cw.End, Partition: cw.Partition,
				FirstOffset: cw.FirstOffset, LastOffset: cw.LastOffset, Others: cw.Others, Vector: cw.Vector, Anchors: ids, window: cw.window}
			for _, id := range ids {
				h.anchors[id] = true
			}
			h.rep.Windows++
			if err := h.emit(&h.hw); err != nil {
				return err
			}
		}
	}
	h.sourceOf(cw.Partition).pw.Release(&cw, true)
	return nil
}

func (h *historyRead) sourceOf(p int32) *historySource {
	for _, s := range h.sources {
		if s.partition == p {
			return s
		}
	}
	return nil
}

// coveringAnchors appends to ids the verified anchors whose ranges overlap
// first..last, and reports false when any record in first..last lies in a
// range that did not verify. ranges are in offset order and cover every
// offset read.
func coveringAnchors(ranges []integrity.ReplayRange, first, last int64, ids []string) ([]string, bool) {
	i, _ := slices.BinarySearchFunc(ranges, first, func(r integrity.ReplayRange, off int64) int {
		if r.LastOffset < off {
			return -1
		}
		return 1
	})
	for ; i < len(ranges) && ranges[i].FirstOffset <= last; i++ {
		if ranges[i].Status != integrity.RangeVerified {
			return ids, false
		}
		ids = append(ids, ranges[i].AnchorID)
	}
	return ids, len(ids) > 0
}

// TopicPartitions lists a topic's partitions in order.
func TopicPartitions(ctx context.Context, cluster *kafkaconn.Cluster, topic string) ([]int32, error) {
	conn, err := cluster.Dial(ctx)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	ps, err := conn.ReadPartitions(topic)
	if err != nil {
		return nil, fmt.Errorf("topic %s: %w", topic, err)
	}
	out := make([]int32, 0, len(ps))
	for _, p := range ps {
		out = append(out, int32(p.ID))
	}
	slices.Sort(out)
	return out, nil
}

// firstRecordFrom returns the offset of the first record at or after off
// (before end) stamped t or later, or end. The broker's offset for a time
// counts a transactional producer's commit markers, which bear the commit's
// time: on a topic backfilled with older event times it lands on the first
// marker past the records, and a history read would stop there. Without
// markers the record at off is the answer, and one fetch confirms it.
func firstRecordFrom(ctx context.Context, cluster *kafkaconn.Cluster, topic string, partition int32, off, end int64, t time.Time) (int64, error) {
	if off >= end {
		return end, nil
	}
	r, err := integrity.NewMarkedReader(cluster, topic, partition, off)
	if err != nil {
		return 0, fmt.Errorf("history: %w", err)
	}
	defer r.Close()
	for {
		rec, err := r.NextBefore(ctx, end)
		if err != nil {
			return 0, fmt.Errorf("history: offset at %s: %w", t.Format(time.RFC3339), err)
		}
		if rec == nil {
			return end, nil
		}
		if !rec.Timestamp.Before(t) {
			return rec.Offset, nil
		}
	}
}

// offsetsBetween is the offset range of a partition's records with
// timestamps from since up to until: the first offset at or after since,
// and the first at or after until (the partition's end when none is).
func offsetsBetween(ctx context.Context, cluster *kafkaconn.Cluster, topic string, partition int32, since, until time.Time) (int64, int64, error) {
	conn, err := cluster.DialLeader(ctx, topic, int(partition))
	if err != nil {
		return 0, 0, err
	}
	defer conn.Close()
	first, end, err := conn.ReadOffsets()
	if err != nil {
		return 0, 0, fmt.Errorf("history: offsets of %s/%d: %w", topic, partition, err)
	}
	at := func(t time.Time) (int64, error) {
		off, err := conn.ReadOffset(t)
		if err != nil {
			return 0, fmt.Errorf("history: offset of %s/%d at %s: %w", topic, partition, t.Format(time.RFC3339), err)
		}
		if off < 0 || off > end {
			return end, nil
		}
		return firstRecordFrom(ctx, cluster, topic, partition, max(off, first), end, t)
	}
	from, err1 := at(since)
	to, err2 := at(until)
	if err := errors.Join(err1, err2); err != nil {
		return 0, 0, err
	}
	return from, max(from, to), nil
}
