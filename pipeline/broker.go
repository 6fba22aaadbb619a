package pipeline

import (
	"cmp"
	"context"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"log/slog"
	"net"
	"runtime/pprof"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/chainwatch/chainwatch/pipeline/integrity"
	"github.com/chainwatch/chainwatch/pipeline/kafkaconn"
)

// EmbeddedBroker is the in-process Kafka-protocol broker of the embedded
// default (franz-go's kfake). It listens on a real TCP port and persists its
// log under a directory, so history survives restarts and can be replayed;
// the stages reach it over the wire like any cluster.
type EmbeddedBroker struct {
	cluster *kfake.Cluster
	addr    string

	forgeMu sync.Mutex
	forged  map[topicPartition]*forgery
}

// forgery is what the broker serves in place of a partition's log: a few
// segments, each the stretch of records before one forged record and that
// record, with the forged values applied.
type forgery struct {
	mu       sync.Mutex
	segments []*forgedSegment // in offset order, not overlapping
}

// forgedSegment is the view of one forgery: records first…forged.
type forgedSegment struct {
	first, forged int64
	records       []forgedRecord
	// served is set once a single-partition reader has been handed the
	// forged record: the tampering has been shown to a verifier, and the
	// segment may make room for newer ones (maxForgedSegments).
	served bool
}

func (g *forgedSegment) contains(off int64) bool { return off >= g.first && off <= g.forged }

// BrokerConfig configures the embedded broker. The zero value listens on
// 127.0.0.1:9092 without persistence.
type BrokerConfig struct {
	// Listen is host:port; port 0 picks a free one. Default 127.0.0.1:9092.
	Listen string
	// DataDir persists the log; empty keeps it in memory.
	DataDir string
	// Partitions for topics created at start. Default 4.
	Partitions int
	// Topics to create at start.
	Topics []string
	// RetentionBytes bounds each partition's log, oldest segments deleted
	// first, as Kafka's log.retention.bytes does: the broker keeps its log
	// in memory, so this bounds its memory. Topics created compacted
	// (EnsureStateTopic) keep everything. Zero means no bound. There is no
	// time retention: records are kept however old their timestamps
	// (brokerConfigs).
	RetentionBytes int64
}

// StartEmbeddedBroker starts the broker.
func StartEmbeddedBroker(cfg BrokerConfig, log *slog.Logger) (*EmbeddedBroker, error) {
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:9092"
	}
	if cfg.Partitions == 0 {
		cfg.Partitions = 4
	}
	host, portStr, err := net.SplitHostPort(cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("embedded broker: listen address %q: %w", cfg.Listen, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("embedded broker: listen port %q: %w", portStr, err)
	}
	opts := []kfake.Opt{
		kfake.NumBrokers(1),
		kfake.Ports(port),
		kfake.ListenFn(func(network, _ string) (net.Listener, error) {
			return net.Listen(network, net.JoinHostPort(host, strconv.Itoa(port)))
		}),
		kfake.AllowAutoTopicCreation(),
		kfake.DefaultNumPartitions(cfg.Partitions),
		kfake.BrokerConfigs(brokerConfigs(cfg)),
	}
	if len(cfg.Topics) > 0 {
		opts = append(opts, kfake.SeedTopics(int32(cfg.Partitions), cfg.Topics...))
	}
	if cfg.DataDir != "" {
		opts = append(opts, kfake.DataDir(cfg.DataDir))
	}
	// Created under the profiler label component=broker, which its
	// goroutines inherit, so profiles tell the embedded broker's CPU from
	// the service's.
	var c *kfake.Cluster
	pprof.Do(context.Background(), pprof.Labels("component", "broker"), func(context.Context) {
		c, err = kfake.NewCluster(opts...)
	})
	if err != nil {
		return nil, fmt.Errorf("embedded broker on %s: %w", cfg.Listen, err)
	}
	b := &EmbeddedBroker{cluster: c, addr: c.ListenAddrs()[0]}
	log.Info("embedded Kafka broker started", "addr", b.addr, "data_dir", cfg.DataDir, "partitions", cfg.Partitions)
	return b, nil
}

// brokerConfigs are the broker-wide settings: compacted topics
// (chainwatch.state) cleaned every minute rather than kfake's hourly
// default, so the state a partition's next owner reads back stays about
// one record per device; retention applied on the same tick, by size
// only. Kafka's default time retention (log.retention.ms, 7 days) is off:
// it judges a record's age by its timestamp, and the embedded broker is
// where history is replayed — a fleet's flows of last month produced
// today, a simulator's past days — which it would delete within a minute
// of their arrival (the cleaning tick), unanchored and unread.
func brokerConfigs(cfg BrokerConfig) map[string]string {
	c := map[string]string{"log.cleaner.backoff.ms": "60000", "log.retention.ms": "-1"}
	if cfg.RetentionBytes > 0 {
		c["log.retention.bytes"] = strconv.FormatInt(cfg.RetentionBytes, 10)
	}
	return c
}

