package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/chainwatch/chainwatch/ledgerclient/contract"
	"github.com/chainwatch/chainwatch/pipeline/decode"
	"github.com/chainwatch/chainwatch/pipeline/incidents"
	"github.com/chainwatch/chainwatch/pipeline/kafkaconn"
)

// TelemetryConfig configures the telemetry stage. Zero values are defaults.
type TelemetryConfig struct {
	Kafka *kafkaconn.Cluster
	// GroupID of the stage's consumer group. Default "chainwatch-telemetry".
	GroupID string
	Topics  Topics
	// Window is the span within which a device's repeated finding of one
	// kind raises one alert. Default 60s.
	Window time.Duration
}

// TelemetryStage checks every device-signed envelope against the device's
// birth certificate: unknown device → rogue-device, revoked → revoked-device,
// a signature that does not verify with the registered key or a sequence
// number not above the last one seen → bad-signature, firmware not approved
// for the device's profile → firmware-mismatch.
type TelemetryStage struct {
	cfg      TelemetryConfig
	registry *Registry
	outbox   AlertQueue
	dlq      *DeadLetter
	metrics  *Metrics
	log      *slog.Logger
	// trustRetained is set once the first assignment has kept the
	// restored trust episodes of this instance's partitions.
	trustRetained bool

	consumer *groupConsumer
	lastSeq  map[string]seenSequence
	// seqChanged holds the sequences raised since the last commit, saved
	// to the state store before the offsets that produced them.
	seqChanged map[string]seenSequence
	state      *StateStore
	stateErr   error
	trust      *trustAlerts
	// newest is the newest envelope event time seen: the time by which
	// quiet trust incidents close.
	newest time.Time
	stageRun
}

// NewTelemetryStage wires the stage; Start runs it.
// trust groups its findings into incidents; the service shares one with the
// detection stage, so that a device both stages find is one incident. Nil
// gives the stage its own.
func NewTelemetryStage(cfg TelemetryConfig, registry *Registry, trust *trustAlerts, outbox AlertQueue, state *StateStore, dlq *DeadLetter, metrics *Metrics, log *slog.Logger) *TelemetryStage {
	if cfg.GroupID == "" {
		cfg.GroupID = "chainwatch-telemetry"
	}
	cfg.Topics = cfg.Topics.WithDefaults()
	if cfg.Window == 0 {
		cfg.Window = time.Minute
	}
	if trust == nil {
		trust = newTrustAlerts(cfg.Window, incidents.Rule{}, metrics)
	}
	return &TelemetryStage{cfg: cfg, registry: registry, outbox: outbox, state: state, dlq: dlq, metrics: metrics,
		log: log.With("stage", "telemetry"), lastSeq: map[string]seenSequence{}, seqChanged: map[string]seenSequence{}, trust: trust,
		stageRun: stageRun{name: "telemetry", log: log}}
}

// Start joins the group and checks envelopes until ctx ends.
func (s *TelemetryStage) Start(ctx context.Context) error {
	var err error
	s.start(ctx, func(ctx context.Context) {
		s.consumer, err = newGroupConsumer(consumerConfig{cluster: s.cfg.Kafka, group: s.cfg.GroupID, topics: []string{s.cfg.Topics.Telemetry}, log: s.log},
			groupHooks{assigned: s.partitionsAssigned, revoked: s.partitionsRevoked})
		if err == nil {
			s.launch(ctx, s.run)
		}
	})
	return err
}

// Shutdown waits for the stage to stop and leaves the group.
func (s *TelemetryStage) Shutdown(ctx context.Context) error {
	if err := s.wait(ctx); err != nil {
		return err
	}
	s.consumer.close()
	return nil
}

// partitionsAssigned reads the devices' last sequence numbers back, so a
// replayed envelope is caught after a restart or a partition move too.
func (s *TelemetryStage) partitionsAssigned(ctx context.Context, parts []topicPartition) {
	st, err := s.state.loadRetrying(ctx, s.cfg.Topics.Flows, s.log)
	if err != nil {
		s.stateErr = fmt.Errorf("telemetry sequences: %w", err)
		return
	}
	s.trust.assigned(st.trust, s.cfg.Topics.Telemetry, parts, !s.trustRetained)
	s.trustRetained = true
	for id, seen := range st.sequences {
		if seen.seq > s.lastSeq[id].seq {
			s.lastSeq[id] = seen
		}
	}
}

func (s *TelemetryStage) run(ctx context.Context) error {
	for {
		fetches, err := s.consumer.poll(ctx, time.Second)
		if err != nil && !errors.Is(err, errPollIdle) {
			return err
		}
		if err = s.stateErr; err == nil {
			err = s.checkAll(ctx, fetches)
		}
		s.consumer.release()
		if err != nil {
			return err
		}
	}
}

