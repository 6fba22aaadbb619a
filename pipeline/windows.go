package pipeline

import (
	"cmp"
	"math"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/chainwatch/chainwatch/models"
	"github.com/chainwatch/chainwatch/models/features"
	"github.com/chainwatch/chainwatch/pipeline/incidents"
	"github.com/chainwatch/chainwatch/pipeline/integrity"
)

// WindowConfig sets how flows are grouped. The zero value means 60 s
// tumbling windows of event time with 10 s allowed lateness.
type WindowConfig struct {
	// Size of each tumbling window, aligned to the Unix epoch. Default 60s.
	Size time.Duration `yaml:"size"`
	// AllowedLateness is how far behind the newest event time seen on a
	// partition a record may be and still join its window; the window
	// closes once the watermark (newest event time − lateness) passes its
	// end. Default 10s. A partition whose records have lately come further
	// out of order waits that much longer, up to a window (or this
	// lateness, if longer): partitionWindows.wait.
	AllowedLateness time.Duration `yaml:"allowed_lateness"`
}

// WithDefaults fills zero fields.
func (c WindowConfig) WithDefaults() WindowConfig {
	if c.Size == 0 {
		c.Size = time.Minute
	}
	if c.AllowedLateness == 0 {
		c.AllowedLateness = 10 * time.Second
	}
	return c
}

// ClosedWindow is one device's finished window, ready to score.
type ClosedWindow struct {
	DeviceID   string
	Profile    string
	Start, End time.Time
	Vector     features.Vector
	// Index numbers the window: Start / window size.
	Index       int64
	Partition   int32
	FirstOffset int64
	LastOffset  int64
	// Others are the window's records on other partitions this instance
	// reads, when the device's records arrive on several (records not
	// keyed by device, a victim's reply legs) and its parts were joined
	// into one window (assembly.go). Empty for a window of one partition.
	Others []integrity.OffsetRange

	state  *deviceState
	window *features.Window
	// observed is set once Vector is computed (observe).
	observed bool
	// closedAt is when (wall clock, Unix ns) the detection stage closed
	// the window, for the close-to-alert latency (0: unknown).
	closedAt int64
}

// deviceModel is what is known of a device beyond its current window: its
// feature context (destination history, recent first contacts), its
// behaviour baseline and its incident state, checkpointed together
// (devicecheckpoint.go). The detection stage keeps one per device for all
// the partitions it reads (DetectStage.deviceModel): a device whose records
// arrive on several partitions — a victim's reply legs, or records not
// keyed by device at all — is then one device, with one destination
// history, one baseline and one incident, rather than a device per
// partition each seeing part of it.
type deviceModel struct {
	feat     features.Device
	baseline models.DeviceBaseline
	incident incidents.State
	// drivers is what drove the device's windows that count towards an
	// incident, since it was last quiet (incidents.State.Quiet) or its last
	// incident closed: an incident's alerts are explained by them (nil
	// while quiet; not checkpointed: after a restart an incident is
	// explained by its windows since).
	drivers *models.Drivers
	dirty   bool // changed since the last checkpoint
	// epoch is the detector's model epoch of the device's profile its
	// baseline was learned under (not checkpointed: a restart keeps the
	// baselines it restores).
	epoch uint32
	// scored is the index of the newest window handed to the detector
	// (assembly.go; not checkpointed).
	scored int64
}

// deviceModels keeps one model per device for all the partitions a reader
// tracks (the detection stage, a read of history).
type deviceModels map[string]*deviceModel

// of returns the device's model, and whether it existed already (another
// partition's state holds it).
func (ms deviceModels) of(id string) (*deviceModel, bool) {
	if m, ok := ms[id]; ok {
		return m, true
	}
	m := &deviceModel{}
	ms[id] = m
	return m, false
}

// mergeParts sums a device's parts of one window into the first part's
// window, naming the other parts' records in its Others, and hands each
// other part to release. The detection stage (assembly.go) and a read of
// history join parts with it.
func mergeParts(parts []ClosedWindow, release func(*ClosedWindow)) ClosedWindow {
	cw := parts[0]
	for k := 1; k < len(parts); k++ {
		o := &parts[k]
		cw.window.Merge(o.window)
		cw.Others = append(cw.Others, integrity.OffsetRange{Partition: o.Partition, First: o.FirstOffset, Last: o.LastOffset})
		release(o)
	}
	return cw
}