// ApplyRetention deletes what retention allows now, rather than at the
// next cleaner tick.
func (b *EmbeddedBroker) ApplyRetention() { b.cluster.ApplyRetention() }

// Addr is the broker's host:port.
func (b *EmbeddedBroker) Addr() string { return b.addr }

// Close stops the broker, flushing its log to disk.
func (b *EmbeddedBroker) Close() { b.cluster.Close() }

// ForgeRecord makes the embedded broker serve one record of a partition
// with its value replaced by forge(value), as a compromised broker or a
// doctored disk would: every single-partition read whose fetch starts
// within forgeWindow records before it, or at it, gets the forged history.
// The log itself is untouched. It exists for the simulator's
// history-tamper scenario and for tests: the readers that re-verify
// history (replay, prove and the continuous audit) read one partition per
// request; consumers that fetch many partitions per request are left
// alone, so detection carries on undisturbed.
func (b *EmbeddedBroker) ForgeRecord(ctx context.Context, topic string, partition int32, offset int64, forge func([]byte) []byte) error {
	info := b.cluster.TopicInfo(topic)
	if info == nil {
		return fmt.Errorf("forge: no topic %s", topic)
	}
	part := b.cluster.PartitionInfo(topic, partition)
	if part == nil || offset < part.LogStartOffset || offset >= part.HighWatermark {
		return fmt.Errorf("forge: no offset %d in %s/%d", offset, topic, partition)
	}
	b.forgeMu.Lock()
	defer b.forgeMu.Unlock()
	tp := topicPartition{topic, int(partition)}
	f, installed := b.forged[tp]
	if !installed {
		f = &forgery{}
	}
	f.mu.Lock()
	// Segments retention has begun deleting go (reading a deleted offset
	// would wait for ever); a record inside a segment is forged in place.
	kept := f.segments[:0]
	for _, g := range f.segments {
		if g.first >= part.LogStartOffset {
			kept = append(kept, g)
		}
	}
	f.segments = kept
	for _, g := range f.segments {
		if g.contains(offset) {
			g.records[offset-g.first].value = forge(g.records[offset-g.first].value)
			g.served = false // the new forgery has not been shown to anyone yet
			f.mu.Unlock()
			return nil
		}
	}
	// A new segment from far enough back that a sequential reader's fetch
	// lands in it (a verifier's fetch carries at most
	// integrity.ReadMaxBytes), but not into the segment before it.
	first := max(part.LogStartOffset, offset-forgeWindow)
	for _, g := range f.segments {
		if g.forged < offset {
			first = max(first, g.forged+1)
		}
	}
	f.mu.Unlock()
	readCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	records, err := b.read(readCtx, topic, partition, first, offset)
	if err != nil {
		return err
	}
	records[offset-first].Value = forge(records[offset-first].Value)
	g := &forgedSegment{forged: offset}
	g.first, g.records = compactView(first, records)
	f.mu.Lock()
	f.segments = append(f.segments, g)
	slices.SortFunc(f.segments, func(a, b *forgedSegment) int { return cmp.Compare(a.first, b.first) })
	// The view is a copy of the log: keep it to a few segments, letting go
	// first of those a verifier has already been shown (served as the log
	// holds them from then on), then of the oldest.
	for len(f.segments) > maxForgedSegments {
		drop := 0
		for i, s := range f.segments {
			if s.served {
				drop = i
				break
			}
		}
		f.segments = slices.Delete(f.segments, drop, drop+1)
	}
	f.mu.Unlock()
	if installed {
		return nil
	}
	if b.forged == nil {
		b.forged = map[topicPartition]*forgery{}
	}
	b.forged[tp] = f
	hwm := part.HighWatermark
	b.cluster.ControlKey(int16(kmsg.Fetch), func(req kmsg.Request) (kmsg.Response, error, bool) {
		b.cluster.KeepControl()
		fr := req.(*kmsg.FetchRequest)
		if len(fr.Topics) != 1 || len(fr.Topics[0].Partitions) != 1 {
			return nil, nil, false
		}
		rt, rp := fr.Topics[0], fr.Topics[0].Partitions[0]
		if (rt.Topic != topic && rt.TopicID != info.TopicID) || rp.Partition != partition {
			return nil, nil, false
		}
		f.mu.Lock()
		defer f.mu.Unlock()
		var g *forgedSegment
		for _, s := range f.segments {
			if s.contains(rp.FetchOffset) {
				g = s
			}
		}
		if g == nil {
			return nil, nil, false
		}
		from := rp.FetchOffset - g.first
		resp := fr.ResponseKind().(*kmsg.FetchResponse)
		resp.Version = fr.Version
		t := kmsg.NewFetchResponseTopic()
		t.Topic, t.TopicID = rt.Topic, rt.TopicID
		p := kmsg.NewFetchResponseTopicPartition()
		end := max(hwm, g.forged+1)
		p.Partition, p.HighWatermark, p.LastStableOffset, p.LogStartOffset = partition, end, end, part.LogStartOffset
		upto := min(from+forgedBatch, int64(len(g.records)))
		p.RecordBatches = encodeRecordBatch(g.first+from, g.records[from:upto])
		if g.first+upto > g.forged {
			g.served = true
		}
		t.Partitions = append(t.Partitions, p)
		resp.Topics = append(resp.Topics, t)
		return resp, nil, true
	})
	return nil
}

