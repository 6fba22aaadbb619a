package sinks

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime/pprof"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"
	bolt "go.etcd.io/bbolt"

	"github.com/chainwatch/chainwatch/ledgerclient/contract"
	"github.com/chainwatch/chainwatch/pipeline/kafkaconn"
)

// Outbox is the durable queue between the stages and the alert sinks.
// A stage hands its alerts to Add, which stores each new alert id once and
// fsyncs before returning — only then does the stage commit its Kafka
// offsets. Every sink then has a queue of its own over that store, in the
// manner of Prometheus's notifier and remote-write queues: its own
// goroutine takes the alerts it has not accepted yet, in the order they
// were added (so one device's alerts stay in order), retries with
// exponential backoff and jitter, and moves an alert the sink refuses for
// good (Permanent) to the sink's dead-letter file with the reason. A sink
// that is down holds back no other, except the first sink — the ledger —
// whose transaction id the others carry: they deliver only what it has
// recorded.
//
// The queues are bounded: when a sink has Capacity alerts waiting, Add
// logs it once, counts it, and blocks the stage until the sink drains —
// backpressure rather than a silent drop. An alert raised again (a replay
// after a crash) is known by its id and not delivered twice; a restart
// resumes every queue where it stopped.
type Outbox struct {
	db      *bolt.DB
	sinks   []Sink
	cfg     OutboxConfig
	metrics *Metrics
	log     *slog.Logger
	wake    map[string]chan struct{}
	done    chan struct{}

	mu sync.Mutex
	// stored is how many entries the file holds (chainwatch_outbox_depth).
	stored int
	// cursor is, per sink, the key from which its next batch is read.
	cursor map[string][]byte
	depth  map[string]int // alerts waiting per sink: counted at open, then kept by Add and markDelivered
	space  *sync.Cond     // signalled when a queue shrinks
	full   map[string]bool
}

// OutboxConfig configures the outbox. Zero values are defaults.
type OutboxConfig struct {
	// Path of the outbox file. Required.
	Path string
	// Capacity is how many alerts a sink's queue holds before Add blocks.
	// Default 10000.
	Capacity int
	// MaxBackoff caps the wait between retries of a failing sink.
	// Default 30s.
	MaxBackoff time.Duration
	// DeadLetterDir holds <sink>.dead.jsonl, one line per alert a sink
	// refused for good. Default: the outbox file's directory.
	DeadLetterDir string
	// OnAdded is called once per alert the first time it is added (for
	// the alert counters).
	OnAdded func(contract.Alert)
}

func (c OutboxConfig) withDefaults() OutboxConfig {
	if c.Capacity <= 0 {
		c.Capacity = 10000
	}
	if c.MaxBackoff <= 0 {
		c.MaxBackoff = 30 * time.Second
	}
	if c.DeadLetterDir == "" {
		c.DeadLetterDir = filepath.Dir(c.Path)
	}
	return c
}

var (
	bucketOutbox    = []byte("outbox")     // seq → outboxEntry
	bucketOutboxIDs = []byte("outbox-ids") // alert id → seq
)

type outboxEntry struct {
	Alert     contract.Alert  `json:"alert"`
	Delivered map[string]bool `json:"delivered"` // sink name → accepted or dead-lettered
}

