package pipeline

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/chainwatch/chainwatch/ledgerclient"
	"github.com/chainwatch/chainwatch/ledgerclient/contract"
	"github.com/chainwatch/chainwatch/pipeline/integrity"
	"github.com/chainwatch/chainwatch/pipeline/kafkaconn"
)

// AnchorConfig configures the anchoring stage. Zero values are defaults.
type AnchorConfig struct {
	// Kafka is the cluster the stage consumes from.
	Kafka *kafkaconn.Cluster
	// GroupID is the stage's own consumer group, so anchoring keeps pace
	// independently of detection. Default "chainwatch-anchor".
	GroupID string
	// Topics to anchor. Default: the flows and telemetry topics.
	Topics []string
	// BatchRecords cuts a batch at this many records. Default 5000.
	BatchRecords int
	// BatchAge cuts a batch whose first record arrived this long ago
	// (wall time), so quiet partitions are anchored too. Default: the
	// period. Batches are anchored only at the end of a period anyway, so
	// cutting them sooner adds anchors to the ledger without anchoring
	// anything sooner.
	BatchAge time.Duration
	// Period is how often the batches cut since the last anchoring are
	// anchored: every partition's and topic's under one seal, one ledger
	// transaction (SealBatches) of one root over the batches, so that the
	// ledger's transactions and bytes are one per period whatever the
	// number of partitions. Default 5s.
	Period time.Duration
}

func (c AnchorConfig) withDefaults(t Topics) AnchorConfig {
	if c.GroupID == "" {
		c.GroupID = "chainwatch-anchor"
	}
	if len(c.Topics) == 0 {
		t = t.WithDefaults()
		c.Topics = []string{t.Flows, t.Telemetry}
	}
	if c.BatchRecords == 0 {
		c.BatchRecords = 5000
	}
	if c.Period == 0 {
		c.Period = max(5*time.Second, c.BatchAge)
	}
	if c.BatchAge == 0 {
		c.BatchAge = c.Period
	}
	return c
}

// AnchorStage cuts each partition of the anchored topics into contiguous
// batches, computes each batch's Merkle root, and once a period seals the
// period's batches on the ledger (integrity.NewSeal: one root over their
// descriptors, which the batch index keeps) before committing their
// offsets. On restart it reads where each partition's sealed batches end
// and skips records already anchored, so batches never leave a gap.
type AnchorStage struct {
	cfg     AnchorConfig
	ledger  *ledgerclient.Client
	metrics *Metrics
	log     *slog.Logger

	consumer *groupConsumer
	hasher   integrity.LeafHasher
	// leaves keeps each batch's leaf hashes before its root is anchored,
	// and each seal's batch descriptors (the batch index).
	leaves  *integrity.LeafTopic
	anchors *integrity.Anchors
	// owned is the set of partitions assigned to this instance, read by
	// the audit from its own goroutine.
	ownedMu sync.Mutex
	owned   map[topicPartition]bool
	batches map[topicPartition]*batch
	// pending are the batches cut since the last anchoring, their leaves
	// kept, waiting for the period's transaction; pendingSince is when
	// the oldest was cut.
	pending      []pendingBatch
	pendingSince time.Time
	// unkept are the leaf hashes of batches cut since the last
	// keepLeaves, written together at the end of a poll: one write to the
	// leaf topic rather than one per batch.
	unkept []integrity.AnchorLeaves
	// urgent asks for the open batches to be cut and sealed now, not at
	// the period's end (SealSoon).
	urgent chan struct{}
	stageRun
}

// pendingBatch is a cut batch waiting to be anchored.
type pendingBatch struct {
	tp     topicPartition
	anchor contract.Anchor
	cut    time.Time
}

type topicPartition struct {
	topic     string
	partition int
}

type batch struct {
	// stream is the partition's topic identity its anchors are written
	// under (integrity.StreamOf), looked up at first sight and on every rewind, so
	// that a topic deleted and created again anchors afresh.
	stream       string
	leaves       [][32]byte
	first, last  int64
	firstTs      time.Time
	lastTs       time.Time
	opened       time.Time
	anchoredUpTo int64 // ledger's last anchored offset for this partition
}

