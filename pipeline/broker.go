package pipeline

import (
	"context"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"log/slog"
	"net"
	"runtime/pprof"
	"strconv"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

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

// forgery is what the broker serves in place of a partition's log: the
// records from first on, with the forged values applied.
type forgery struct {
	mu      sync.Mutex
	first   int64
	records []kafka.Message
	values  map[int64][]byte // forged offset → forged value
}

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
	// (EnsureStateTopic) keep everything. Zero means no bound.
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
// one record per device; retention applied on the same tick.
func brokerConfigs(cfg BrokerConfig) map[string]string {
	c := map[string]string{"log.cleaner.backoff.ms": "60000"}
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
		f = &forgery{values: map[int64][]byte{}}
	}
	// The broker's view from far enough back that a sequential reader's
	// fetch lands in it (one fetch carries at most MaxBytes, a few tens of
	// thousands of records), up to the newest forged record; earlier
	// forgeries of the partition stay in it.
	first := max(part.LogStartOffset, offset-forgeWindow)
	last := offset
	if installed {
		// Earlier forgeries stay in the view, but not from before the log
		// start: retention may have deleted what they began with (reading
		// from a deleted offset would wait for ever).
		first, last = max(min(first, f.first), part.LogStartOffset), max(last, f.first+int64(len(f.records))-1)
	}
	readCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	records, err := b.read(readCtx, topic, partition, first, last)
	if err != nil {
		return err
	}
	f.mu.Lock()
	f.values[offset] = forge(records[offset-first].Value)
	for off, v := range f.values {
		if off < first {
			delete(f.values, off) // deleted by retention since
			continue
		}
		records[off-first].Value = v
	}
	f.first, f.records = first, records
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
		from := rp.FetchOffset - f.first
		if from < 0 || from >= int64(len(f.records)) {
			return nil, nil, false
		}
		resp := fr.ResponseKind().(*kmsg.FetchResponse)
		resp.Version = fr.Version
		t := kmsg.NewFetchResponseTopic()
		t.Topic, t.TopicID = rt.Topic, rt.TopicID
		p := kmsg.NewFetchResponseTopicPartition()
		end := max(hwm, f.first+int64(len(f.records)))
		p.Partition, p.HighWatermark, p.LastStableOffset, p.LogStartOffset = partition, end, end, part.LogStartOffset
		p.RecordBatches = encodeRecordBatch(f.records[from:min(from+forgedBatch, int64(len(f.records)))])
		t.Partitions = append(t.Partitions, p)
		resp.Topics = append(resp.Topics, t)
		return resp, nil, true
	})
	return nil
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
	forgeWindow = 65_536 // records before a forged one served from the forgery
	forgedBatch = 2_000  // records per forged fetch response
)

// encodeRecordBatch encodes contiguous records as one uncompressed Kafka
// record batch (magic 2) with a valid CRC-32C, as a broker stores them.
func encodeRecordBatch(records []kafka.Message) []byte {
	base, baseTs := records[0].Offset, records[0].Time.UnixMilli()
	maxTs := baseTs
	var body []byte
	for _, m := range records {
		ts := m.Time.UnixMilli()
		maxTs = max(maxTs, ts)
		r := kmsg.Record{TimestampDelta64: ts - baseTs, OffsetDelta: int32(m.Offset - base), Key: m.Key, Value: m.Value}
		for _, h := range m.Headers {
			r.Headers = append(r.Headers, kmsg.Header{Key: h.Key, Value: h.Value})
		}
		enc := r.AppendTo(nil)[1:] // without the zero length varint
		body = binary.AppendVarint(body, int64(len(enc)))
		body = append(body, enc...)
	}
	rb := kmsg.RecordBatch{
		FirstOffset: base, Magic: 2, LastOffsetDelta: int32(records[len(records)-1].Offset - base),
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