// OpenOutbox opens (or creates) the outbox file. The first sink is the
// one every other waits for (the ledger).
func OpenOutbox(cfg OutboxConfig, sinks []Sink, metrics *Metrics, log *slog.Logger) (*Outbox, error) {
	cfg = cfg.withDefaults()
	if len(sinks) == 0 {
		return nil, errors.New("outbox: no sinks")
	}
	names := map[string]bool{}
	for _, s := range sinks {
		if names[s.Name()] {
			return nil, fmt.Errorf("outbox: two sinks named %q", s.Name())
		}
		names[s.Name()] = true
	}
	if err := os.MkdirAll(cfg.DeadLetterDir, 0o700); err != nil {
		return nil, fmt.Errorf("outbox dead letters: %w", err)
	}
	db, err := bolt.Open(cfg.Path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		return nil, fmt.Errorf("outbox %s: %w", cfg.Path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketOutbox, bucketOutboxIDs} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("outbox %s: %w", cfg.Path, err)
	}
	o := &Outbox{db: db, sinks: sinks, cfg: cfg, metrics: metrics, log: log.With("component", "outbox"),
		wake: map[string]chan struct{}{}, done: make(chan struct{}), depth: map[string]int{}, full: map[string]bool{}, cursor: map[string][]byte{}}
	o.space = sync.NewCond(&o.mu)
	for _, s := range sinks {
		o.wake[s.Name()] = make(chan struct{}, 1)
		// Every sink's series exist from the start, at 0, for dashboards
		// and rules (rate() of a counter that appears late misses its
		// first increase).
		for _, c := range []*prometheus.CounterVec{metrics.Delivered, metrics.Retries, metrics.DeadLettered, metrics.QueueFull} {
			c.WithLabelValues(s.Name())
		}
		metrics.Latency.WithLabelValues(s.Name())
	}
	if err := o.recount(); err != nil {
		db.Close()
		return nil, err
	}
	return o, nil
}

// Add stores the alerts whose ids the outbox has not seen and returns
// them; it returns once they are on disk. Alerts it already knew (a
// replay) are not counted again. When a sink's queue is full it blocks
// until there is room or ctx ends.
func (o *Outbox) Add(ctx context.Context, alerts []contract.Alert) ([]contract.Alert, error) {
	if err := o.waitForRoom(ctx); err != nil {
		return nil, err
	}
	var added []contract.Alert
	err := o.db.Update(func(tx *bolt.Tx) error {
		entries, ids := tx.Bucket(bucketOutbox), tx.Bucket(bucketOutboxIDs)
		for _, a := range alerts {
			if ids.Get([]byte(a.ID)) != nil {
				continue
			}
			seq, err := entries.NextSequence()
			if err != nil {
				return err
			}
			key := seqKey(seq)
			raw, err := json.Marshal(outboxEntry{Alert: a, Delivered: map[string]bool{}})
			if err != nil {
				return err
			}
			if err := entries.Put(key, raw); err != nil {
				return err
			}
			if err := ids.Put([]byte(a.ID), key); err != nil {
				return err
			}
			added = append(added, a)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("outbox: %w", err)
	}
	if len(added) == 0 {
		return nil, nil
	}
	if o.cfg.OnAdded != nil {
		for _, a := range added {
			o.cfg.OnAdded(a)
		}
	}
	o.mu.Lock()
	o.stored += len(added)
	o.metrics.OutboxDepth.Set(float64(o.stored))
	for _, s := range o.sinks {
		o.depth[s.Name()] += len(added)
		o.metrics.QueueDepth.WithLabelValues(s.Name()).Set(float64(o.depth[s.Name()]))
	}
	o.mu.Unlock()
	o.poke(o.sinks[0].Name())
	return added, nil
}

// waitForRoom blocks while some sink's queue is at capacity.
func (o *Outbox) waitForRoom(ctx context.Context) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	stop := context.AfterFunc(ctx, func() {
		o.mu.Lock()
		o.space.Broadcast()
		o.mu.Unlock()
	})
	defer stop()
	for {
		blocked := ""
		for _, s := range o.sinks {
			if o.depth[s.Name()] >= o.cfg.Capacity {
				blocked = s.Name()
				break
			}
		}
		if blocked == "" {
			return nil
		}
		if !o.full[blocked] {
			o.full[blocked] = true
			o.metrics.QueueFull.WithLabelValues(blocked).Inc()
			o.log.Error("alert queue full: holding the pipeline until the sink accepts alerts again", "sink", blocked, "capacity", o.cfg.Capacity)
		}
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("outbox: queue of %s full: %w", blocked, err)
		}
		o.space.Wait()
	}
}

func (o *Outbox) poke(sink string) {
	select {
	case o.wake[sink] <- struct{}{}:
	default:
	}
}