// NewAnchorStage wires the stage; Start runs it.
func NewAnchorStage(cfg AnchorConfig, topics Topics, ledger *ledgerclient.Client, metrics *Metrics, log *slog.Logger) *AnchorStage {
	cfg = cfg.withDefaults(topics)
	leaves := integrity.NewLeafTopic(cfg.Kafka, topics.WithDefaults().Leaves)
	return &AnchorStage{cfg: cfg, ledger: ledger, metrics: metrics, log: log.With("stage", "anchor"),
		leaves: leaves, anchors: integrity.NewAnchors(ledger, leaves),
		batches: map[topicPartition]*batch{}, owned: map[topicPartition]bool{}, urgent: make(chan struct{}, 1),
		stageRun: stageRun{name: "anchoring", log: log}}
}

// SealSoon asks the stage to cut its open batches and seal them at its
// next turn (within 1,024 records of a poll, or when an idle poll ends: a
// quarter of BatchAge) instead of at the period's end.
// A first model waits for its warm-up history to be sealed before it
// trains on it, and the detector should not wait a whole period for that;
// the price is a seal or two more on the ledger per first model (the
// verifier asks only while it waits). It never blocks.
func (s *AnchorStage) SealSoon() {
	select {
	case s.urgent <- struct{}{}:
	default:
	}
}

// Start joins the group and anchors until ctx ends. The leaf topic is
// created (one partition, compacted) if the service has not created it.
func (s *AnchorStage) Start(ctx context.Context) error {
	if err := EnsureStateTopic(ctx, s.cfg.Kafka, 1, s.leaves.Topic()); err != nil {
		return err
	}
	var err error
	// The client is created under the stage's profiler label so that its
	// fetch goroutines are counted as the stage's CPU.
	s.start(ctx, func(ctx context.Context) {
		// Batches are cut by count or age, not latency: the broker may hold
		// a fetch until a megabyte is ready, and records are recycled once
		// hashed.
		s.consumer, err = newGroupConsumer(consumerConfig{cluster: s.cfg.Kafka, group: s.cfg.GroupID, topics: s.cfg.Topics, log: s.log,
			minBytes: 1 << 20, maxWait: max(s.cfg.BatchAge/4, 10*time.Millisecond), recycle: true},
			groupHooks{assigned: func(_ context.Context, parts []topicPartition) {
				s.ownedMu.Lock()
				defer s.ownedMu.Unlock()
				for _, tp := range parts {
					s.owned[tp] = true
				}
			}, revoked: func(_ context.Context, parts []topicPartition, _ bool) {
				s.ownedMu.Lock()
				defer s.ownedMu.Unlock()
				// The batch in progress is dropped, not anchored: its
				// records are uncommitted, so the partition's next owner
				// reads them again and, asking the ledger where anchors
				// end, continues the same contiguous sequence.
				for _, tp := range parts {
					delete(s.batches, tp)
					delete(s.owned, tp)
				}
			}})
		if err == nil {
			s.launch(ctx, s.run)
		}
	})
	return err
}

// Owned lists the partitions whose anchoring this instance owns.
func (s *AnchorStage) Owned() []topicPartition {
	s.ownedMu.Lock()
	defer s.ownedMu.Unlock()
	return slices.Collect(maps.Keys(s.owned))
}

// Shutdown waits for the stage to stop and leaves the group. Records of a
// batch not yet anchored stay uncommitted and are anchored after restart.
func (s *AnchorStage) Shutdown(ctx context.Context) error {
	if err := s.wait(ctx); err != nil {
		return err
	}
	s.consumer.close()
	return s.leaves.Close()
}

func (s *AnchorStage) run(ctx context.Context) error {
	wait := max(s.cfg.BatchAge/4, 10*time.Millisecond)
	for {
		fetches, err := s.consumer.poll(ctx, wait)
		if err != nil && !errors.Is(err, errPollIdle) {
			return err
		}
		err = s.addAll(ctx, fetches)
		s.consumer.release()
		if err != nil {
			return err
		}
	}
}

// addAll adds a poll's records to their partitions' batches, then anchors
// the batches that have grown old.
func (s *AnchorStage) addAll(ctx context.Context, fetches kgo.Fetches) error {
	n := 0
	for it := fetches.RecordIter(); !it.Done(); {
		r := it.Next()
		err := s.add(ctx, r)
		r.Recycle()
		if err != nil {
			return err
		}
		// A poll of a backlog can take the stage a while (each cut batch
		// waits for its leaf hashes to be acknowledged): a seal asked for
		// meanwhile is made between records.
		if n++; n%urgentEvery == 0 && len(s.urgent) > 0 {
			if err := s.anchorDue(ctx); err != nil {
				return err
			}
		}
	}
	return s.anchorDue(ctx)
}

