package pipeline

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/chainwatch/chainwatch/ledgerclient/contract"
	"github.com/chainwatch/chainwatch/pipeline/decode"
	"github.com/chainwatch/chainwatch/pipeline/incidents"
	"github.com/chainwatch/chainwatch/pipeline/integrity"
	"github.com/chainwatch/chainwatch/pipeline/kafkaconn"
)

// DetectConfig configures the detection stage. Zero values are defaults.
type DetectConfig struct {
	Kafka *kafkaconn.Cluster
	// GroupID is the consumer group; instances sharing it split the
	// partitions. Default "chainwatch-detect".
	GroupID string
	Topics  Topics
	Window  WindowConfig
	// CommitInterval is how often fully processed offsets are committed.
	// Default 1s.
	CommitInterval time.Duration
	// AlertBatchDelay is how long an alert may wait for others before the
	// pending alerts are written to the outbox together: one fsync per
	// batch instead of one per record that raised an alert. Default 10ms.
	AlertBatchDelay time.Duration
}

func (c DetectConfig) withDefaults() DetectConfig {
	if c.GroupID == "" {
		c.GroupID = "chainwatch-detect"
	}
	c.Topics = c.Topics.WithDefaults()
	c.Window = c.Window.WithDefaults()
	if c.CommitInterval == 0 {
		c.CommitInterval = time.Second
	}
	if c.AlertBatchDelay == 0 {
		c.AlertBatchDelay = 10 * time.Millisecond
	}
	return c
}

// DetectStage consumes flow records, windows them per device, scores closed
// windows and delivers the alerts. Offsets are committed only up to the
// newest record whose every window has been closed and whose alerts every
// sink has accepted.
type DetectStage struct {
	cfg      DetectConfig
	registry *Registry
	detector *Detector
	outbox   AlertQueue
	state    *StateStore
	dlq      *DeadLetter
	metrics  *Metrics
	log      *slog.Logger
	// trustRetained is set once the first assignment has kept the
	// restored trust episodes of this instance's partitions.
	trustRetained bool

	consumer   *groupConsumer
	partitions map[int]*partitionWindows
	committed  map[int]int64
	trust      *trustAlerts
	consumed   prometheus.Counter // records consumed, resolved once
	histories  map[string][]byte  // checkpointed device histories, by device id
	// seen and splitWarned serve checkKeying.
	seen        map[string]bool
	splitWarned bool
	// historyFrom is the partition whose state of the device wrote its
	// checkpoint in this run (absent: read at start-up).
	historyFrom map[string]int32
	// models are the devices' models (deviceModel).
	models deviceModels
	// restored are the checkpoints of partitions assigned to this instance
	// and not yet seen, applied when their first record arrives.
	restored map[int]partitionCheckpoint
	// stream is the flows topic's identity (integrity.StreamOf), looked up when
	// partitions are assigned and when a partition's offsets go back.
	stream string
	// stateErr is set when the state of assigned partitions could not be
	// read; the stage stops rather than process them without it.
	stateErr error
	pending  []contract.Alert
	// pendingSince is when the oldest pending alert was raised.
	pendingSince time.Time
	verdicts     []Verdict
	// pendingClosedAt is when the window behind each pending behaviour
	// alert closed, for the close-to-alert latency.
	pendingClosedAt []time.Time
	closed          []ClosedWindow
	// asm joins the parts of a device's windows read on several partitions
	// (assembly.go).
	asm assembler
	// bar holds closed windows until every partition is done with their
	// window index (barrier.go); ready holds the windows to score.
	bar     barrier
	ready   []ClosedWindow
	fetched []kgo.FetchTopicPartition
	// batch is the poll's records in processing order, decoded ahead.
	batch flowBatch
	// fleetSaved is the fleet episode states last saved (or restored at
	// start), by profile; nil before the first assignment.
	fleetSaved map[string][]byte
	// late logs the records refused as too late for their window.
	late lateRecords

	stageRun
}

// NewDetectStage wires the stage; Start runs it.
func NewDetectStage(cfg DetectConfig, registry *Registry, detector *Detector, trust *trustAlerts, outbox AlertQueue, state *StateStore, dlq *DeadLetter, metrics *Metrics, log *slog.Logger) *DetectStage {
	return &DetectStage{
		cfg: cfg.withDefaults(), registry: registry, detector: detector, trust: trust, outbox: outbox, state: state, dlq: dlq,
		metrics: metrics, log: log.With("stage", "detect"), stageRun: stageRun{name: "detection", log: log},
		partitions: map[int]*partitionWindows{}, committed: map[int]int64{},
	}
}