// Run delivers queued alerts, one goroutine per sink, until ctx ends.
func (o *Outbox) Run(ctx context.Context) {
	defer close(o.done)
	var wg sync.WaitGroup
	for i := range o.sinks {
		// Labelled for CPU profiles: a flame graph splits by sink.
		wg.Go(func() {
			pprof.Do(ctx, pprof.Labels("stage", "sink:"+o.sinks[i].Name()), func(ctx context.Context) { o.runQueue(ctx, i) })
		})
	}
	wg.Wait()
}

// Wait blocks until Run has returned.
func (o *Outbox) Wait() { <-o.done }

// Close closes the outbox file (after Run has returned).
func (o *Outbox) Close() error { return o.db.Close() }

// Depth is how many alerts wait for sink.
func (o *Outbox) Depth(sink string) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.depth[sink]
}

func (o *Outbox) runQueue(ctx context.Context, i int) {
	s := o.sinks[i]
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		if err := o.deliverPending(ctx, i); err != nil && ctx.Err() == nil {
			o.log.Warn("alert delivery interrupted", "sink", s.Name(), "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-o.wake[s.Name()]:
		case <-tick.C:
		}
	}
}

const outboxBatch = 256

// deliverPending hands sink i every alert it has not accepted, in order,
// in batches of up to BatchSize (Batcher) or outboxBatch.
func (o *Outbox) deliverPending(ctx context.Context, i int) error {
	s := o.sinks[i]
	limit := outboxBatch
	if b, ok := s.(Batcher); ok {
		limit = max(b.BatchSize(), 1)
	}
	for {
		seqs, batch, err := o.pending(s.Name(), i == 0, limit)
		if err != nil || len(batch) == 0 {
			return err
		}
		alerts := make([]contract.Alert, len(batch))
		for k := range batch {
			alerts[k] = batch[k].Alert
		}
		refused, err := o.deliverWithRetry(ctx, s, alerts)
		if err != nil {
			return err
		}
		for k, reason := range refused {
			o.deadLetter(s.Name(), alerts[k], reason)
		}
		if err := o.markDelivered(s.Name(), i == 0, seqs, alerts); err != nil {
			return err
		}
		if i == 0 {
			for _, other := range o.sinks[1:] {
				o.poke(other.Name())
			}
		}
	}
}

// deliverWithRetry delivers alerts to s, retrying transient failures with
// capped exponential backoff and jitter until s accepts or ctx ends. A
// batch s refuses for good is retried alert by alert, so that only the
// alerts s refuses are dead-lettered; their reasons are returned by index.
func (o *Outbox) deliverWithRetry(ctx context.Context, s Sink, alerts []contract.Alert) (map[int]string, error) {
	refused := map[int]string{}
	backoff := 100 * time.Millisecond
	for {
		start := time.Now()
		err := s.Deliver(ctx, alerts)
		if err == nil {
			o.metrics.Latency.WithLabelValues(s.Name()).Observe(time.Since(start).Seconds())
			o.metrics.Delivered.WithLabelValues(s.Name()).Add(float64(len(alerts)))
			return refused, nil
		}
		var perm *PermanentError
		if errors.As(err, &perm) {
			if len(alerts) == 1 {
				refused[0] = err.Error()
				return refused, nil
			}
			for k := range alerts {
				one, err := o.deliverWithRetry(ctx, s, alerts[k:k+1])
				if err != nil {
					return nil, err
				}
				if reason, ok := one[0]; ok {
					refused[k] = reason
				}
			}
			return refused, nil
		}
		o.metrics.Retries.WithLabelValues(s.Name()).Inc()
		// Equal jitter: half the backoff fixed, half random, so that many
		// instances retrying one receiver spread out (AWS Architecture
		// Blog, "Exponential Backoff And Jitter", 2015).
		wait := backoff/2 + rand.N(backoff/2+1)
		o.log.Warn("alert sink failed; retrying", "sink", s.Name(), "alerts", len(alerts), "err", err, "retry_in", wait.Round(time.Millisecond))
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("deliver to %s: %w", s.Name(), ctx.Err())
		case <-time.After(wait):
		}
		backoff = min(2*backoff, o.cfg.MaxBackoff)
	}
}

