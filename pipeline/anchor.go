package pipeline

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/chainwatch/chainwatch/ledgerclient"
	"github.com/chainwatch/chainwatch/ledgerclient/contract"
)

// AnchorConfig configures the anchoring stage. Zero values are defaults.
type AnchorConfig struct {
	Brokers []string
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

	reader  *kafka.Reader
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
	return &AnchorStage{cfg: cfg.withDefaults(topics), ledger: ledger, metrics: metrics, log: log.With("stage", "anchor"),
		batches: map[topicPartition]*batch{}, stageRun: stageRun{name: "anchoring", log: log}}
}

// Start joins the group and anchors until ctx ends.
func (s *AnchorStage) Start(ctx context.Context) error {
	s.start(ctx, func(ctx context.Context) {
		s.reader = kafka.NewReader(kafka.ReaderConfig{
			Brokers: s.cfg.Brokers, GroupID: s.cfg.GroupID, GroupTopics: s.cfg.Topics,
			MinBytes: 1, MaxBytes: 8 << 20, MaxWait: 250 * time.Millisecond,
			StartOffset: kafka.FirstOffset, CommitInterval: 0,
		})
		msgs := make(chan kafka.Message, 1024)
		fetchErr := make(chan error, 1)
		go func() {
			for {
				m, err := s.reader.FetchMessage(ctx)
				if err != nil {
					fetchErr <- err
					return
				}
				select {
				case msgs <- m:
				case <-ctx.Done():
					fetchErr <- ctx.Err()
					return
				}
			}
		}()
		s.launch(ctx, func(ctx context.Context) error { return s.loop(ctx, msgs, fetchErr) })
	})
	return nil
}

// Shutdown waits for the stage to stop and leaves the group. Records of a
// batch not yet anchored stay uncommitted and are anchored after restart.
func (s *AnchorStage) Shutdown(ctx context.Context) error {
	if err := s.wait(ctx); err != nil {
		return err
	}
	return s.reader.Close()
}

func (s *AnchorStage) loop(ctx context.Context, msgs <-chan kafka.Message, fetchErr <-chan error) error {
	tick := time.NewTicker(max(s.cfg.BatchAge/4, 10*time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case err := <-fetchErr:
			return err
		case m := <-msgs:
			if err := s.add(ctx, m); err != nil {
				return err
			}
		case <-tick.C:
			for tp, b := range s.batches {
				if len(b.leaves) > 0 && time.Since(b.opened) >= s.cfg.BatchAge {
					if err := s.anchor(ctx, tp, b); err != nil {
						return err
					}
				}
			}
		}
	}
}

func (s *AnchorStage) add(ctx context.Context, m kafka.Message) error {
	tp := topicPartition{m.Topic, m.Partition}
	b := s.batches[tp]
	if b == nil || m.Offset <= b.last {
		// First sight of this partition, or a rewind after a rebalance:
		// ask the ledger how far it is anchored.
		b = &batch{anchoredUpTo: -1, last: -1}
		anchors, err := s.ledger.ListAnchors(ctx, m.Topic, int32(m.Partition), m.Offset, -1)
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
		b.first, b.firstTs, b.opened = m.Offset, m.Time, time.Now()
	}
	b.leaves = append(b.leaves, LeafHash(m.Offset, m.Time.UnixMilli(), m.Key, m.Value))
	b.last, b.lastTs = m.Offset, m.Time
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
			return fmt.Errorf("anchor %s: %w", contract.AnchorID(a.Stream, a.Partition, a.FirstOffset, a.LastOffset), err)
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
	if err := s.reader.CommitMessages(ctx, kafka.Message{Topic: tp.topic, Partition: tp.partition, Offset: b.last}); err != nil {
		// The anchor is on the ledger; a lost commit only means these
		// records are skipped again after a restart.
		s.log.Warn("offset commit failed", "topic", tp.topic, "partition", tp.partition, "err", err)
	}
	return nil
}