// deviceState is a tracked device on one partition: its model, and its
// current window there.
type deviceState struct {
	id, profile string
	*deviceModel
	// shared is set when the model was a state on another partition's
	// first: it is not restored from the checkpoint over what that state
	// has learnt since.
	shared bool
	// wins are the device's open windows, oldest first: its newest, and
	// those before it that the watermark has not passed yet. A flow
	// record is stamped with its end and an exporter sends a minute's
	// records in no strict order, so a record of the device's last
	// minute may arrive after one of its next; it still joins its window
	// until the watermark closes it (the partition's wait). The wait being
	// at most a window unless the allowed lateness is set longer, at most
	// two are open.
	wins []openWindow
	// closedThrough is the start of the device's newest closed window
	// (Unix ns): its records were scored and are late from then on.
	closedThrough int64
}

// openWindow is a device's window still taking records.
type openWindow struct {
	win         *features.Window
	start       int64 // Unix ns
	first, last int64 // offsets of its first and last record
}

// window returns the device's open window starting at start, or nil.
func (d *deviceState) window(start int64) *openWindow {
	for i := range d.wins {
		if d.wins[i].start == start {
			return &d.wins[i]
		}
	}
	return nil
}

// newDeviceState is a state with a model of its own.
func newDeviceState(id, profile string) *deviceState {
	return &deviceState{id: id, profile: profile, deviceModel: &deviceModel{}}
}

// partitionWindows tracks the devices of one partition: their windows, each
// closed by the partition's watermark. Producers key devices to partitions,
// so a device's windows mostly live in one partitionWindows; when they do
// not (a victim's reply legs, records not keyed by device), the device's
// states on this member's partitions share one deviceModel.
type partitionWindows struct {
	size, lateness int64
	partition      int32
	watermark      int64 // newest event time seen, Unix ns
	// disorder holds how far behind the watermark records have come, at
	// most, in the previous and the current hour of event time
	// (disorderHour): the partition's windows wait that long when it is
	// longer than the lateness (wait).
	disorder     [2]int64
	disorderHour int64
	devices      map[string]*deviceState
	// open maps a window start to the devices that opened a window there.
	open   map[int64][]*deviceState
	starts []int64 // sorted keys of open
	// openN counts, by window start, the windows still open there: a
	// partition is done with the windows before the oldest start that has
	// one (doneBefore).
	openN map[int64]int
	free  []*features.Window
	// processed is the newest offset handed to Add.
	processed int64
	// replayedThrough is the newest offset the partition's previous owner
	// had processed, when it was resumed from a checkpoint; -1 otherwise.
	replayedThrough int64
	// resumedClosed holds the checkpoint's closed windows of devices not
	// tracked again yet.
	resumedClosed map[string]int64
	// restore fills a newly tracked device's state from a checkpoint.
	restore func(d *deviceState)
	// model returns a device's model and whether another state holds it
	// already (nil: each state its own, as in a read of history).
	model func(deviceID string) (*deviceModel, bool)
	// lag is this partition's consumer-lag gauge (nil in unit tests).
	lag prometheus.Gauge

	// deferVector leaves a closed window's vector to be computed once the
	// device's parts from its other partitions are joined (assembly.go, a
	// history read), by whoever judges it in the device's window order
	// (the detector, with its profile's shared destinations); otherwise
	// close computes it, with none.
	deferVector bool
	// resumedHeld holds, from the checkpoint, the start of the oldest
	// window of each device whose part here was closed but waited for
	// the device's parts on other partitions: while the partition is read
	// again up to replayedThrough, the device's records from that window on
	// are taken again, although the watermark has passed them, so that the
	// part is rebuilt and the joined window scored once.
	resumedHeld map[string]int64
	// resumedOpen holds the checkpoint's devices with an open incident
	// not tracked here since: ExpireIncidents closes their incidents once
	// they have been silent long enough.
	resumedOpen map[string]openIncident
	// lastRecord is when (wall clock) the partition last delivered a
	// record, and caughtUp whether its last fetch reached the end of the
	// log: a partition caught up and silent for idleAfter holds back no
	// joined window (assembly.go).
	lastRecord time.Time
	caughtUp   bool
}