// deadLetter appends a refused alert and the reason to the sink's
// dead-letter file.
func (o *Outbox) deadLetter(sink string, a contract.Alert, reason string) {
	o.metrics.DeadLettered.WithLabelValues(sink).Inc()
	path := filepath.Join(o.cfg.DeadLetterDir, sink+".dead.jsonl")
	o.log.Error("alert sink refused an alert for good; written to its dead-letter file", "sink", sink, "alert", a.ID, "reason", reason, "file", path)
	line, err := json.Marshal(struct {
		Sink   string         `json:"sink"`
		Reason string         `json:"reason"`
		At     time.Time      `json:"at"`
		Alert  contract.Alert `json:"alert"`
	}{sink, reason, time.Now().UTC(), a})
	if err == nil {
		err = appendSync(path, append(line, '\n'))
	}
	if err != nil {
		o.log.Error("dead-letter file not written", "sink", sink, "alert", a.ID, "err", err)
	}
}

func appendSync(path string, line []byte) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(line); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// pending returns up to limit alerts sink has not accepted, in order. A
// sink other than the first takes only alerts the first has accepted,
// and stops at the first it has not (to keep the order). Each sink reads
// on from just after the last alert it took (its cursor), so a sink that
// is down, holding thousands of alerts in the file, costs the others
// nothing per batch.
func (o *Outbox) pending(sink string, first bool, limit int) ([][]byte, []outboxEntry, error) {
	var seqs [][]byte
	var batch []outboxEntry
	primary := o.sinks[0].Name()
	o.mu.Lock()
	from := o.cursor[sink]
	o.mu.Unlock()
	err := o.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketOutbox).Cursor()
		k, v := c.First()
		if from != nil {
			k, v = c.Seek(from)
		}
		for ; k != nil && len(batch) < limit; k, v = c.Next() {
			var e outboxEntry
			if err := json.Unmarshal(v, &e); err != nil {
				return fmt.Errorf("outbox entry %x: %w", k, err)
			}
			if e.Delivered[sink] {
				continue
			}
			if !first && !e.Delivered[primary] {
				break
			}
			seqs = append(seqs, append([]byte(nil), k...))
			batch = append(batch, e)
		}
		return nil
	})
	return seqs, batch, err
}

func (o *Outbox) setDepth(sink string, n int) {
	o.mu.Lock()
	o.depth[sink] = n
	if n < o.cfg.Capacity && o.full[sink] {
		o.full[sink] = false
		o.log.Info("alert queue has room again", "sink", sink, "waiting", n)
	}
	o.space.Broadcast()
	o.mu.Unlock()
	o.metrics.QueueDepth.WithLabelValues(sink).Set(float64(n))
}

// recount sets every queue's depth from the file.
func (o *Outbox) recount() error {
	counts := map[string]int{}
	total := 0
	err := o.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketOutbox).ForEach(func(k, v []byte) error {
			var e outboxEntry
			if err := json.Unmarshal(v, &e); err != nil {
				return fmt.Errorf("outbox entry %x: %w", k, err)
			}
			total++
			for _, s := range o.sinks {
				if !e.Delivered[s.Name()] {
					counts[s.Name()]++
				}
			}
			return nil
		})
	})
	if err != nil {
		return err
	}
	for _, s := range o.sinks {
		o.setDepth(s.Name(), counts[s.Name()])
	}
	o.mu.Lock()
	o.stored = total
	o.mu.Unlock()
	o.metrics.OutboxDepth.Set(float64(total))
	return nil
}

