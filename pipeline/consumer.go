package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/chainwatch/chainwatch/pipeline/kafkaconn"
)

// groupConsumer is a consumer-group member that hands over records a fetch
// at a time. The stages consume through it rather than through kafka-go's
// Reader because the Reader passes every message through a channel to the
// caller: at a few hundred thousand records per second that hand-over cost
// more CPU than decoding the records (profiled: half of the anchoring
// stage's CPU). franz-go's client decodes whole record batches and returns
// them in one slice.
//
// Rebalances happen only between polls (BlockRebalanceOnPoll): a stage
// processes what poll returned, then calls release, and only then can
// partitions be revoked, so the revoke hook always sees a stage at rest
// and can commit exactly what was processed.
//
// A topic deleted and created again under the same name (a new KIP-516
// topic id) is a new log: franz-go never adopts the new id and stalls the
// old one with UNKNOWN_TOPIC_ID (franz-go issue #908). The consumer
// notices — a fetch failing so, or the id it checks every idCheck having
// changed — and starts over with a new client: the stage's revoke hook
// runs as for lost partitions (nothing of the old log is committed onto
// the new one), the new client joins the group, and the assign hook runs
// for the new topic's partitions.
type groupConsumer struct {
	client *kgo.Client
	// mu serialises the stage's processing with the rebalance hooks, which
	// franz-go runs on its own goroutine.
	mu sync.Mutex

	opts    []kgo.Opt
	topics  []string
	cluster *kafkaconn.Cluster
	log     *slog.Logger
	// ids are the topics' ids this client consumes; checked every idCheck.
	ids       map[string]kadm.TopicID
	idCheck   time.Duration
	lastCheck time.Time
	// stale is set once a consumed topic is found created again; the next
	// poll renews the client.
	stale bool
	// renewing is set while the old client leaves: its revoke hook then
	// reports the partitions lost.
	renewing atomic.Bool
}

// groupHooks are a stage's reactions to partitions changing hands. Both
// run with the stage at rest, holding the consumer's lock.
type groupHooks struct {
	// assigned is called before records of newly assigned partitions are
	// returned by poll.
	assigned func(ctx context.Context, parts []topicPartition)
	// revoked is called before partitions leave this member, cleanly
	// (rebalance, shutdown) or not (lost: commits will likely fail); the
	// stage commits what it fully processed and drops their state.
	revoked func(ctx context.Context, parts []topicPartition, lost bool)
}

type consumerConfig struct {
	cluster *kafkaconn.Cluster
	group   string
	topics  []string
	// maxWait bounds how long the broker holds a fetch for new records.
	maxWait time.Duration
	// minBytes lets the broker hold a fetch until this much is ready (up
	// to maxWait): fewer, larger fetches for a stage that is not latency
	// bound. Default 1 byte.
	minBytes int32
	// recycle pools the fetched records' memory; the stage then calls
	// Recycle on every record once done with it.
	recycle bool
	// idCheck is how often the topics' ids are compared with those the
	// client consumes (a topic deleted and created again). Default 10s.
	idCheck time.Duration
	log     *slog.Logger
}

