package pipeline

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/segmentio/kafka-go"

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
	// last record.
	FirstOffset, LastOffset int64
	Vector                  features.Vector
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

// ReadHistory reads the requested history partition by partition, in
// order, and calls emit with each verified window, so that the same
// history always yields the same windows in the same order. The window
// passed to emit is reused after emit returns.
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
	// Where each partition's period starts and ends.
	type span struct{ from, to int64 } // to is exclusive
	spans := make([]span, len(parts))
	var total int64
	for i, p := range parts {
		from, to, err := offsetsBetween(ctx, req.Kafka, req.Topic, p, req.Since.Add(-lead), req.Until.Add(win.AllowedLateness))
		if err != nil {
			return rep, err
		}
		spans[i] = span{from, to}
		total += to - from
	}
	anchors := map[string]bool{}
	var hw HistoryWindow
	for i, p := range parts {
		sp := spans[i]
		if sp.from >= sp.to {
			continue
		}
		ranges, err := integrity.Replay(ctx, req.Ledger, integrity.ReplayRequest{Kafka: req.Kafka, Topic: req.Topic, LeafTopic: req.LeafTopic, Partition: p, From: sp.from, To: sp.to - 1})
		if err != nil {
			return rep, fmt.Errorf("history: verify %s/%d: %w", req.Topic, p, err)
		}
		for _, r := range ranges {
			if r.Status != integrity.RangeVerified {
				rep.Excluded = append(rep.Excluded, r)
			}
		}
		pw := newPartitionWindows(win, p)
		var closed []ClosedWindow
		handle := func(closed []ClosedWindow) error {
			for k := range closed {
				cw := &closed[k]
				keep := !cw.Start.Before(req.Since) && !cw.End.After(req.Until) &&
					(req.Profile == "" || cw.Profile == req.Profile) && (req.Device == "" || cw.DeviceID == req.Device)
				if keep {
					ids, ok := coveringAnchors(ranges, cw.FirstOffset, cw.LastOffset, hw.Anchors[:0])
					if !ok {
						rep.ExcludedWindows++
					} else {
						hw = HistoryWindow{Device: cw.DeviceID, Profile: cw.Profile, Start: cw.Start, End: cw.End, Partition: p,
							FirstOffset: cw.FirstOffset, LastOffset: cw.LastOffset, Vector: cw.Vector, Anchors: ids, window: cw.window}
						for _, id := range ids {
							anchors[id] = true
						}
						rep.Windows++
						if err := emit(&hw); err != nil {
							return err
						}
					}
				}
				// As in warm-up: every window's destinations join the
				// device's history.
				pw.Release(cw, true)
			}
			return nil
		}
		r := req.Kafka.Reader(kafka.ReaderConfig{Topic: req.Topic, Partition: int(p), MinBytes: 1, MaxBytes: 8 << 20, MaxWait: 100 * time.Millisecond})
		if err := r.SetOffset(sp.from); err != nil {
			r.Close()
			return rep, err
		}
		var rec decode.FlowRecord
		for off := sp.from; off < sp.to; {
			m, err := r.ReadMessage(ctx)
			if err != nil {
				r.Close()
				return rep, fmt.Errorf("history: read %s/%d at %d: %w", req.Topic, p, off, err)
			}
			off = m.Offset + 1
			if m.Offset >= sp.to {
				break
			}
			rep.Records++
			if req.Progress != nil && rep.Records%4096 == 0 {
				req.Progress(rep.Records, total)
			}
			if decode.Flow(m.Value, &rec) != nil {
				continue // it went to the dead-letter topic then
			}
			dev := req.Registry.Resolve(&rec)
			flow := rec.Feature()
			if dev == nil && rec.DeviceID == "" {
				if to := req.Registry.ResolveDestination(&rec); to != nil {
					dev, flow = to, rec.Inbound()
				}
			}
			if dev == nil || revokedAt(dev, rec.Time) {
				continue
			}
			closed, _ = pw.Add(dev.ID, dev.Profile, rec.Time, m.Offset, flow, closed[:0])
			if err := handle(closed); err != nil {
				r.Close()
				return rep, err
			}
		}
		r.Close()
		// The end of the period closes every window still open.
		closed = pw.closeThrough(1<<62, closed[:0])
		if err := handle(closed); err != nil {
			return rep, err
		}
	}
	if req.Progress != nil {
		req.Progress(rep.Records, total)
	}
	for id := range anchors {
		rep.Anchors = append(rep.Anchors, id)
	}
	slices.Sort(rep.Anchors)
	return rep, nil
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
		return max(off, first), nil
	}
	from, err1 := at(since)
	to, err2 := at(until)
	if err := errors.Join(err1, err2); err != nil {
		return 0, 0, err
	}
	return from, max(from, to), nil
}