func newPartitionWindows(cfg WindowConfig, partition int32) *partitionWindows {
	cfg = cfg.WithDefaults()
	return &partitionWindows{
		size: int64(cfg.Size), lateness: int64(cfg.AllowedLateness), partition: partition,
		devices: map[string]*deviceState{}, open: map[int64][]*deviceState{}, openN: map[int64]int{}, processed: -1, replayedThrough: -1,
	}
}

// resume takes over a partition from its checkpoint (see
// partitionCheckpoint): its watermark, and the windows that were closed
// early, so that records read again from the committed offset rebuild the
// windows still open and nothing else.
func (p *partitionWindows) resume(cp partitionCheckpoint) {
	p.watermark = cp.Watermark
	p.disorder, p.disorderHour = [2]int64{0, cp.Disorder}, cp.Watermark/int64(time.Hour)
	p.replayedThrough = cp.Processed
	p.resumedClosed = cp.Closed
	p.resumedHeld = cp.Held
	p.resumedOpen = cp.Open
}

// replaying reports whether the partition is being read again up to the
// offset its previous owner had processed.
func (p *partitionWindows) replaying() bool { return p.processed < p.replayedThrough }

// checkpoint is the partition's state for its next owner. held gives, per
// device, the start of the oldest window whose part here is closed but not
// yet scored (assembly.go).
func (p *partitionWindows) checkpoint(held map[string]int64) partitionCheckpoint {
	cp := partitionCheckpoint{Processed: p.processed, Watermark: p.watermark, Disorder: max(p.disorder[0], p.disorder[1])}
	if p.replaying() {
		// Not read again to the end yet: what waited then waits still.
		for id, start := range p.resumedHeld {
			if h, ok := held[id]; !ok || start < h {
				if held == nil {
					held = map[string]int64{}
				}
				held[id] = start
			}
		}
	}
	if len(held) > 0 {
		cp.Held = held
	}
	for id, d := range p.devices {
		// Windows the watermark has passed need no entry: their records
		// are late by the watermark alone.
		if d.closedThrough != 0 && d.closedThrough+p.size+p.maxWait() > p.watermark {
			if cp.Closed == nil {
				cp.Closed = map[string]int64{}
			}
			cp.Closed[id] = d.closedThrough
		}
	}
	for id, start := range p.resumedClosed {
		if _, tracked := p.devices[id]; !tracked && start+p.size+p.maxWait() > p.watermark {
			if cp.Closed == nil {
				cp.Closed = map[string]int64{}
			}
			cp.Closed[id] = start
		}
	}
	for id, d := range p.devices {
		if d.incident.Open() && !d.shared {
			if cp.Open == nil {
				cp.Open = map[string]openIncident{}
			}
			cp.Open[id] = openIncident{Profile: d.profile, Last: d.incident.LastWindow()}
		}
	}
	for id, o := range p.resumedOpen { // not tracked here since
		if cp.Open == nil {
			cp.Open = map[string]openIncident{}
		}
		cp.Open[id] = o
	}
	return cp
}

// track returns the state of a device not seen on the partition since it
// was taken over, restored from its checkpoint, and tracks it from now on.
func (p *partitionWindows) track(deviceID, profile string) *deviceState {
	d := newDeviceState(deviceID, profile)
	if p.model != nil {
		d.deviceModel, d.shared = p.model(deviceID)
	}
	if p.restore != nil {
		p.restore(d)
	}
	delete(p.resumedOpen, deviceID)
	p.devices[deviceID] = d
	return d
}