// Start joins the consumer group and processes records until ctx ends or
// Shutdown is called.
func (s *DetectStage) Start(ctx context.Context) error {
	s.histories, s.restored = map[string][]byte{}, map[int]partitionCheckpoint{}
	s.historyFrom = map[string]int32{}
	s.models = deviceModels{}
	var err error
	// The client is created under the stage's profiler label so that its
	// fetch goroutines are counted as the stage's CPU.
	s.start(ctx, func(ctx context.Context) {
		s.consumer, err = newGroupConsumer(consumerConfig{cluster: s.cfg.Kafka, group: s.cfg.GroupID, topics: []string{s.cfg.Topics.Flows}, log: s.log},
			groupHooks{assigned: s.partitionsAssigned, revoked: s.partitionsRevoked})
		if err == nil {
			s.launch(ctx, s.run)
		}
	})
	return err
}

// Shutdown waits for the stage to stop (cancel the Start context first),
// commits what was fully processed and leaves the group.
func (s *DetectStage) Shutdown(ctx context.Context) error {
	if err := s.wait(ctx); err != nil {
		return err
	}
	s.commit(ctx)
	s.consumer.close()
	return nil
}

// partitionsAssigned reads the state store for partitions this instance
// takes on, whether at start, after a restart or from another instance.
func (s *DetectStage) partitionsAssigned(ctx context.Context, parts []topicPartition) {
	st, err := s.state.loadRetrying(ctx, s.cfg.Topics.Flows, s.log)
	if err != nil {
		s.stateErr = fmt.Errorf("state of assigned partitions: %w", err)
		return
	}
	maps.Copy(s.histories, st.histories)
	episodes := s.trust.assigned(st.trust, s.cfg.Topics.Flows, parts, !s.trustRetained)
	s.trustRetained = true
	fleets := 0
	if s.fleetSaved == nil {
		// At start only: later, the episodes in memory are newer. With
		// several instances each tallies the devices of its own
		// partitions, and the state saved last is the one restored.
		fleets = s.detector.RestoreFleets(st.fleets)
		s.fleetSaved = st.fleets
	}
	if stream, err := integrity.TopicStream(ctx, s.cfg.Kafka, s.cfg.Topics.Flows); err == nil {
		s.stream = stream
	} else {
		s.log.Warn("topic id not read: checkpoints are resumed whatever topic they were of", "err", err)
	}
	for _, tp := range parts {
		if cp, ok := st.checkpoints[tp.partition]; ok {
			if cp.Stream != "" && s.stream != "" && cp.Stream != s.stream {
				// The topic was deleted and created again: its offsets
				// are another topic's, the checkpoint says nothing of them.
				s.log.Warn("checkpoint of an earlier topic of the same name not resumed", "partition", tp.partition, "checkpoint_stream", cp.Stream, "stream", s.stream)
				continue
			}
			s.restored[tp.partition] = cp
		}
	}
	s.log.Info("partitions assigned", "partitions", len(parts), "checkpoints", len(s.restored), "device_histories", len(st.histories),
		"trust_episodes", episodes, "fleet_episodes", fleets)
}

// partitionsRevoked commits what was fully processed of partitions leaving
// this instance and forgets their windows; the open windows' records are
// above the committed offset, so the partition's next owner rebuilds them.
func (s *DetectStage) partitionsRevoked(ctx context.Context, parts []topicPartition, lost bool) {
	if !lost {
		s.commit(ctx)
	}
	for _, tp := range parts {
		gone := s.partitions[tp.partition]
		delete(s.partitions, tp.partition)
		if gone != nil {
			for id := range gone.devices {
				if !s.trackedElsewhere(id, tp.partition) {
					delete(s.models, id) // the partition's next owner restores it
				}
			}
		}
		delete(s.committed, tp.partition)
		delete(s.restored, tp.partition)
		s.dropPartition(int32(tp.partition))
		s.trust.forget(s.cfg.Topics.Flows, int32(tp.partition))
	}
}

