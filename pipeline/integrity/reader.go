package integrity

import (
	"context"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/chainwatch/chainwatch/pipeline/kafkaconn"
)

// partitionReader reads one partition's records in offset order, from an
// offset it is told, for the verifiers (replay, proofs, the audit). It reads
// through franz-go, as the anchoring stage's consumer does, so that both see
// the same records: a transactional producer's commit and abort markers take
// offsets but are no records, and franz-go hides them as the Kafka protocol
// asks of clients. kafka-go's Reader hands them over as empty messages
// (segmentio/kafka-go#1446), which read as records the anchors never held:
// every range of a transactional producer's topic mismatched.
type partitionReader struct {
	cl        *kgo.Client
	topic     string
	partition int32
	buf       []*kgo.Record
}

func newPartitionReader(cluster *kafkaconn.Cluster, topic string, partition int32, extra ...kgo.Opt) (*partitionReader, error) {
	opts := append(cluster.ClientOpts(),
		kgo.FetchMaxBytes(ReadMaxBytes), kgo.FetchMaxPartitionBytes(ReadMaxBytes), kgo.FetchMaxWait(100*time.Millisecond))
	opts = append(opts, extra...)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("read %s/%d: %w", topic, partition, err)
	}
	return &partitionReader{cl: cl, topic: topic, partition: partition}, nil
}

// SeekTo makes the next record read the first at or after offset.
func (r *partitionReader) SeekTo(offset int64) {
	r.cl.RemoveConsumePartitions(map[string][]int32{r.topic: {r.partition}})
	r.cl.AddConsumePartitions(map[string]map[int32]kgo.Offset{r.topic: {r.partition: kgo.NewOffset().At(offset)}})
	r.buf = r.buf[:0]
}

// Next returns the next record, waiting for one if the partition has none
// yet.
func (r *partitionReader) Next(ctx context.Context) (*kgo.Record, error) {
	for len(r.buf) == 0 {
		fs := r.cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		var ferr error
		fs.EachError(func(_ string, _ int32, err error) { ferr = err })
		if ferr != nil {
			return nil, ferr
		}
		fs.EachRecord(func(rec *kgo.Record) {
			if rec.Topic == r.topic && rec.Partition == r.partition {
				r.buf = append(r.buf, rec)
			}
		})
	}
	rec := r.buf[0]
	r.buf = r.buf[1:]
	return rec, nil
}

// Close releases the reader's connections.
func (r *partitionReader) Close() { r.cl.Close() }

// MarkedReader reads one partition in offset order through franz-go with
// a transactional producer's commit and abort markers kept
// (kgo.KeepControlRecords), so that a read bounded by an end offset knows
// it has reached it when the last offsets before it are markers, rather
// than waiting for a record that will not come, and passes the markers
// over: they take offsets but are no records. kafka-go's Reader hands them
// over as ordinary messages (segmentio/kafka-go#1446): a history read
// through it counted them as records.
type MarkedReader struct {
	r    *partitionReader
	next int64 // the offset after the last one read
}

// NewMarkedReader opens a reader of topic's partition at offset from.
func NewMarkedReader(cluster *kafkaconn.Cluster, topic string, partition int32, from int64) (*MarkedReader, error) {
	r, err := newPartitionReader(cluster, topic, partition, kgo.KeepControlRecords())
	if err != nil {
		return nil, err
	}
	m := &MarkedReader{r: r}
	m.SeekTo(from)
	return m, nil
}

// SeekTo makes the next read start at offset.
func (m *MarkedReader) SeekTo(offset int64) {
	m.r.SeekTo(offset)
	m.next = offset
}

// NextBefore returns the next record at an offset before end, markers
// passed over, or nil once the reader has passed end−1.
func (m *MarkedReader) NextBefore(ctx context.Context, end int64) (*kgo.Record, error) {
	for m.next < end {
		rec, err := m.r.Next(ctx)
		if err != nil {
			return nil, fmt.Errorf("read %s/%d: %w", m.r.topic, m.r.partition, err)
		}
		m.next = rec.Offset + 1
		if rec.Offset >= end {
			return nil, nil
		}
		if !rec.Attrs.IsControl() {
			return rec, nil
		}
	}
	return nil, nil
}

// Close releases the reader's connections.
func (m *MarkedReader) Close() { m.r.Close() }

// NewestRecord returns the newest record of a partition whose offsets run
// from first to end (end exclusive: the high watermark), or nil when it
// holds none. The newest offset of a transactional producer's partition is
// its commit marker, which is no record and bears the commit's time, not an
// event's. This reads the partition's tail (MarkedReader), stepping further
// back when the tail it read held markers only.
func NewestRecord(ctx context.Context, cluster *kafkaconn.Cluster, topic string, partition int32, first, end int64) (*kgo.Record, error) {
	if end <= first {
		return nil, nil
	}
	r, err := NewMarkedReader(cluster, topic, partition, first)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	for back := int64(16); ; back *= 16 {
		from := max(first, end-back)
		r.SeekTo(from)
		var newest *kgo.Record
		for {
			rec, err := r.NextBefore(ctx, end)
			if err != nil {
				return nil, fmt.Errorf("newest record: %w", err)
			}
			if rec == nil {
				break
			}
			newest = rec
		}
		if newest != nil || from == first {
			return newest, nil
		}
	}
}