// urgentEvery is how many records the stage adds between looks for a seal
// asked for (SealSoon).
const urgentEvery = 1024

// anchorDue cuts the batches that have grown old and anchors the pending
// ones once the period is over, or all at once when a seal was asked for
// (SealSoon).
func (s *AnchorStage) anchorDue(ctx context.Context) error {
	urgent := false
	select {
	case <-s.urgent:
		urgent = true
	default:
	}
	for tp, b := range s.batches {
		if len(b.leaves) > 0 && (urgent || time.Since(b.opened) >= s.cfg.BatchAge) {
			if err := s.cut(ctx, tp, b); err != nil {
				return err
			}
		}
	}
	if err := s.keepLeaves(ctx); err != nil {
		return err
	}
	if len(s.pending) > 0 && (urgent || time.Since(s.pendingSince) >= s.cfg.Period || len(s.pending) >= contract.MaxAnchorsPerTx/2) {
		return s.anchorPending(ctx)
	}
	return nil
}

// keepLeaves writes the leaf hashes of the batches cut since it last ran
// (integrity.LeafTopic), retried until acknowledged: before any of them
// can be anchored, so that an anchor on the ledger always has its leaves.
func (s *AnchorStage) keepLeaves(ctx context.Context) error {
	if len(s.unkept) == 0 {
		return nil
	}
	if err := s.retry(ctx, "keeping leaf hashes", func() error { return s.leaves.PutAll(ctx, s.unkept) }); err != nil {
		return err
	}
	clear(s.unkept)
	s.unkept = s.unkept[:0]
	return nil
}

func (s *AnchorStage) add(ctx context.Context, m *kgo.Record) error {
	tp := topicPartition{m.Topic, int(m.Partition)}
	b := s.batches[tp]
	if b == nil || m.Offset <= b.last {
		// First sight of this partition, or a rewind after a rebalance:
		// ask the ledger how far it is anchored.
		stream, err := integrity.TopicStream(ctx, s.cfg.Kafka, m.Topic)
		if err != nil {
			return fmt.Errorf("anchor %s/%d: %w", m.Topic, m.Partition, err)
		}
		if old := s.batches[tp]; old != nil && old.stream != stream {
			s.log.Warn("topic was created anew: its anchors start afresh, the old topic's stay on the ledger",
				"topic", m.Topic, "partition", m.Partition, "old_stream", old.stream, "stream", stream)
		}
		b = &batch{stream: stream, anchoredUpTo: -1, last: -1}
		// Batches of it cut but not anchored yet are cut again from the
		// records read anew.
		kept := s.pending[:0]
		for _, p := range s.pending {
			if p.tp != tp {
				kept = append(kept, p)
			}
		}
		s.pending = kept
		anchors, err := s.anchors.List(ctx, stream, m.Partition, m.Offset, -1)
		if err != nil {
			return fmt.Errorf("read anchors of %s/%d: %w", stream, m.Partition, err)
		}
		for _, a := range anchors {
			b.anchoredUpTo = max(b.anchoredUpTo, a.LastOffset)
		}
		s.batches[tp] = b
	}
	if m.Offset <= b.anchoredUpTo {
		return nil // anchored before a restart; its commit was lost
	}
	if len(b.leaves) == 0 {
		b.first, b.firstTs, b.opened = m.Offset, m.Timestamp, time.Now()
	}
	b.leaves = append(b.leaves, s.hasher.Hash(m.Offset, m.Timestamp.UnixMilli(), m.Key, m.Value))
	b.last, b.lastTs = m.Offset, m.Timestamp
	if len(b.leaves) >= s.cfg.BatchRecords {
		return s.cut(ctx, tp, b)
	}
	return nil
}