// Add puts one flow into its device's window and appends to closed every
// window that this record's event time closed. It reports false for a
// record too late to join any open window.
func (p *partitionWindows) Add(deviceID, profile string, t time.Time, offset int64, f features.Flow, closed []ClosedWindow) ([]ClosedWindow, bool) {
	p.processed = offset
	ts := t.UnixNano()
	start := ts - mod(ts, p.size)
	d := p.devices[deviceID]
	if d == nil {
		d = p.track(deviceID, profile)
		if start, ok := p.resumedClosed[deviceID]; ok {
			d.closedThrough = start
			delete(p.resumedClosed, deviceID)
		}
		if start, ok := p.resumedHeld[deviceID]; ok && p.replaying() {
			d.closedThrough = start - p.size // scored up to the window before
		}
	}
	d.profile = profile

	// A part that waited for the device's other partitions at the
	// checkpoint is rebuilt from its records, though the watermark has
	// passed it.
	rebuild := false
	if held, ok := p.resumedHeld[deviceID]; ok && start >= held && offset <= p.replayedThrough {
		rebuild = true
	}
	// The watermark moves first: the windows it passes close before the
	// record is placed, so that a device holds no more windows open than
	// the wait allows.
	if ts > p.watermark {
		p.rollDisorder(ts)
		p.watermark = ts
		closed = p.closeThrough(p.watermark-p.wait(), closed)
	} else if offset > p.replayedThrough { // a record read again is behind by the restart, not by its producer
		p.disorder[1] = max(p.disorder[1], p.watermark-ts)
	}
	w := d.window(start)
	if w == nil {
		if p.late(d, start, rebuild) {
			return closed, false
		}
		w = p.openWindow(d, start, offset)
	}
	w.win.Add(f)
	w.last = offset
	return closed, true
}

// late reports whether a record of the device's window starting at start
// comes too late to be counted, no window of the device being open there:
// the device has closed a window at or after start, or, unless the
// record rebuilds a part held at the checkpoint, the watermark has passed
// the window's end by the partition's wait. A window after the device's
// newest is never late.
func (p *partitionWindows) late(d *deviceState, start int64, rebuild bool) bool {
	if n := len(d.wins); n > 0 && start > d.wins[n-1].start {
		return false
	}
	return d.closedThrough != 0 && start <= d.closedThrough || start+p.size+p.wait() <= p.watermark && !rebuild
}

// wait is how long past a window's end, in event time, the partition
// waits for the window's records before closing it: the allowed lateness,
// or, if longer, the furthest behind the watermark a record has come in
// the current or the previous hour of event time — at most a window (or
// the lateness, if that is set longer). A flow record is stamped with its
// flow's end, and a producer that sends records in the order their flows
// began, or an exporter that holds long flows back, sends them as far out
// of order as its flows are long: with a fixed lateness shorter than that
// such records would be lost in every minute, not only in the first one
// that shows them (the campus-long-flows detection fleet lost 56 % of its
// records). The wait it costs is alert latency, never a record.
func (p *partitionWindows) wait() int64 {
	return min(max(p.lateness, p.disorder[0], p.disorder[1]), p.maxWait())
}

// maxWait is the longest the partition may wait: a window, or the allowed
// lateness if that is longer. A device then has at most two windows open.
func (p *partitionWindows) maxWait() int64 { return max(p.lateness, p.size) }

// rollDisorder moves the disorder's hours on to the hour of event time ts.
func (p *partitionWindows) rollDisorder(ts int64) {
	h := ts / int64(time.Hour)
	switch h {
	case p.disorderHour:
	case p.disorderHour + 1:
		p.disorder = [2]int64{p.disorder[1], 0}
	default:
		p.disorder = [2]int64{}
	}
	p.disorderHour = h
}

// openWindow opens the device's window starting at start, in start order
// among its open ones, with its first record at offset.
func (p *partitionWindows) openWindow(d *deviceState, start, offset int64) *openWindow {
	i, _ := slices.BinarySearchFunc(d.wins, start, func(w openWindow, s int64) int { return cmp.Compare(w.start, s) })
	d.wins = slices.Insert(d.wins, i, openWindow{win: p.window(), start: start, first: offset})
	if _, ok := p.open[start]; !ok {
		j, _ := slices.BinarySearch(p.starts, start)
		p.starts = slices.Insert(p.starts, j, start)
	}
	p.open[start] = append(p.open[start], d)
	p.openN[start]++
	return &d.wins[i]
}

// closeThrough closes every open window that ends at or before wm.
func (p *partitionWindows) closeThrough(wm int64, closed []ClosedWindow) []ClosedWindow {
	for len(p.starts) > 0 && p.starts[0]+p.size <= wm {
		s := p.starts[0]
		for _, d := range p.open[s] {
			if d.window(s) != nil {
				closed = append(closed, p.close(d, s))
			}
		}
		delete(p.open, s)
		delete(p.openN, s)
		p.starts = p.starts[1:]
	}
	return closed
}

