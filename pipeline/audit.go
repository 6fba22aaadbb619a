package pipeline

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/chainwatch/chainwatch/ledgerclient"
	"github.com/chainwatch/chainwatch/ledgerclient/contract"
	"github.com/chainwatch/chainwatch/pipeline/integrity"
	"github.com/chainwatch/chainwatch/pipeline/kafkaconn"
)

// AuditConfig configures the continuous audit of anchored history. Zero
// values are defaults.
type AuditConfig struct {
	// Interval between audit rounds. Default 5s; negative turns the audit
	// off (history is then verified only by replay and before training).
	Interval time.Duration
	// RecordsPerRound bounds how many anchored records one round re-reads,
	// shared by the partitions audited, so the audit costs a bounded share
	// of the broker's and the service's work. Default 200,000: 40,000
	// records/s, a few percent of a core. A pass over a partition's whole
	// history takes its anchored records ÷ (this ÷ partitions audited)
	// rounds, so a change is found within that time.
	RecordsPerRound int64
}

func (c AuditConfig) withDefaults() AuditConfig {
	if c.Interval == 0 {
		c.Interval = 5 * time.Second
	}
	if c.RecordsPerRound == 0 {
		c.RecordsPerRound = 200_000
	}
	return c
}

// AuditStage keeps re-verifying anchored history while the service runs:
// round after round it replays the next anchored ranges of each partition
// this instance anchors, from the oldest to the newest and then from the
// oldest again, and raises an integrity alert for a range whose records no
// longer hash to the root on the ledger — what a broker, a disk or a
// restored backup that changed history looks like. Each anchor's alert has
// one id, so finding the same range again raises nothing new.
type AuditStage struct {
	cfg     AuditConfig
	kafka   *kafkaconn.Cluster
	ledger  *ledgerclient.Client
	outbox  AlertQueue
	metrics *Metrics
	log     *slog.Logger
	// owned lists the partitions to audit: those whose anchoring this
	// instance owns, so that instances of a group split the audit as they
	// split the anchoring.
	owned func() []topicPartition
	// cursor is the next offset to audit, per partition.
	cursor map[topicPartition]int64
	// reported holds the anchors already found changed, logged once.
	reported map[string]bool
	// leaves are the kept leaf hashes: the replay reads those of a range
	// retention cut through, and the audit deletes those of a range
	// retention removed whole.
	leaves  *integrity.LeafTopic
	anchors *integrity.Anchors
	// floor is, per partition, the offset after the wholly expired ranges
	// already counted: a round that starts over starts there.
	floor map[topicPartition]int64
	// stream is, per partition, the topic identity cursor and floor
	// belong to: a topic deleted and created again starts both over.
	stream map[topicPartition]string
	// sealsAfter is the id after which seals on the ledger have not yet
	// been checked against the batch index (checkSeals).
	sealsAfter string
	stageRun
}

// NewAuditStage wires the stage; Start runs it.
func NewAuditStage(cfg AuditConfig, cluster *kafkaconn.Cluster, leafTopic string, ledger *ledgerclient.Client, outbox AlertQueue, owned func() []topicPartition, metrics *Metrics, log *slog.Logger) *AuditStage {
	leaves := integrity.NewLeafTopic(cluster, leafTopic)
	return &AuditStage{cfg: cfg.withDefaults(), kafka: cluster, ledger: ledger, outbox: outbox, owned: owned, metrics: metrics,
		log: log.With("stage", "audit"), cursor: map[topicPartition]int64{}, reported: map[string]bool{},
		leaves: leaves, anchors: integrity.NewAnchors(ledger, leaves), floor: map[topicPartition]int64{},
		stream: map[topicPartition]string{}, stageRun: stageRun{name: "audit", log: log},
		// Seals from a minute before the start on: older ones were
		// checked by the instance that ran then.
		sealsAfter: fmt.Sprintf("%013d.", time.Now().Add(-time.Minute).UnixMilli())}
}

// Start runs audit rounds until ctx ends.
func (s *AuditStage) Start(ctx context.Context) error {
	s.start(ctx, func(ctx context.Context) {
		s.launch(ctx, func(ctx context.Context) error {
			if s.cfg.Interval < 0 {
				<-ctx.Done()
				return nil
			}
			tick := time.NewTicker(s.cfg.Interval)
			defer tick.Stop()
			for {
				select {
				case <-ctx.Done():
					return nil
				case <-tick.C:
				}
				if err := s.round(ctx); err != nil && ctx.Err() == nil {
					// The broker or the ledger may be away for a while; the
					// next round tries again from the same place.
					s.log.Warn("audit round failed", "err", err)
				}
			}
		})
	})
	return nil
}

// Shutdown waits for the stage to stop.
func (s *AuditStage) Shutdown(ctx context.Context) error {
	if err := s.wait(ctx); err != nil {
		return err
	}
	return s.leaves.Close()
}