// cut closes a partition's batch: its root is computed, its leaf hashes
// wait to be kept (keepLeaves), and it waits for the period's transaction.
func (s *AnchorStage) cut(ctx context.Context, tp topicPartition, b *batch) error {
	root := integrity.MerkleRoot(b.leaves)
	a := contract.Anchor{
		Stream: b.stream, Partition: int32(tp.partition), FirstOffset: b.first, LastOffset: b.last,
		Count: int64(len(b.leaves)), MerkleRoot: hex.EncodeToString(root[:]),
		FirstTimestamp: b.firstTs.UTC(), LastTimestamp: b.lastTs.UTC(),
	}
	if a.LastTimestamp.Before(a.FirstTimestamp) {
		a.LastTimestamp = a.FirstTimestamp // producer clocks may step back
	}
	a.ID = contract.AnchorID(a.Stream, a.Partition, a.FirstOffset, a.LastOffset)
	s.unkept = append(s.unkept, integrity.AnchorLeaves{AnchorID: a.ID, Leaves: slices.Clone(b.leaves)})
	if len(s.pending) == 0 {
		s.pendingSince = time.Now()
	}
	s.pending = append(s.pending, pendingBatch{tp: tp, anchor: a, cut: b.opened})
	b.leaves = b.leaves[:0]
	return nil
}

// anchorPending seals the pending batches: their descriptors go to the
// batch index (acknowledged first, so that a seal on the ledger always has
// them), then the seal's root to the ledger in one transaction, retried
// until it is accepted; then their offsets are committed. A seal whose
// transaction never commits leaves an index record no reader believes,
// and its records are anchored again.
func (s *AnchorStage) anchorPending(ctx context.Context) error {
	anchors := make([]contract.Anchor, len(s.pending))
	for i, p := range s.pending {
		anchors[i] = p.anchor
	}
	seal, err := integrity.NewSeal(time.Now(), anchors)
	if err != nil {
		return err
	}
	if err := s.retry(ctx, "keeping the batch index", func() error { return s.leaves.PutSeal(ctx, seal.ID, anchors) }); err != nil {
		return err
	}
	err = s.retry(ctx, "anchoring", func() error {
		txStart := time.Now()
		_, err := s.ledger.SealBatches(ctx, seal)
		result := "ok"
		if err != nil {
			result = "error"
		}
		s.metrics.LedgerTx.WithLabelValues(contract.FnSealBatches, result).Observe(time.Since(txStart).Seconds())
		if errors.Is(err, contract.ErrConflict) || errors.Is(err, contract.ErrInvalid) || errors.Is(err, contract.ErrForbidden) {
			return permanent{fmt.Errorf("seal %d batches from %s: %w", len(anchors), anchors[0].ID, err)}
		}
		return err
	})
	if err != nil {
		return err
	}
	commits := map[topicPartition]int64{}
	for _, p := range s.pending {
		a := p.anchor
		s.metrics.Anchors.WithLabelValues(p.tp.topic).Inc()
		s.metrics.AnchoredRecords.WithLabelValues(p.tp.topic).Add(float64(a.Count))
		s.metrics.Summary.AnchorsWritten.Add(1)
		s.metrics.StageLatency.WithLabelValues("anchor").Observe(time.Since(p.cut).Seconds())
		if b := s.batches[p.tp]; b != nil {
			b.anchoredUpTo = max(b.anchoredUpTo, a.LastOffset)
		}
		commits[p.tp] = max(commits[p.tp], a.LastOffset+1)
	}
	s.pending = s.pending[:0]
	if err := s.consumer.commit(ctx, commits); err != nil {
		// The anchors are on the ledger; a lost commit only means these
		// records are skipped again after a restart.
		s.log.Warn("offset commit failed", "partitions", len(commits), "err", err)
	}
	return nil
}

// permanent marks an error retry must not retry.
type permanent struct{ error }

func (p permanent) Unwrap() error { return p.error }

// retry runs fn until it succeeds, backing off from 100 ms to 10 s, and
// gives up on a permanent error or when ctx ends (the batches stay
// uncommitted and are anchored after a restart).
func (s *AnchorStage) retry(ctx context.Context, what string, fn func() error) error {
	backoff := 100 * time.Millisecond
	for {
		err := fn()
		if err == nil {
			return nil
		}
		var p permanent
		if errors.As(err, &p) {
			return p.error
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		s.log.Warn(what+" failed; retrying", "err", err, "retry_in", backoff)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 10*time.Second)
	}
}