func newGroupConsumer(cfg consumerConfig, hooks groupHooks) (*groupConsumer, error) {
	c := &groupConsumer{topics: cfg.topics, cluster: cfg.cluster, log: cfg.log, idCheck: cfg.idCheck}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	if c.idCheck == 0 {
		c.idCheck = 10 * time.Second
	}
	call := func(ctx context.Context, m map[string][]int32, fn func([]topicPartition)) {
		var parts []topicPartition
		for topic, ps := range m {
			for _, p := range ps {
				parts = append(parts, topicPartition{topic, int(p)})
			}
		}
		if len(parts) == 0 {
			return
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		fn(parts)
	}
	maxWait := cfg.maxWait
	if maxWait == 0 {
		maxWait = 250 * time.Millisecond
	}
	opts := append(cfg.cluster.ClientOpts(),
		kgo.ConsumerGroup(cfg.group),
		kgo.ConsumeTopics(cfg.topics...),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.DisableAutoCommit(),
		kgo.BlockRebalanceOnPoll(),
		kgo.FetchMaxWait(maxWait),
		kgo.FetchMaxBytes(16<<20),
		kgo.FetchMaxPartitionBytes(4<<20),
	)
	if cfg.minBytes > 0 {
		opts = append(opts, kgo.FetchMinBytes(cfg.minBytes))
	}
	if cfg.recycle {
		opts = append(opts, kgo.WithPools(&recordPool{}))
	}
	if hooks.assigned != nil {
		opts = append(opts, kgo.OnPartitionsAssigned(func(ctx context.Context, _ *kgo.Client, m map[string][]int32) {
			call(ctx, m, func(p []topicPartition) { hooks.assigned(ctx, p) })
		}))
	}
	if hooks.revoked != nil {
		opts = append(opts,
			kgo.OnPartitionsRevoked(func(ctx context.Context, _ *kgo.Client, m map[string][]int32) {
				call(ctx, m, func(p []topicPartition) { hooks.revoked(ctx, p, c.renewing.Load()) })
			}),
			kgo.OnPartitionsLost(func(ctx context.Context, _ *kgo.Client, m map[string][]int32) {
				call(ctx, m, func(p []topicPartition) { hooks.revoked(ctx, p, true) })
			}))
	}
	client, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("kafka consumer for group %s: %w", cfg.group, err)
	}
	c.client, c.opts = client, opts
	return c, nil
}

// errTopicRecreated marks a poll that found a consumed topic deleted and
// created again.
var errTopicRecreated = errors.New("topic deleted and created again")

// recreated reports whether a consumed topic now has another id than the
// one this client consumes. The first answer only records the ids.
func (c *groupConsumer) recreated(ctx context.Context) bool {
	if c.stale {
		return true
	}
	c.lastCheck = time.Now()
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	details, err := kadm.NewClient(c.client).ListTopics(cctx, c.topics...)
	if err != nil {
		return false // the broker is away; asked again later
	}
	changed := false
	for _, d := range details {
		if d.Err != nil {
			continue // deleted and not there yet: the new one is awaited
		}
		if old, ok := c.ids[d.Topic]; ok && old != d.ID {
			c.log.Warn("topic was deleted and created again: consuming the new one from its start", "topic", d.Topic,
				"old_id", old.String(), "id", d.ID.String())
			changed, c.stale = true, true
			continue
		}
		if c.ids == nil {
			c.ids = map[string]kadm.TopicID{}
		}
		c.ids[d.Topic] = d.ID
	}
	return changed
}

// renew replaces the client by a new one, which sees the topics' new ids:
// the old one leaves the group (the stage's revoke hook runs, the
// partitions reported lost: nothing of the old topic is committed), the
// new one joins. The consumer is not locked.
func (c *groupConsumer) renew() error {
	c.renewing.Store(true)
	c.client.CloseAllowingRebalance()
	c.renewing.Store(false)
	client, err := kgo.NewClient(c.opts...)
	if err != nil {
		return fmt.Errorf("kafka consumer after a topic was created again: %w", err)
	}
	c.client, c.ids, c.stale = client, nil, false
	return nil
}

// errPollIdle is returned by poll when no record arrived within its wait.
var errPollIdle = errors.New("no records")