// round audits up to RecordsPerRound anchored records, split evenly over
// the partitions owned.
func (s *AuditStage) round(ctx context.Context) error {
	parts := s.owned()
	if len(parts) == 0 {
		return nil
	}
	sort.Slice(parts, func(i, j int) bool {
		if parts[i].topic != parts[j].topic {
			return parts[i].topic < parts[j].topic
		}
		return parts[i].partition < parts[j].partition
	})
	budget := max(s.cfg.RecordsPerRound/int64(len(parts)), 1)
	for _, tp := range parts {
		s.metrics.IntegrityFinds.WithLabelValues(tp.topic) // the series exists, at 0, before any finding
		if err := s.auditPartition(ctx, tp, budget); err != nil {
			return err
		}
	}
	if err := s.checkSeals(ctx); err != nil {
		return err
	}
	s.metrics.AuditRounds.Inc()
	s.metrics.AuditLastRound.SetToCurrentTime()
	return nil
}

// checkSeals finds seals on the ledger that the batch index does not hold.
// The index record of a seal is acknowledged before the seal is submitted,
// so a seal without one means the index was altered: the seal's batches
// can no longer be listed, and their records would read as unanchored
// rather than changed. Each such seal raises one integrity alert. The
// index lets go of a seal only when all its batches have expired, long
// after this check has passed it.
func (s *AuditStage) checkSeals(ctx context.Context) error {
	for {
		seals, err := s.ledger.ListSeals(ctx, s.sealsAfter, 1000)
		if err != nil {
			return fmt.Errorf("audit seals: %w", err)
		}
		ids := make([]string, len(seals))
		for i, seal := range seals {
			ids[i] = seal.ID
		}
		missing, err := s.anchors.MissingSeals(ctx, ids)
		if err != nil {
			return fmt.Errorf("audit seals: %w", err)
		}
		var alerts []contract.Alert
		for _, seal := range seals {
			if slices.Contains(missing, seal.ID) {
				alerts = append(alerts, s.missingSeal(seal))
			}
		}
		if len(alerts) > 0 {
			if _, err := s.outbox.Add(ctx, alerts); err != nil {
				return err
			}
		}
		if len(seals) > 0 {
			s.sealsAfter = seals[len(seals)-1].ID
		}
		if len(seals) < 1000 {
			return nil
		}
	}
}

// missingSeal is the integrity alert of a seal the batch index lost.
func (s *AuditStage) missingSeal(seal contract.Seal) contract.Alert {
	index := s.leaves.Topic()
	detail := fmt.Sprintf("seal %s on the ledger (%d batches, %d records from %s to %s, tx %s) has no record in the batch index %s: the index was altered, and these batches can no longer be verified",
		seal.ID, seal.Batches, seal.Records, seal.FirstTimestamp.Format(time.RFC3339), seal.LastTimestamp.Format(time.RFC3339), seal.TxID, index)
	if !s.reported["seal/"+seal.ID] {
		s.reported["seal/"+seal.ID] = true
		s.metrics.IntegrityFinds.WithLabelValues(index).Inc()
		s.log.Error("a seal's batch index record is missing", "seal", seal.ID, "batches", seal.Batches, "records", seal.Records, "tx", seal.TxID)
	}
	return contract.Alert{
		ID:          contract.AlertID(contract.AlertIntegrity, "seal/"+seal.ID, time.Unix(0, 0), time.Unix(0, 0), ""),
		Kind:        contract.AlertIntegrity,
		WindowStart: seal.FirstTimestamp.UTC(), WindowEnd: seal.LastTimestamp.UTC(),
		Score: 1, Confidence: "high",
		Evidence: contract.Evidence{Topic: index, Detail: detail},
	}
}