func (s *DetectStage) run(ctx context.Context) error {
	lastCommit := time.Now()
	for {
		// While a first model's warm-up history is being verified, the
		// stage looks every settlePoll for the verification's end: a
		// backlog read to its end leaves no record to prompt the model's
		// training and the held windows' judging.
		wait, verifying := s.cfg.CommitInterval, s.detector.Verifying()
		if verifying {
			wait = min(wait, settlePoll)
		}
		fetches, err := s.consumer.poll(ctx, wait)
		if err != nil && !errors.Is(err, errPollIdle) {
			return err
		}
		if err = s.stateErr; err == nil {
			err = s.processFetches(ctx, fetches)
		}
		if err == nil && verifying {
			err = s.settle(ctx)
		}
		if err == nil && time.Since(lastCommit) >= s.cfg.CommitInterval {
			s.commit(ctx)
			lastCommit = time.Now()
		}
		s.consumer.release()
		if err != nil {
			return err
		}
	}
}

// settlePoll is how often the stage looks for the end of a first model's
// verification while its warm-up history is verified.
const settlePoll = 50 * time.Millisecond

// settle trains the first models whose warm-up history has been verified
// and hands the alerts of their held windows to the outbox.
func (s *DetectStage) settle(ctx context.Context) error {
	s.queueSettled(ctx)
	if len(s.pending) > 0 {
		return s.flushAlerts(ctx)
	}
	return nil
}

// queueSettled trains the first models whose warm-up history has been
// verified (Detector.Settle) and queues the alerts of their held windows.
func (s *DetectStage) queueSettled(ctx context.Context) {
	settled, err := s.detector.Settle(ctx)
	for _, a := range settled {
		s.queue(a)
	}
	if err != nil {
		s.log.Warn("first model not trained after its warm-up was verified; will retry", "err", err)
	}
}

// processFetches runs a poll's records through the stage, then hands
// their alerts to the outbox in one durable write.
func (s *DetectStage) processFetches(ctx context.Context, fetches kgo.Fetches) error {
	now := time.Now()
	s.fetched = s.fetched[:0]
	fetches.EachPartition(func(fp kgo.FetchTopicPartition) {
		if len(fp.Records) > 0 {
			s.fetched = append(s.fetched, fp)
		}
	})
	// The partitions' records are taken in the order of their timestamps
	// rather than a partition at a time, so that a backlog's first poll
	// does not run one partition hours ahead of the others: a device
	// whose records are on several partitions is then seen on all of them
	// before its first window closes, and its parts are joined from the
	// start (assembly.go). Each partition's own order is kept.
	s.batch.reset()
	_ = interleave(s.fetched, s.batch.add)
	s.batch.decode()
	var err error
	for i, r := range s.batch.records {
		if err = s.process(ctx, asMessage(r), &s.batch.flows[i], s.batch.errs[i]); err != nil {
			break
		}
	}
	for _, fp := range s.fetched {
		if p := s.partitions[int(fp.Partition)]; p != nil {
			p.lag.Set(float64(fp.HighWatermark - p.processed - 1))
			p.lastRecord, p.caughtUp = now, p.processed >= fp.HighWatermark-1
		}
	}
	if err == nil {
		// Also after a poll that brought nothing: a partition gone
		// idle stops holding windows back.
		err = s.scoreAssembled(ctx)
	}
	if err != nil {
		return err
	}
	if len(s.pending) > 0 {
		return s.flushAlerts(ctx)
	}
	return nil
}

