package pipeline

import (
	"context"
	"strconv"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/chainwatch/chainwatch/pipeline/kafkaconn"
)

// Dead-letter headers added to a rejected record.
const (
	HeaderDLQReason    = "chainwatch-dlq-reason"
	HeaderDLQTopic     = "chainwatch-dlq-topic"
	HeaderDLQPartition = "chainwatch-dlq-partition"
	HeaderDLQOffset    = "chainwatch-dlq-offset"
)

// DeadLetter produces rejected records to the dead-letter topic byte for
// byte as received (key, value and original headers), with the reason and
// origin added as headers.
type DeadLetter struct {
	Writer *kafka.Writer
}

// NewDeadLetter returns a DeadLetter producing to topic.
func NewDeadLetter(cluster *kafkaconn.Cluster, topic string) *DeadLetter {
	return &DeadLetter{Writer: &kafka.Writer{
		Addr: cluster.Addr(), Transport: cluster.Transport(), Topic: topic, Balancer: &kafka.Hash{},
		RequiredAcks: kafka.RequireAll, BatchTimeout: 5 * time.Millisecond,
	}}
}

// Send writes one rejected record and waits for the broker to accept it.
func (d *DeadLetter) Send(ctx context.Context, m kafka.Message, reason string) error {
	headers := append([]kafka.Header(nil), m.Headers...)
	headers = append(headers,
		kafka.Header{Key: HeaderDLQReason, Value: []byte(reason)},
		kafka.Header{Key: HeaderDLQTopic, Value: []byte(m.Topic)},
		kafka.Header{Key: HeaderDLQPartition, Value: []byte(strconv.Itoa(m.Partition))},
		kafka.Header{Key: HeaderDLQOffset, Value: []byte(strconv.FormatInt(m.Offset, 10))},
	)
	return d.Writer.WriteMessages(ctx, kafka.Message{Key: m.Key, Value: m.Value, Headers: headers, Time: m.Time})
}

// Close flushes and closes the writer.
func (d *DeadLetter) Close() error { return d.Writer.Close() }
