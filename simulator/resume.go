package simulator

import (
	"context"
	"fmt"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/chainwatch/chainwatch/pipeline/kafkaconn"
)

// lastEventTime returns the newest record timestamp across the topic's
// partitions, or the zero time when the topic is empty or absent.
func lastEventTime(ctx context.Context, cluster *kafkaconn.Cluster, topic string) (time.Time, error) {
	conn, err := cluster.Dial(ctx)
	if err != nil {
		return time.Time{}, err
	}
	defer conn.Close()
	parts, err := conn.ReadPartitions(topic)
	if err != nil {
		return time.Time{}, nil // no topic yet: nothing to resume
	}
	var newest time.Time
	for _, p := range parts {
		pc, err := cluster.DialLeader(ctx, topic, p.ID)
		if err != nil {
			return time.Time{}, fmt.Errorf("partition %d: %w", p.ID, err)
		}
		last, err := pc.ReadLastOffset()
		if err == nil && last > 0 {
			if _, err = pc.Seek(last-1, kafka.SeekAbsolute); err == nil {
				_ = pc.SetReadDeadline(time.Now().Add(5 * time.Second))
				var m kafka.Message
				if m, err = pc.ReadMessage(1 << 20); err == nil && m.Time.After(newest) {
					newest = m.Time
				}
			}
		}
		pc.Close()
		if err != nil {
			return time.Time{}, fmt.Errorf("partition %d: %w", p.ID, err)
		}
	}
	return newest, nil
}