// process runs one record, decoded as rec (or not, with decodeErr), through
// identity → window → score → sinks.
func (s *DetectStage) process(ctx context.Context, m kafka.Message, rec *decode.FlowRecord, decodeErr error) error {
	topic := s.cfg.Topics.Flows
	if s.consumed == nil {
		s.consumed = s.metrics.RecordsConsumed.WithLabelValues(topic)
		s.metrics.RecordsLate.WithLabelValues(topic) // a series at 0 until a record comes late
	}
	s.consumed.Inc()
	s.metrics.Summary.RecordsConsumed.Add(1)
	p := s.partitions[m.Partition]
	if p == nil || m.Offset <= p.processed {
		// New partition, or one handed back after a rebalance and re-read
		// from its committed offset, or a topic created anew: start its
		// windows afresh.
		if p != nil {
			if stream, err := integrity.TopicStream(ctx, s.cfg.Kafka, topic); err == nil && stream != s.stream && s.stream != "" {
				s.log.Warn("topic was created anew: its windows and checkpoints start afresh", "topic", topic, "old_stream", s.stream, "stream", stream)
				s.stream = stream
				delete(s.restored, m.Partition)
			}
		}
		p = newPartitionWindows(s.cfg.Window, int32(m.Partition))
		part := int32(m.Partition)
		p.restore = func(d *deviceState) { s.restoreDevice(d, part) }
		p.model = s.deviceModel
		p.deferVector = true
		if cp, ok := s.restored[m.Partition]; ok {
			p.resume(cp)
			delete(s.restored, m.Partition)
		}
		p.lag = s.metrics.ConsumerLag.WithLabelValues(s.cfg.GroupID, topic, strconv.Itoa(m.Partition))
		s.partitions[m.Partition] = p
	}

	// A record the partition's last owner had processed is read again only
	// to rebuild the windows still open at its checkpoint; its dead letter
	// and trust alerts were dealt with then.
	replayed := m.Offset <= p.replayedThrough

	if err := decodeErr; err != nil {
		if replayed {
			p.processed = m.Offset
			return nil
		}
		reason := err.Error()
		var de *decode.Error
		if errors.As(err, &de) {
			reason = de.Reason
		}
		s.metrics.RecordsRejected.WithLabelValues(topic, "decode").Inc()
		s.metrics.Summary.RecordsRejected.Add(1)
		if err := s.dlq.Send(ctx, m, reason); err != nil {
			return fmt.Errorf("dead-letter offset %d: %w", m.Offset, err)
		}
		p.processed = m.Offset
		return nil
	}

	dev := s.registry.Resolve(rec)
	flow := rec.Feature()
	if dev == nil && rec.DeviceID == "" {
		// The reply leg of a unidirectional flow: inbound traffic of the
		// device at its destination.
		if to := s.registry.ResolveDestination(rec); to != nil {
			dev, flow = to, rec.Inbound()
		}
	}
	switch {
	case replayed && (dev == nil || revokedAt(dev, rec.Time)):
		p.processed = m.Offset
	case dev == nil:
		p.processed = m.Offset
		s.queue(s.trust.raise(finderFlows, contract.AlertRogueDevice, unknownDeviceKey(rec), "", rec.Time, m,
			"device is not registered on the ledger"))
	case revokedAt(dev, rec.Time):
		p.processed = m.Offset
		s.queue(s.trust.raise(finderFlows, contract.AlertRevokedDevice, dev.ID, dev.Profile, rec.Time, m,
			"device was revoked: "+dev.RevokedReason))
	default:
		var accepted bool
		s.closed, accepted = p.Add(dev.ID, dev.Profile, rec.Time, m.Offset, flow, s.closed[:0])
		if !accepted && !replayed {
			s.metrics.RecordsLate.WithLabelValues(topic).Inc()
			s.late.add(ctx, s.log, time.Now(), time.Duration(p.watermark-rec.Time.UnixNano()))
		}
		if len(s.closed) > 0 {
			// Judged once every partition is done with their window
			// index (barrier.go), after the poll.
			now := time.Now().UnixNano()
			for i := range s.closed {
				s.closed[i].closedAt = now
			}
			s.bar.waiting = s.route(s.closed, s.bar.waiting)
		}
	}
	if len(s.pending) > 0 && time.Since(s.pendingSince) >= s.cfg.AlertBatchDelay {
		return s.flushAlerts(ctx)
	}
	return nil
}

// score judges closed windows and queues their alerts.
func (s *DetectStage) score(ctx context.Context, ws []ClosedWindow) error {
	if len(ws) == 0 {
		return nil
	}
	started := time.Now()
	verdicts, err := s.detector.ScoreWindows(ctx, ws, s.verdicts[:0])
	s.verdicts = verdicts
	for i := range ws {
		if i < len(verdicts) && verdicts[i].Held {
			ws[i].window = nil // the detector's until it judges it
			continue
		}
		// The detector taught the device's history as it judged the
		// window (Verdict.Learn); the window is only recycled.
		s.release(&ws[i], false)
	}
	if err != nil {
		return err
	}
	s.metrics.StageLatency.WithLabelValues("score").Observe(time.Since(started).Seconds())
	for i, v := range verdicts {
		// From when the window closed, its wait for parts and for the
		// other partitions included.
		at := started
		if i < len(ws) && ws[i].closedAt != 0 {
			at = time.Unix(0, ws[i].closedAt)
		}
		for _, a := range v.Alerts {
			s.queue(a)
			s.pendingClosedAt = append(s.pendingClosedAt, at)
		}
	}
	return nil
}

// scoreAssembled scores the waiting windows that are now complete — their
// parts joined (assembly.go) and every partition done with their window
// index (barrier.go).
func (s *DetectStage) scoreAssembled(ctx context.Context) error {
	s.ready = s.complete(time.Now(), s.ready[:0])
	return s.score(ctx, s.ready)
}