// poll waits up to wait for records and returns them with the consumer
// locked; the caller processes them and then calls release, also after
// errPollIdle. On any other error the consumer is not locked.
func (c *groupConsumer) poll(ctx context.Context, wait time.Duration) (kgo.Fetches, error) {
	if (c.stale || time.Since(c.lastCheck) >= c.idCheck) && c.recreated(ctx) {
		if err := c.renew(); err != nil {
			return nil, err
		}
		c.recreated(ctx) // the new ids
		c.mu.Lock()
		return nil, errPollIdle
	}
	pctx, cancel := context.WithTimeout(ctx, wait)
	fetches := c.client.PollFetches(pctx)
	cancel()
	if fetches.IsClientClosed() {
		return nil, context.Canceled
	}
	var fatal error
	fetches.EachError(func(topic string, partition int32, err error) {
		switch {
		case errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil:
		case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
			fatal = ctx.Err()
		case errors.Is(err, kerr.UnknownTopicID):
			// The topic may have been created again: look at once.
			c.lastCheck = time.Time{}
		default:
			// Fetch errors of a partition are retried by the client; they
			// are only surfaced so that callers can log them.
			if fatal == nil && !kerr.IsRetriable(err) {
				fatal = fmt.Errorf("fetch %s/%d: %w", topic, partition, err)
			}
		}
	})
	if fatal != nil {
		c.client.AllowRebalance()
		return nil, fatal
	}
	c.mu.Lock()
	if fetches.Empty() {
		return nil, errPollIdle
	}
	return fetches, nil
}

// release ends the processing of a poll's records and lets a pending
// rebalance proceed.
func (c *groupConsumer) release() {
	c.mu.Unlock()
	c.client.AllowRebalance()
}

// commit commits, per partition, the offset of the next record to read:
// the newest fully processed offset plus one.
func (c *groupConsumer) commit(ctx context.Context, next map[topicPartition]int64) error {
	if len(next) == 0 {
		return nil
	}
	// Offsets of a topic since deleted must not land on its successor,
	// which the broker knows by the same name.
	if c.recreated(ctx) {
		return errTopicRecreated // the next poll renews the client
	}
	offsets := map[string]map[int32]kgo.EpochOffset{}
	for tp, off := range next {
		if offsets[tp.topic] == nil {
			offsets[tp.topic] = map[int32]kgo.EpochOffset{}
		}
		offsets[tp.topic][int32(tp.partition)] = kgo.EpochOffset{Epoch: -1, Offset: off}
	}
	var commitErr error
	c.client.CommitOffsetsSync(ctx, offsets, func(_ *kgo.Client, _ *kmsg.OffsetCommitRequest, resp *kmsg.OffsetCommitResponse, err error) {
		if err != nil {
			commitErr = err
			return
		}
		for _, t := range resp.Topics {
			for _, p := range t.Partitions {
				if e := kerr.ErrorForCode(p.ErrorCode); e != nil && commitErr == nil {
					commitErr = fmt.Errorf("commit %s/%d: %w", t.Topic, p.Partition, e)
				}
			}
		}
	})
	return commitErr
}

// close leaves the group; the revoke hook runs for the partitions held.
func (c *groupConsumer) close() {
	c.client.CloseAllowingRebalance()
}

// asMessage views a fetched record as the kafka-go message the decoders,
// the dead-letter queue and the evidence builders take. Key, value and
// header values are shared, not copied.
func asMessage(r *kgo.Record) kafka.Message {
	m := kafka.Message{Topic: r.Topic, Partition: int(r.Partition), Offset: r.Offset, Key: r.Key, Value: r.Value, Time: r.Timestamp}
	if len(r.Headers) > 0 {
		m.Headers = make([]kafka.Header, len(r.Headers))
		for i, h := range r.Headers {
			m.Headers[i] = kafka.Header{Key: h.Key, Value: h.Value}
		}
	}
	return m
}

// recordPool recycles the slices franz-go decodes fetched records into
// (kgo.PoolRecords), so a stage that hashes records and lets them go does
// not allocate per record.
type recordPool struct{ pool sync.Pool }

func (p *recordPool) GetRecords(n int) []kgo.Record {
	if s, ok := p.pool.Get().(*[]kgo.Record); ok && cap(*s) >= n {
		return (*s)[:n]
	}
	return make([]kgo.Record, n, max(n, 1024))
}

func (p *recordPool) PutRecords(s []kgo.Record) { p.pool.Put(&s) }
