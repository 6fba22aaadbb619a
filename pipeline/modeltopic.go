package pipeline

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/chainwatch/chainwatch/pipeline/kafkaconn"
)

// ModelTopic shares model artifacts between the instances of a consumer
// group through a compacted Kafka topic, so that a model trained or
// registered on one instance can be loaded by every other: the ledger
// holds only an artifact's hash, and each instance its own data directory.
//
// An artifact is written as chunks of at most ModelChunkBytes (Kafka's
// default message size limit is 1 MB, and a forest of 100 trees is about
// that), each keyed
//
//	<hash>/<index>/<count>
//
// so compaction keeps exactly one copy of every chunk. A reader collects the
// chunks of one hash and checks, as ModelStore does for a file, that the
// bytes hash to it: the topic is a transport, never a source of trust.
type ModelTopic struct {
	kafka  *kafkaconn.Cluster
	topic  string
	writer *kafka.Writer
}

// ModelChunkBytes is the largest chunk of an artifact written as one record.
const ModelChunkBytes = 512 << 10

// NewModelTopic reads and writes artifacts on topic, which
// EnsureStateTopic creates compacted with one partition.
func NewModelTopic(cluster *kafkaconn.Cluster, topic string) *ModelTopic {
	return &ModelTopic{kafka: cluster, topic: topic, writer: &kafka.Writer{
		Addr: cluster.Addr(), Topic: topic, Balancer: &kafka.Hash{},
		Transport:    cluster.Transport(),
		RequiredAcks: kafka.RequireAll, BatchSize: 64, BatchBytes: kafkaconn.MaxBatchBytes, BatchTimeout: time.Millisecond,
	}}
}

// Put writes an artifact's chunks. Writing the same artifact again only adds
// records that compaction folds away.
func (t *ModelTopic) Put(ctx context.Context, hash string, artifact []byte) error {
	count := (len(artifact) + ModelChunkBytes - 1) / ModelChunkBytes
	msgs := make([]kafka.Message, 0, count)
	for i := range count {
		chunk := artifact[i*ModelChunkBytes : min((i+1)*ModelChunkBytes, len(artifact))]
		msgs = append(msgs, kafka.Message{Key: []byte(hash + "/" + strconv.Itoa(i) + "/" + strconv.Itoa(count)), Value: chunk})
	}
	if err := t.writer.WriteMessages(ctx, msgs...); err != nil {
		return fmt.Errorf("model topic %s: write %s: %w", t.topic, hash, err)
	}
	return nil
}

// Get reads the artifact with the given hash. It returns an error wrapping
// ErrArtifactMissing when the topic holds no complete copy.
func (t *ModelTopic) Get(ctx context.Context, hash string) ([]byte, error) {
	conn, err := t.kafka.DialLeader(ctx, t.topic, 0)
	if err != nil {
		return nil, fmt.Errorf("model topic %s: %w", t.topic, err)
	}
	first, last, err := conn.ReadOffsets()
	conn.Close()
	if err != nil {
		return nil, fmt.Errorf("model topic %s: read offsets: %w", t.topic, err)
	}
	if last <= first {
		return nil, fmt.Errorf("%w: model topic %s is empty", ErrArtifactMissing, t.topic)
	}
	r := t.kafka.Reader(kafka.ReaderConfig{Topic: t.topic, Partition: 0, MinBytes: 1, MaxBytes: 8 << 20, MaxWait: 100 * time.Millisecond})
	defer r.Close()
	if err := r.SetOffset(first); err != nil {
		return nil, err
	}
	var chunks [][]byte
	prefix := hash + "/"
	for {
		m, err := r.ReadMessage(ctx)
		if err != nil {
			return nil, fmt.Errorf("model topic %s: read: %w", t.topic, err)
		}
		if key := string(m.Key); strings.HasPrefix(key, prefix) {
			i, n, ok := chunkIndex(key[len(prefix):])
			if ok {
				if len(chunks) != n {
					chunks = make([][]byte, n) // a different chunking: start over
				}
				chunks[i] = m.Value
			}
		}
		if m.Offset >= last-1 {
			break
		}
	}
	for _, c := range chunks {
		if c == nil {
			return nil, fmt.Errorf("%w: model topic %s has no complete copy of %s", ErrArtifactMissing, t.topic, hash)
		}
	}
	if chunks == nil {
		return nil, fmt.Errorf("%w: model topic %s has no copy of %s", ErrArtifactMissing, t.topic, hash)
	}
	return bytes.Join(chunks, nil), nil
}

// chunkIndex parses "<index>/<count>".
func chunkIndex(s string) (i, n int, ok bool) {
	a, b, found := strings.Cut(s, "/")
	if !found {
		return 0, 0, false
	}
	i, err1 := strconv.Atoi(a)
	n, err2 := strconv.Atoi(b)
	if errors.Join(err1, err2) != nil || n <= 0 || i < 0 || i >= n {
		return 0, 0, false
	}
	return i, n, true
}

// Close flushes and closes the writer.
func (t *ModelTopic) Close() error { return t.writer.Close() }