// revokedAt reports whether the device's certificate was revoked at event
// time t: records from before the revocation took effect are judged as the
// device's normal traffic, however late they are processed.
func revokedAt(d *contract.Device, t time.Time) bool {
	return d.Status == contract.DeviceRevoked && !t.Before(d.RevokedAt)
}

func (s *DetectStage) queue(a *contract.Alert) {
	if a != nil {
		if len(s.pending) == 0 {
			s.pendingSince = time.Now()
		}
		s.pending = append(s.pending, *a)
	}
}

func unknownDeviceKey(r *decode.FlowRecord) string {
	switch {
	case r.DeviceID != "":
		return r.DeviceID
	case r.SrcMAC != "":
		return "mac:" + r.SrcMAC
	default:
		return "ip:" + r.SrcIP.String()
	}
}

// flushAlerts hands the pending alerts to the durable outbox; once Add has
// returned they survive a crash, so the offsets behind them may be
// committed.
func (s *DetectStage) flushAlerts(ctx context.Context) error {
	started := time.Now()
	if _, err := s.outbox.Add(ctx, s.pending); err != nil {
		return err
	}
	s.metrics.StageLatency.WithLabelValues("outbox_add").Observe(time.Since(started).Seconds())
	for _, at := range s.pendingClosedAt {
		s.metrics.StageLatency.WithLabelValues("window_close_to_alert").Observe(time.Since(at).Seconds())
	}
	s.pending, s.pendingClosedAt = s.pending[:0], s.pendingClosedAt[:0]
	return nil
}

// checkKeying counts the devices tracked on more than one partition and
// says, once, when they are most of them: the producers do not key records
// by device. This instance joins each device's parts from the partitions it
// reads (assembly.go), at the cost of windows that wait for the slowest of
// them; with several instances in the group a device's records are split
// between them, and each judges its part.
func (s *DetectStage) checkKeying() {
	if s.seen == nil {
		s.seen = map[string]bool{}
	}
	clear(s.seen)
	split := 0
	for _, p := range s.partitions {
		for id := range p.devices {
			again, ok := s.seen[id]
			if ok && !again {
				split++
			}
			s.seen[id] = ok
		}
	}
	s.metrics.SplitDevices.Set(float64(split))
	if split >= splitWarnDevices && 2*split >= len(s.seen) && !s.splitWarned {
		s.splitWarned = true
		s.log.Warn("records are not keyed by device: the flows of most devices arrive on several partitions; this instance joins each device's parts into one window, which waits for the slowest partition, but with several instances a device's records are split between them and each judges only its part; produce iot.flows keyed by device id or source address (goflow2: -transport.kafka.hashing with a -mapping whose formatter.key is sampler_address; README, Flow input formats)",
			"devices_on_several_partitions", split, "devices", len(s.seen))
	}
}

// splitWarnDevices is the fewest devices on several partitions that can
// mean unkeyed records rather than an attack's victims.
const splitWarnDevices = 10

// deviceModel returns a device's model, one per device for all the
// partitions this instance reads, and whether a state of the device holds
// it already.
func (s *DetectStage) deviceModel(id string) (*deviceModel, bool) { return s.models.of(id) }

// trackedElsewhere reports whether a partition other than part tracks the
// device.
func (s *DetectStage) trackedElsewhere(id string, part int) bool {
	for q, p := range s.partitions {
		if q != part && p.devices[id] != nil {
			return true
		}
	}
	return false
}

// restoreDevice gives a device newly tracked on partition part the model it
// had at the last checkpoint: destination history, baseline, incident
// state — unless a state of the device on another partition of this
// instance holds the model already, and has carried it on since. An open
// incident is not restored from a checkpoint that a state on a partition
// this instance no longer reads wrote (the reply legs of traffic between two
// registered devices go with the initiator's records, so a device can be
// tracked by two instances): that incident is the other instance's to
// update and close, and a copy of it here would raise a second closing under
// the same incident id, hiding its later events behind it.
func (s *DetectStage) restoreDevice(d *deviceState, part int32) {
	if d.shared {
		return
	}
	raw, ok := s.histories[d.id]
	if !ok {
		return
	}
	if err := unmarshalDevice(raw, d); err != nil {
		s.log.Warn("device checkpoint ignored", "device", d.id, "err", err)
		*d.deviceModel = deviceModel{}
		return
	}
	if w, ok := s.historyFrom[d.id]; ok && w != part {
		d.incident = incidents.State{}
	}
}