// forgedRecord is one record of a forgery view; key and value point into
// the view's one buffer.
type forgedRecord struct {
	ts         time.Time
	key, value []byte
	headers    []kafka.Header
}

// compactView keeps of records (offsets first…, the last one forged) the
// stretch a verifier's fetch can land in before the forged one —
// forgeWindowBytes — and copies them into one buffer. It returns the
// view's first offset and its records.
func compactView(first int64, records []kafka.Message) (int64, []forgedRecord) {
	start, bytes := len(records)-1, 0
	for start > 0 && bytes < forgeWindowBytes {
		start--
		bytes += len(records[start].Key) + len(records[start].Value)
	}
	records = records[start:]
	size := 0
	for _, m := range records {
		size += len(m.Key) + len(m.Value)
	}
	buf := make([]byte, 0, size)
	out := make([]forgedRecord, len(records))
	for i, m := range records {
		k := len(buf)
		buf = append(buf, m.Key...)
		v := len(buf)
		buf = append(buf, m.Value...)
		out[i] = forgedRecord{ts: m.Time, key: buf[k:v:v], value: buf[v:len(buf):len(buf)], headers: m.Headers}
		if m.Key == nil {
			out[i].key = nil
		}
	}
	return first + int64(start), out
}

// read returns a partition's records first..last as the log holds them.
func (b *EmbeddedBroker) read(ctx context.Context, topic string, partition int32, first, last int64) ([]kafka.Message, error) {
	r := kafkaconn.Plain(b.addr).Reader(kafka.ReaderConfig{Topic: topic, Partition: int(partition), MaxBytes: 8 << 20, MaxWait: 50 * time.Millisecond})
	defer r.Close()
	if err := r.SetOffset(first); err != nil {
		return nil, err
	}
	records := make([]kafka.Message, 0, last-first+1)
	for int64(len(records)) <= last-first {
		m, err := r.ReadMessage(ctx)
		if err != nil {
			return nil, fmt.Errorf("forge: read %s/%d: %w", topic, partition, err)
		}
		records = append(records, m)
	}
	return records, nil
}

const (
	forgeWindow = 65_536 // records before a forged one read to build its segment
	// forgeWindowBytes is how much of them the segment keeps, counting
	// their keys and values only (less than their record batches take):
	// more than a verifier's fetch can carry, so that every sequential
	// read starts a fetch inside the segment. A fetch asks for
	// integrity.ReadMaxBytes, and the broker ends it after the batch that
	// reaches that, which may be as large as a producer's batch
	// (kafkaconn.MaxBatchBytes); with a margin of one batch less than that
	// (ReadMaxBytes + 1 MiB), a fetch begun just before the segment could
	// carry past the forged record, and every pass of the audit, its
	// fetches falling at the same offsets, read the log unforged
	// (make test, twice in the twenty-sixth session).
	forgeWindowBytes  = integrity.ReadMaxBytes + 2*kafkaconn.MaxBatchBytes
	forgedBatch       = 2_000 // records per forged fetch response
	maxForgedSegments = 4     // per partition
)

// encodeRecordBatch encodes contiguous records as one uncompressed Kafka
// record batch (magic 2) with a valid CRC-32C, as a broker stores them.
func encodeRecordBatch(base int64, records []forgedRecord) []byte {
	baseTs := records[0].ts.UnixMilli()
	maxTs := baseTs
	var body []byte
	for i, m := range records {
		ts := m.ts.UnixMilli()
		maxTs = max(maxTs, ts)
		r := kmsg.Record{TimestampDelta64: ts - baseTs, OffsetDelta: int32(i), Key: m.key, Value: m.value}
		for _, h := range m.headers {
			r.Headers = append(r.Headers, kmsg.Header{Key: h.Key, Value: h.Value})
		}
		enc := r.AppendTo(nil)[1:] // without the zero length varint
		body = binary.AppendVarint(body, int64(len(enc)))
		body = append(body, enc...)
	}
	rb := kmsg.RecordBatch{
		FirstOffset: base, Magic: 2, LastOffsetDelta: int32(len(records) - 1),
		FirstTimestamp: baseTs, MaxTimestamp: maxTs, ProducerID: -1, ProducerEpoch: -1, FirstSequence: -1,
		NumRecords: int32(len(records)), Records: body,
	}
	out := rb.AppendTo(nil)
	// Length counts the bytes after itself; the CRC covers the bytes after
	// itself: attributes to the end.
	binary.BigEndian.PutUint32(out[8:], uint32(len(out)-12))
	binary.BigEndian.PutUint32(out[17:], crc32.Checksum(out[21:], crc32.MakeTable(crc32.Castagnoli)))
	return out
}
