package pipeline

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/chainwatch/chainwatch/pipeline/kafkaconn"

	"github.com/chainwatch/chainwatch/pipeline/integrity"
)

// Topics names the Kafka topics chainwatch reads and writes. The zero value
// means the documented defaults.
type Topics struct {
	Flows      string `yaml:"flows"`       // default iot.flows
	Telemetry  string `yaml:"telemetry"`   // default iot.telemetry
	Alerts     string `yaml:"alerts"`      // default chainwatch.alerts
	DeadLetter string `yaml:"dead_letter"` // default chainwatch.dlq
	// State is the compacted topic of the detection stage's checkpoints
	// (device histories, partition watermarks); one partition. Default
	// chainwatch.state.
	State string `yaml:"state"`
	// Models is the compacted topic that carries model artifacts between
	// the instances of a group (ModelTopic); one partition. Default
	// chainwatch.models.
	Models string `yaml:"models"`
	// Leaves is the compacted topic of every anchored batch's leaf hashes
	// (integrity.LeafTopic), which prove the surviving records of a range
	// retention cut through, and of the batch index, each seal's batch
	// descriptors; one partition. Default chainwatch.anchor-leaves.
	Leaves string `yaml:"leaves"`
}

// WithDefaults fills empty names with the defaults.
func (t Topics) WithDefaults() Topics {
	if t.Flows == "" {
		t.Flows = "iot.flows"
	}
	if t.Telemetry == "" {
		t.Telemetry = "iot.telemetry"
	}
	if t.Alerts == "" {
		t.Alerts = "chainwatch.alerts"
	}
	if t.DeadLetter == "" {
		t.DeadLetter = "chainwatch.dlq"
	}
	if t.State == "" {
		t.State = "chainwatch.state"
	}
	if t.Models == "" {
		t.Models = "chainwatch.models"
	}
	if t.Leaves == "" {
		t.Leaves = integrity.DefaultLeafTopic
	}
	return t
}

// All lists the partitioned topics (not the state and model topics, which
// have one partition and are compacted: see EnsureStateTopic).
func (t Topics) All() []string { return []string{t.Flows, t.Telemetry, t.Alerts, t.DeadLetter} }

// EnsureTopics creates the topics that do not exist yet, with the given
// partition count and replication factor, through the cluster controller.
// Existing topics are left as they are.
func EnsureTopics(ctx context.Context, cluster *kafkaconn.Cluster, partitions, replication int, topics ...string) error {
	cfgs := make([]kafka.TopicConfig, 0, len(topics))
	for _, t := range topics {
		cfgs = append(cfgs, kafka.TopicConfig{Topic: t, NumPartitions: partitions, ReplicationFactor: replication})
	}
	if err := createTopics(ctx, cluster, cfgs...); err != nil && !errors.Is(err, kafka.TopicAlreadyExists) {
		return fmt.Errorf("ensure topics: %w", err)
	}
	return nil
}

// createTopics sends one CreateTopics request to the cluster controller.
func createTopics(ctx context.Context, cluster *kafkaconn.Cluster, cfgs ...kafka.TopicConfig) error {
	conn, err := cluster.Dial(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	controller, err := conn.Controller()
	if err != nil {
		return fmt.Errorf("find controller: %w", err)
	}
	cc, err := cluster.Dialer().DialContext(ctx, "tcp", net.JoinHostPort(controller.Host, strconv.Itoa(controller.Port)))
	if err != nil {
		return fmt.Errorf("dial controller: %w", err)
	}
	defer cc.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = cc.SetDeadline(dl)
	} else {
		_ = cc.SetDeadline(time.Now().Add(30 * time.Second))
	}
	return cc.CreateTopics(cfgs...)
}
