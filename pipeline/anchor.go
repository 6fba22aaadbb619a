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
	// (wall time), so quiet partitions are anchored too. Default 2s.
	BatchAge time.Duration
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
	if c.BatchAge == 0 {
		c.BatchAge = 2 * time.Second
	}
	return c
}

// AnchorStage cuts each partition of the anchored topics into contiguous
// batches, computes each batch's Merkle root and anchors it on the ledger
// before committing the batch's offsets. On restart it asks the ledger where
// each partition's anchors end and skips records already anchored, so
// batches never overlap and never leave a gap.
type AnchorStage struct {
	cfg     AnchorConfig
	ledger  *ledgerclient.Client
	metrics *Metrics
	log     *slog.Logger

	consumer *groupConsumer
	hasher   leafHasher
	// leaves keeps each batch's leaf hashes before its root is anchored.
	leaves *LeafTopic
	// owned is the set of partitions assigned to this instance, read by
	// the audit from its own goroutine.
	ownedMu sync.Mutex
	owned   map[topicPartition]bool
	batches map[topicPartition]*batch
	stageRun
}

type topicPartition struct {
	topic     string
	partition int
}

type batch struct {
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
	return &AnchorStage{cfg: cfg, ledger: ledger, metrics: metrics, log: log.With("stage", "anchor"),
		leaves:  NewLeafTopic(cfg.Kafka, topics.WithDefaults().Leaves),
		batches: map[topicPartition]*batch{}, owned: map[topicPartition]bool{}, stageRun: stageRun{name: "anchoring", log: log}}
}

// Start joins the group and anchors until ctx ends. The leaf topic is
// created (one partition, compacted) if the service has not created it.
func (s *AnchorStage) Start(ctx context.Context) error {
	if err := EnsureStateTopic(ctx, s.cfg.Kafka, 1, s.leaves.topic); err != nil {
		return err
	}
	var err error
	// The client is created under the stage's profiler label so that its
	// fetch goroutines are counted as the stage's CPU.
	s.start(ctx, func(ctx context.Context) {
		// Batches are cut by count or age, not latency: the broker may hold
		// a fetch until a megabyte is ready, and records are recycled once
		// hashed.
		s.consumer, err = newGroupConsumer(consumerConfig{cluster: s.cfg.Kafka, group: s.cfg.GroupID, topics: s.cfg.Topics,
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
	for it := fetches.RecordIter(); !it.Done(); {
		r := it.Next()
		err := s.add(ctx, r)
		r.Recycle()
		if err != nil {
			return err
		}
	}
	for tp, b := range s.batches {
		if len(b.leaves) > 0 && time.Since(b.opened) >= s.cfg.BatchAge {
			if err := s.anchor(ctx, tp, b); err != nil {
				return err
			}
		}
	}
	return nil
}

func (s *AnchorStage) add(ctx context.Context, m *kgo.Record) error {
	tp := topicPartition{m.Topic, int(m.Partition)}
	b := s.batches[tp]
	if b == nil || m.Offset <= b.last {
		// First sight of this partition, or a rewind after a rebalance:
		// ask the ledger how far it is anchored.
		b = &batch{anchoredUpTo: -1, last: -1}
		anchors, err := s.ledger.ListAnchors(ctx, m.Topic, m.Partition, m.Offset, -1)
		if err != nil {
			return fmt.Errorf("read anchors of %s/%d: %w", m.Topic, m.Partition, err)
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
	b.leaves = append(b.leaves, s.hasher.hash(m.Offset, m.Timestamp.UnixMilli(), m.Key, m.Value))
	b.last, b.lastTs = m.Offset, m.Timestamp
	if len(b.leaves) >= s.cfg.BatchRecords {
		return s.anchor(ctx, tp, b)
	}
	return nil
}

// anchor writes the batch's root on the ledger, retrying until it is
// accepted, then commits its offsets.
func (s *AnchorStage) anchor(ctx context.Context, tp topicPartition, b *batch) error {
	started := time.Now()
	root := MerkleRoot(b.leaves)
	a := contract.Anchor{
		Stream: tp.topic, Partition: int32(tp.partition), FirstOffset: b.first, LastOffset: b.last,
		Count: int64(len(b.leaves)), MerkleRoot: hex.EncodeToString(root[:]),
		FirstTimestamp: b.firstTs.UTC(), LastTimestamp: b.lastTs.UTC(),
	}
	if a.LastTimestamp.Before(a.FirstTimestamp) {
		a.LastTimestamp = a.FirstTimestamp // producer clocks may step back
	}
	backoff := 100 * time.Millisecond
	// The leaf hashes first: an anchor on the ledger always has them kept,
	// so retention cutting through its range never leaves its surviving
	// records unprovable.
	id := contract.AnchorID(a.Stream, a.Partition, a.FirstOffset, a.LastOffset)
	for {
		err := s.leaves.Put(ctx, id, b.leaves)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		s.log.Warn("keeping leaf hashes failed; retrying", "err", err, "retry_in", backoff)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 10*time.Second)
	}
	backoff = 100 * time.Millisecond
	for {
		txStart := time.Now()
		_, err := s.ledger.AnchorBatch(ctx, a)
		result := "ok"
		if err != nil {
			result = "error"
		}
		s.metrics.LedgerTx.WithLabelValues(contract.FnAnchorBatch, result).Observe(time.Since(txStart).Seconds())
		if err == nil {
			break
		}
		if errors.Is(err, contract.ErrConflict) || errors.Is(err, contract.ErrInvalid) || errors.Is(err, contract.ErrForbidden) {
			return fmt.Errorf("anchor %s: %w", id, err)
		}
		if ctx.Err() != nil {
			return ctx.Err() // shutting down: the batch stays uncommitted and is anchored after restart
		}
		s.log.Warn("anchoring failed; retrying", "err", err, "retry_in", backoff)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 10*time.Second)
	}
	s.metrics.Anchors.WithLabelValues(tp.topic).Inc()
	s.metrics.AnchoredRecords.WithLabelValues(tp.topic).Add(float64(len(b.leaves)))
	s.metrics.Summary.AnchorsWritten.Add(1)
	s.metrics.StageLatency.WithLabelValues("anchor").Observe(time.Since(started).Seconds())
	b.anchoredUpTo = b.last
	b.leaves = b.leaves[:0]
	if err := s.consumer.commit(ctx, map[topicPartition]int64{tp: b.last + 1}); err != nil {
		// The anchor is on the ledger; a lost commit only means these
		// records are skipped again after a restart.
		s.log.Warn("offset commit failed", "topic", tp.topic, "partition", tp.partition, "err", err)
	}
	return nil
}