func (s *AuditStage) auditPartition(ctx context.Context, tp topicPartition, budget int64) error {
	stream, err := integrity.TopicStream(ctx, s.kafka, tp.topic)
	if err != nil {
		return fmt.Errorf("audit %s/%d: %w", tp.topic, tp.partition, err)
	}
	if old, ok := s.stream[tp]; ok && old != stream {
		// The topic was created anew: its anchors are audited from the
		// first; the old stream's stay on the ledger for replay.
		s.log.Info("topic was created anew: auditing its own anchors from the start", "topic", tp.topic, "partition", tp.partition,
			"old_stream", old, "stream", stream)
		delete(s.cursor, tp)
		delete(s.floor, tp)
	}
	s.stream[tp] = stream
	from := s.cursor[tp]
	anchors, err := s.anchors.List(ctx, stream, int32(tp.partition), from, -1)
	if err != nil {
		return fmt.Errorf("audit %s/%d: %w", tp.topic, tp.partition, err)
	}
	// Anchors that end before the cursor can be listed when one straddles
	// it; skip them, and take whole anchors up to the budget.
	var chosen []integrity.Anchor
	var records int64
	for _, a := range anchors {
		if a.LastOffset < from {
			continue
		}
		if len(chosen) > 0 && records+a.Count > budget {
			break
		}
		chosen = append(chosen, a)
		records += a.Count
	}
	if len(chosen) == 0 {
		// Caught up: the next round starts over from the oldest range not
		// wholly expired (those were counted and their leaves deleted).
		s.cursor[tp] = s.floor[tp]
		return nil
	}
	first, last := chosen[0].FirstOffset, chosen[len(chosen)-1].LastOffset
	if from > s.floor[tp] && from < first {
		first = from // a round continuing after an anchor checks the gap too
	}
	verdicts, err := integrity.Replay(ctx, s.ledger, integrity.ReplayRequest{Kafka: s.kafka, Topic: tp.topic, AnchoredAs: stream, Partition: int32(tp.partition), From: first, To: last, Anchors: s.anchors})
	if err != nil {
		return err
	}
	if s.recreatedDuring(ctx, tp, stream, verdicts) {
		return nil
	}
	var alerts []contract.Alert
	for _, v := range verdicts {
		switch v.Status {
		case integrity.RangeVerified:
			s.metrics.AuditedRecords.WithLabelValues(tp.topic, "verified").Add(float64(v.Records))
			s.metrics.Summary.RecordsAudited.Add(v.Records)
		case integrity.RangeExpired:
			// Retention, not tampering: never alerted. Once an anchor's
			// records are all gone they are counted, its leaf hashes
			// deleted, and later rounds start past it.
			if !coversAnchor(v) {
				break // cut through: counted once it is gone whole
			}
			if err := s.leaves.Forget(ctx, v.AnchorID); err != nil {
				break // tried again next round
			}
			s.metrics.AuditedRecords.WithLabelValues(tp.topic, "expired").Add(float64(v.Records))
			s.floor[tp] = max(s.floor[tp], v.LastOffset+1)
		case integrity.RangeUnanchored:
			// Between two anchored ranges (replay reads from the first
			// chosen anchor to the last): the anchoring stage never leaves
			// a gap, so the batch index lost the batches that covered it.
			v.AnchorID = contract.AnchorID(stream, v.Partition, v.FirstOffset, v.LastOffset)
			v.Detail = fmt.Sprintf("no anchor covers offsets %d..%d, between anchored ranges: the batch index lost the batches that sealed them", v.FirstOffset, v.LastOffset)
			fallthrough
		case integrity.RangeMismatched:
			s.metrics.AuditedRecords.WithLabelValues(tp.topic, "mismatched").Add(float64(v.Records))
			if !s.reported[v.AnchorID] {
				s.reported[v.AnchorID] = true
				s.metrics.IntegrityFinds.WithLabelValues(tp.topic).Inc()
				s.log.Error("anchored history changed", "topic", tp.topic, "partition", v.Partition,
					"first_offset", v.FirstOffset, "last_offset", v.LastOffset, "anchor", v.AnchorID, "detail", v.Detail)
			}
			alerts = append(alerts, integrity.IntegrityAlert(tp.topic, v, time.Now()))
		}
	}
	if len(alerts) > 0 {
		if _, err := s.outbox.Add(ctx, alerts); err != nil {
			return err
		}
	}
	s.cursor[tp] = last + 1
	return nil
}

// recreatedDuring reports whether the topic stopped being stream while a
// round read it, when the round found anything: a topic deleted and created
// again between the round's look at its id and its reads serves the new
// topic's records (or none) in place of the old stream's, which reads as
// history deleted or changed. Such a round's verdicts are dropped and its
// cursor left; the next round sees the new stream and audits its own
// anchors from the start, the old stream's staying on the ledger for replay
// against a copy of its records.
func (s *AuditStage) recreatedDuring(ctx context.Context, tp topicPartition, stream string, verdicts []integrity.ReplayRange) bool {
	if !slices.ContainsFunc(verdicts, func(v integrity.ReplayRange) bool {
		return v.Status == integrity.RangeMismatched || v.Status == integrity.RangeUnanchored
	}) {
		return false
	}
	now, err := integrity.TopicStream(ctx, s.kafka, tp.topic)
	if err == nil && now == stream {
		return false
	}
	s.log.Warn("topic deleted or created again while the audit read it: its findings are dropped and the next round starts over",
		"topic", tp.topic, "partition", tp.partition, "stream", stream, "now", now, "err", err)
	return true
}

// coversAnchor reports whether the verdict covers its whole anchor (the
// anchor id ends with the anchored range).
func coversAnchor(v integrity.ReplayRange) bool {
	return v.AnchorID != "" && strings.HasSuffix(v.AnchorID, fmt.Sprintf("/%d/%d-%d", v.Partition, v.FirstOffset, v.LastOffset))
}
