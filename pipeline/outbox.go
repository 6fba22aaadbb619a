package pipeline

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"log/slog"
	"time"

	"github.com/segmentio/kafka-go"
	bolt "go.etcd.io/bbolt"

	"github.com/chainwatch/chainwatch/ledgerclient/contract"
	"github.com/chainwatch/chainwatch/pipeline/kafkaconn"
)

// Outbox is the durable queue between the stages and the alert sinks.
// A stage hands its alerts to Add, which stores each new alert id once and
// fsyncs before returning — only then does the stage commit its Kafka
// offsets — and a deliverer takes them to the sinks in order, retrying each
// sink until it accepts. An alert raised again (a replay after a crash) is
// known by its id and not delivered twice; a restart resumes delivery where
// it stopped. Prometheus's remote-write queue is the model: a queue with
// retries in front of every remote sink.
type Outbox struct {
	db      *bolt.DB
	sinks   []AlertSink
	metrics *Metrics
	log     *slog.Logger
	wake    chan struct{}
	done    chan struct{}
}

var (
	bucketOutbox    = []byte("outbox")     // seq → outboxEntry
	bucketOutboxIDs = []byte("outbox-ids") // alert id → seq
)

type outboxEntry struct {
	Alert     contract.Alert  `json:"alert"`
	Delivered map[string]bool `json:"delivered"` // sink name → accepted
}

// OpenOutbox opens (or creates) the outbox file.
func OpenOutbox(path string, sinks []AlertSink, metrics *Metrics, log *slog.Logger) (*Outbox, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		return nil, fmt.Errorf("outbox %s: %w", path, err)
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
		return nil, fmt.Errorf("outbox %s: %w", path, err)
	}
	return &Outbox{db: db, sinks: sinks, metrics: metrics, log: log.With("component", "outbox"),
		wake: make(chan struct{}, 1), done: make(chan struct{})}, nil
}

// Add stores the alerts whose ids the outbox has not seen, counts them in
// chainwatch_alerts_total and the run summary, and returns them; it returns
// once they are on disk. Alerts it already knew (a replay) are not counted
// again.
func (o *Outbox) Add(alerts []contract.Alert) ([]contract.Alert, error) {
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
			raw, err := json.Marshal(outboxEntry{Alert: a, Delivered: map[string]bool{}})
			if err != nil {
				return err
			}
			key := binary.BigEndian.AppendUint64(nil, seq)
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
	for _, a := range added {
		o.metrics.Alerts.WithLabelValues(a.Kind, a.Confidence).Inc()
		o.metrics.Summary.addAlert(a.Kind)
	}
	if len(added) > 0 {
		select {
		case o.wake <- struct{}{}:
		default:
		}
	}
	return added, nil
}

// Run delivers queued alerts until ctx ends.
func (o *Outbox) Run(ctx context.Context) {
	defer close(o.done)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		if err := o.deliverPending(ctx); err != nil && ctx.Err() == nil {
			o.log.Warn("alert delivery interrupted", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-o.wake:
		case <-tick.C:
		}
	}
}

// Wait blocks until Run has returned.
func (o *Outbox) Wait() { <-o.done }

// Close closes the outbox file (after Run has returned).
func (o *Outbox) Close() error { return o.db.Close() }

const outboxBatch = 256

// deliverPending hands every undelivered alert to each sink in order: the
// ledger first, whose transaction id the later sinks carry.
func (o *Outbox) deliverPending(ctx context.Context) error {
	for {
		seqs, batch, err := o.pending()
		if err != nil || len(batch) == 0 {
			return err
		}
		for _, s := range o.sinks {
			var todo []int
			for i := range batch {
				if !batch[i].Delivered[s.Name()] {
					todo = append(todo, i)
				}
			}
			if len(todo) == 0 {
				continue
			}
			alerts := make([]contract.Alert, len(todo))
			for k, i := range todo {
				alerts[k] = batch[i].Alert
			}
			if err := deliverWithRetry(ctx, []AlertSink{s}, alerts, o.metrics, o.log); err != nil {
				return err
			}
			for k, i := range todo {
				batch[i].Alert = alerts[k] // the ledger fills in tx id and time
				batch[i].Delivered[s.Name()] = true
			}
			if err := o.save(seqs, batch); err != nil {
				return err
			}
		}
		if err := o.prune(seqs); err != nil {
			return err
		}
	}
}

func (o *Outbox) pending() ([][]byte, []outboxEntry, error) {
	var seqs [][]byte
	var batch []outboxEntry
	err := o.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketOutbox).Cursor()
		for k, v := c.First(); k != nil && len(batch) < outboxBatch; k, v = c.Next() {
			var e outboxEntry
			if err := json.Unmarshal(v, &e); err != nil {
				return fmt.Errorf("outbox entry %x: %w", k, err)
			}
			seqs = append(seqs, append([]byte(nil), k...))
			batch = append(batch, e)
		}
		return nil
	})
	o.metrics.OutboxDepth.Set(float64(o.depth()))
	return seqs, batch, err
}

func (o *Outbox) save(seqs [][]byte, batch []outboxEntry) error {
	return o.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketOutbox)
		for i, k := range seqs {
			raw, err := json.Marshal(batch[i])
			if err != nil {
				return err
			}
			if err := b.Put(k, raw); err != nil {
				return err
			}
		}
		return nil
	})
}

// prune drops entries every sink has accepted; their ids stay, so a replay
// of the same records never delivers them again.
func (o *Outbox) prune(seqs [][]byte) error {
	return o.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketOutbox)
		for _, k := range seqs {
			if err := b.Delete(k); err != nil {
				return err
			}
		}
		return nil
	})
}

func (o *Outbox) depth() int {
	n := 0
	_ = o.db.View(func(tx *bolt.Tx) error {
		n = tx.Bucket(bucketOutbox).Stats().KeyN
		return nil
	})
	return n
}

// ReconcileKafka closes the one window the outbox cannot close alone: a
// crash after Kafka accepted an alert but before the outbox recorded it.
// It reads the alerts topic and marks the queued alerts already there as
// delivered to sinkName, so a restart never produces them twice.
func (o *Outbox) ReconcileKafka(ctx context.Context, cluster *kafkaconn.Cluster, topic, sinkName string) error {
	waiting := map[string]bool{}
	if _, batch, err := o.pending(); err != nil {
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
	seqs, batch, err := o.pending()
	if err != nil {
		return err
	}
	for i := range batch {
		if found[batch[i].Alert.ID] {
			batch[i].Delivered[sinkName] = true
		}
	}
	o.log.Info("alerts already on the alerts topic before the restart were not produced again", "alerts", len(found))
	return o.save(seqs, batch)
}