// saveFleets writes the fleet episode states that changed since the last
// save, so that a restart carries on an open episode rather than opening
// it again and reporting the device incidents it had absorbed. A failed
// write only costs that, and does not hold the commit back.
func (s *DetectStage) saveFleets(ctx context.Context) {
	changed := map[string][]byte{}
	for profile, b := range s.detector.FleetStates() {
		if !bytes.Equal(b, s.fleetSaved[profile]) {
			changed[profile] = b
		}
	}
	if len(changed) == 0 {
		return
	}
	if err := s.state.SaveFleets(ctx, s.cfg.Topics.Flows, changed); err != nil {
		s.log.Warn("fleet episodes not saved; a restart now would open them again", "err", err)
		return
	}
	if s.fleetSaved == nil {
		s.fleetSaved = map[string][]byte{}
	}
	maps.Copy(s.fleetSaved, changed)
}

// commit commits, per partition, the newest fully processed offset. Before
// it, the alerts raised so far go to the outbox and the state store gets
// what the partition's next owner (this instance after a restart, or
// another) needs to carry on from that offset: the device histories that
// changed and the partition's checkpoint. A restart from the committed
// offset then finds histories at least as new; replayed windows re-learn
// destinations the history already holds, which changes nothing.
func (s *DetectStage) commit(ctx context.Context) {
	s.queueSettled(ctx)
	var newest int64
	waiting := s.bar.waitingDevices(s.asm.waiting)
	for _, p := range s.partitions {
		for _, a := range s.detector.ExpireIncidents(p, waiting, nil) {
			s.queue(a)
		}
		newest = max(newest, p.watermark)
	}
	if newest > 0 {
		for _, a := range s.trust.expire(finderFlows, time.Unix(0, newest), nil) {
			s.queue(a)
		}
	}
	if len(s.pending) > 0 {
		if err := s.flushAlerts(ctx); err != nil {
			s.log.Warn("alerts not in the outbox; offsets not committed", "err", err)
			return
		}
	}
	// Trust episodes whose events are now in the outbox are saved, so that
	// a restart resumes them rather than opening them again.
	if snap := s.trust.snapshot(finderFlows); len(snap.records) > 0 {
		if err := s.state.SaveTrust(ctx, snap.records); err != nil {
			s.log.Warn("trust episodes not saved; offsets not committed, will retry", "err", err)
			return
		}
		s.trust.saved(finderFlows, snap)
	}
	s.saveFleets(ctx)
	next := map[topicPartition]int64{}
	checkpoints := map[int]partitionCheckpoint{}
	devices, open := 0, 0
	waitingFirst, held := s.waitingFrom()
	for part, p := range s.partitions {
		devices += len(p.devices)
		open += p.openWindows()
		off := p.committable()
		if first, ok := waitingFirst[int32(part)]; ok && first-1 < off {
			off = first - 1
		}
		if last, ok := s.committed[part]; off < 0 || ok && off <= last {
			continue
		}
		next[topicPartition{s.cfg.Topics.Flows, part}] = off + 1
		cp := p.checkpoint(held[int32(part)])
		cp.Stream = s.stream
		checkpoints[part] = cp
	}
	s.metrics.TrackedDevices.Set(float64(devices))
	s.checkKeying()
	s.metrics.OpenWindows.Set(float64(open + s.asm.parts + len(s.bar.waiting)))

	if len(next) == 0 {
		return
	}
	changed := map[string][]byte{}
	changedFrom := map[string]int32{}
	for part, p := range s.partitions {
		for id, d := range p.devices {
			if d.dirty {
				changed[id] = marshalDevice(d)
				changedFrom[id] = int32(part)
			}
		}
	}
	if err := s.state.Save(ctx, s.cfg.Topics.Flows, changed, checkpoints); err != nil {
		s.log.Warn("state checkpoint failed; offsets not committed, will retry", "err", err)
		return
	}
	for _, p := range s.partitions {
		for id, d := range p.devices {
			if raw, ok := changed[id]; ok {
				d.dirty = false
				s.histories[id] = raw
				s.historyFrom[id] = changedFrom[id]
			}
		}
	}
	if err := s.consumer.commit(ctx, next); err != nil {
		s.log.Warn("offset commit failed; will retry", "err", err)
		return
	}
	for tp, off := range next {
		s.committed[tp.partition] = off - 1
	}
}