// markDelivered records that sink accepted the alerts at seqs; the first
// sink's copy of each alert (with the ledger's transaction id and time)
// replaces the stored one.
func (o *Outbox) markDelivered(sink string, first bool, seqs [][]byte, alerts []contract.Alert) error {
	removed := 0
	err := o.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketOutbox)
		for i, k := range seqs {
			raw := b.Get(k)
			if raw == nil {
				continue // every sink had it already
			}
			var e outboxEntry
			if err := json.Unmarshal(raw, &e); err != nil {
				return fmt.Errorf("outbox entry %x: %w", k, err)
			}
			if e.Delivered == nil {
				e.Delivered = map[string]bool{}
			}
			e.Delivered[sink] = true
			if first {
				e.Alert = alerts[i]
			}
			// Every sink has it: the entry goes, in the same write; its
			// id stays, so a replay of the same records never delivers it
			// again.
			all := true
			for _, s := range o.sinks {
				all = all && e.Delivered[s.Name()]
			}
			if all {
				if err := b.Delete(k); err != nil {
					return err
				}
				removed++
				continue
			}
			raw, err := json.Marshal(e)
			if err != nil {
				return err
			}
			if err := b.Put(k, raw); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	o.mu.Lock()
	if len(seqs) > 0 {
		o.cursor[sink] = binary.BigEndian.AppendUint64(nil, binary.BigEndian.Uint64(seqs[len(seqs)-1])+1)
	}
	n := max(o.depth[sink]-len(seqs), 0)
	o.stored -= removed
	stored := o.stored
	o.mu.Unlock()
	o.metrics.OutboxDepth.Set(float64(stored))
	o.setDepth(sink, n)
	return nil
}

func seqKey(seq uint64) []byte { return binary.BigEndian.AppendUint64(nil, seq) }

// entries returns every stored entry with its key.
func (o *Outbox) entries() ([][]byte, []outboxEntry, error) {
	var seqs [][]byte
	var all []outboxEntry
	err := o.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketOutbox).ForEach(func(k, v []byte) error {
			var e outboxEntry
			if err := json.Unmarshal(v, &e); err != nil {
				return fmt.Errorf("outbox entry %x: %w", k, err)
			}
			seqs = append(seqs, append([]byte(nil), k...))
			all = append(all, e)
			return nil
		})
	})
	return seqs, all, err
}

// ReconcileKafka closes the one window the outbox cannot close alone: a
// crash after Kafka accepted an alert but before the outbox recorded it.
// It reads the alerts topic and marks the queued alerts already there as
// delivered to sinkName, so a restart never produces them twice.
func (o *Outbox) ReconcileKafka(ctx context.Context, cluster *kafkaconn.Cluster, topic, sinkName string) error {
	waiting := map[string]bool{}
	if _, batch, err := o.entries(); err != nil {
		return err
	} else {
		for _, e := range batch {
			if !e.Delivered[sinkName] {
				waiting[e.Alert.ID] = true
			}
		}
	}
	if len(waiting) == 0 {
		return nil
	}
	conn, err := cluster.Dial(ctx)
	if err != nil {
		return err
	}
	parts, err := conn.ReadPartitions(topic)
	conn.Close()
	if err != nil {
		return err
	}
	found := map[string]bool{}
	for _, p := range parts {
		pc, err := cluster.DialLeader(ctx, topic, p.ID)
		if err != nil {
			return err
		}
		first, err1 := pc.ReadFirstOffset()
		last, err2 := pc.ReadLastOffset()
		pc.Close()
		if err1 != nil || err2 != nil || last <= first {
			continue
		}
		r := cluster.Reader(kafka.ReaderConfig{Topic: topic, Partition: p.ID, MaxWait: 100 * time.Millisecond})
		_ = r.SetOffset(first)
		for {
			m, err := r.ReadMessage(ctx)
			if err != nil {
				r.Close()
				return err
			}
			for _, h := range m.Headers {
				if h.Key == "chainwatch-alert-id" && waiting[string(h.Value)] {
					found[string(h.Value)] = true
				}
			}
			if m.Offset >= last-1 {
				break
			}
		}
		r.Close()
	}
	if len(found) == 0 {
		return nil
	}
	seqs, batch, err := o.entries()
	if err != nil {
		return err
	}
	var marked [][]byte
	var alerts []contract.Alert
	for i := range batch {
		if found[batch[i].Alert.ID] && !batch[i].Delivered[sinkName] {
			marked, alerts = append(marked, seqs[i]), append(alerts, batch[i].Alert)
		}
	}
	o.log.Info("alerts already on the alerts topic before the restart were not produced again", "alerts", len(found))
	return o.markDelivered(sinkName, false, marked, alerts)
}

// Pending is the most alerts any one sink still waits for.
func (o *Outbox) Pending() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	n := 0
	for _, d := range o.depth {
		n = max(n, d)
	}
	return n
}