// checkAll judges a poll's envelopes, hands their alerts to the outbox in
// one durable write and only then commits their offsets.
func (s *TelemetryStage) checkAll(ctx context.Context, fetches kgo.Fetches) error {
	consumed := s.metrics.RecordsConsumed.WithLabelValues(s.cfg.Topics.Telemetry)
	var alerts []contract.Alert
	next := map[topicPartition]int64{}
	for it := fetches.RecordIter(); !it.Done(); {
		r := it.Next()
		consumed.Inc()
		alert, err := s.check(ctx, asMessage(r))
		if err != nil {
			return err
		}
		if alert != nil {
			alerts = append(alerts, *alert)
		}
		next[topicPartition{r.Topic, int(r.Partition)}] = r.Offset + 1
	}
	if !s.newest.IsZero() {
		for _, a := range s.trust.expire(finderTelemetry, s.newest, nil) {
			alerts = append(alerts, *a)
		}
	}
	if len(alerts) > 0 {
		if _, err := s.outbox.Add(ctx, alerts); err != nil {
			return err
		}
	}
	if err := s.state.SaveSequences(ctx, s.seqChanged); err != nil {
		s.log.Warn("telemetry sequences not saved; offsets not committed, will retry", "err", err)
		return nil
	}
	if snap := s.trust.snapshot(finderTelemetry); len(snap.records) > 0 {
		if err := s.state.SaveTrust(ctx, snap.records); err != nil {
			s.log.Warn("trust episodes not saved; offsets not committed, will retry", "err", err)
			return nil
		}
		s.trust.saved(finderTelemetry, snap)
	}
	clear(s.seqChanged)
	if err := s.consumer.commit(ctx, next); err != nil {
		// The alerts are in the outbox; an uncommitted envelope is only
		// checked again after a restart, and its alert id is the same.
		s.log.Warn("telemetry offset commit failed; will retry with the next poll", "err", err)
	}
	return nil
}

// partitionsRevoked forgets the trust episodes found on partitions leaving
// this instance: their next owner restores them.
func (s *TelemetryStage) partitionsRevoked(_ context.Context, parts []topicPartition, _ bool) {
	for _, tp := range parts {
		s.trust.forget(s.cfg.Topics.Telemetry, int32(tp.partition))
	}
}

// replayed reports whether an envelope repeats a sequence number the device
// already used. Reading again the record that carried the last one, or an
// earlier record of its partition, is a restart re-reading history, not
// the device replaying.
func (s *TelemetryStage) replayed(device string, seq uint64, m kafka.Message) bool {
	last, ok := s.lastSeq[device]
	if !ok || last.seq == 0 || seq > last.seq {
		return false
	}
	return last.partition != int32(m.Partition) || m.Offset > last.offset
}

// check judges one envelope and returns the alert it raises, if any.
func (s *TelemetryStage) check(ctx context.Context, m kafka.Message) (*contract.Alert, error) {
	var t decode.Envelope
	if err := decode.Telemetry(m.Value, &t); err != nil {
		reason := err.Error()
		var de *decode.Error
		if errors.As(err, &de) {
			reason = de.Reason
		}
		s.metrics.RecordsRejected.WithLabelValues(m.Topic, "decode").Inc()
		s.metrics.Summary.RecordsRejected.Add(1)
		if err := s.dlq.Send(ctx, m, reason); err != nil {
			return nil, fmt.Errorf("dead-letter telemetry offset %d: %w", m.Offset, err)
		}
		return nil, nil
	}
	if t.Time().After(s.newest) {
		s.newest = t.Time()
	}
	dev := s.registry.Device(t.DeviceID)
	switch {
	case dev == nil:
		return s.trust.raise(finderTelemetry, contract.AlertRogueDevice, t.DeviceID, "", t.Time(), m, "telemetry from a device that is not registered on the ledger"), nil
	case revokedAt(dev, t.Time()):
		return s.trust.raise(finderTelemetry, contract.AlertRevokedDevice, dev.ID, dev.Profile, t.Time(), m, "telemetry from a revoked device: "+dev.RevokedReason), nil
	case !t.Verify(dev.PublicKey):
		return s.trust.raise(finderTelemetry, contract.AlertBadSignature, dev.ID, dev.Profile, t.Time(), m,
			"signature does not verify with the public key of the device's birth certificate"), nil
	case s.replayed(dev.ID, t.Seq, m):
		return s.trust.raise(finderTelemetry, contract.AlertBadSignature, dev.ID, dev.Profile, t.Time(), m,
			fmt.Sprintf("replayed envelope: sequence %d is not above the last seen %d", t.Seq, s.lastSeq[dev.ID].seq)), nil
	}
	seen := seenSequence{seq: t.Seq, partition: int32(m.Partition), offset: m.Offset}
	s.lastSeq[dev.ID], s.seqChanged[dev.ID] = seen, seen
	if !s.registry.FirmwareApproved(dev.Profile, t.Firmware) {
		return s.trust.raise(finderTelemetry, contract.AlertFirmwareMismatch, dev.ID, dev.Profile, t.Time(), m,
			fmt.Sprintf("firmware %s is not approved for profile %s", t.Firmware, dev.Profile)), nil
	}
	return nil, nil
}