// doneBefore returns the start of the partition's oldest window still open
// (math.MaxInt64 when none is): every window of a device seen here that
// starts before it is closed. A device silent so far may still open one
// there, until the watermark passes it; its window is then judged after
// its peers' (barrier.go).
func (p *partitionWindows) doneBefore() int64 {
	for len(p.starts) > 0 && p.openN[p.starts[0]] == 0 {
		delete(p.open, p.starts[0])
		delete(p.openN, p.starts[0])
		p.starts = p.starts[1:]
	}
	if len(p.starts) == 0 {
		return math.MaxInt64
	}
	return p.starts[0]
}

// idle reports whether the partition has delivered everything it holds
// and is silent (silent): it then holds back no part of a window read on
// another partition (assembly.go).
func (p *partitionWindows) idle(now time.Time, newest int64) bool {
	return p.caughtUp && p.silent(now, newest)
}

// silent reports whether the partition has delivered nothing for idleAfter
// and fallen a window behind newest, the newest watermark of this
// instance's partitions: it then holds back no window index (barrier.go).
func (p *partitionWindows) silent(now time.Time, newest int64) bool {
	return now.Sub(p.lastRecord) >= idleAfter && p.watermark+p.size+p.wait() <= newest
}

// close closes the device's window starting at start, its oldest open one
// (windows close in start order, closeThrough).
func (p *partitionWindows) close(d *deviceState, start int64) ClosedWindow {
	w := d.window(start)
	cw := ClosedWindow{
		DeviceID: d.id, Profile: d.profile,
		Start: time.Unix(0, start).UTC(), End: time.Unix(0, start+p.size).UTC(),
		Index:     start / p.size,
		Partition: p.partition, FirstOffset: w.first, LastOffset: w.last,
		state: d, window: w.win,
	}
	if !p.deferVector {
		cw.observe(nil)
	}
	d.wins = slices.DeleteFunc(d.wins, func(o openWindow) bool { return o.start == start })
	p.openN[start]--
	d.closedThrough = start
	d.dirty = true // its feature context, baseline and incident state move on
	return cw
}

// observe computes the window's vector in its device's context, which it
// moves on (features.Device.Observe): once per window, in window order.
// profile gives what a profile's model tells the time features (nil, or
// a nil view: the profile has no model).
func (cw *ClosedWindow) observe(profile func(name string) *features.Profile) {
	var view *features.Profile
	if profile != nil {
		view = profile(cw.Profile)
	}
	cw.observeAs(view)
}

// observeAs observes the window with view of its profile.
func (cw *ClosedWindow) observeAs(view *features.Profile) {
	cw.Vector = cw.state.feat.Observe(cw.window, cw.Index, view)
	cw.observed = true
}

// Release finishes with a closed window: when learn is set (the window was
// judged normal) its destinations join the device's history, then the
// window is recycled.
func (p *partitionWindows) Release(cw *ClosedWindow, learn bool) {
	if cw.window == nil {
		return
	}
	if learn {
		cw.state.feat.Learn(cw.window)
	}
	cw.window.Reset()
	p.free = append(p.free, cw.window)
	cw.window = nil
}

func (p *partitionWindows) window() *features.Window {
	if n := len(p.free); n > 0 {
		w := p.free[n-1]
		p.free = p.free[:n-1]
		return w
	}
	return features.NewWindow()
}

// committable is the newest offset whose record no open window still
// needs: everything at or below it has been fully processed.
func (p *partitionWindows) committable() int64 {
	c := p.processed
	for _, s := range p.starts {
		for _, d := range p.open[s] {
			if w := d.window(s); w != nil && w.first-1 < c {
				c = w.first - 1
			}
		}
	}
	return c
}

// openWindows counts windows still open.
func (p *partitionWindows) openWindows() int {
	n := 0
	for _, d := range p.devices {
		n += len(d.wins)
	}
	return n
}

func mod(a, b int64) int64 {
	m := a % b
	if m < 0 {
		m += b
	}
	return m
}
