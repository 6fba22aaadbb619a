package integrity

import (
	"cmp"
	"context"
	"encoding/base64"
	"fmt"
	"slices"
	"strings"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/chainwatch/chainwatch/ledgerclient"
	"github.com/chainwatch/chainwatch/ledgerclient/contract"
	"github.com/chainwatch/chainwatch/pipeline/kafkaconn"
)

// A stream is what anchors name on the ledger: a topic's identity, not
// only its name. A topic deleted and created again under the same name —
// or a cluster rebuilt — starts offsets from zero with other records, so
// its anchors must not be the old topic's: the stream is the topic's name
// and its id (KIP-516), "iot.flows@<id>", the id in Kafka's own
// URL-safe base64 (a topic name cannot hold '@'). The old topic's anchors
// stay on the ledger under its own stream, the record of what was.
//
// Anchors written before streams carried ids name the bare topic. They
// still mean what they meant: history reads list them next to the
// stream's own (listAnchors), and a cluster that gives no ids anchors
// under the bare name.

// StreamOf is the stream of a topic with the given id; the bare name for a
// zero id.
func StreamOf(topic string, id [16]byte) string {
	if id == ([16]byte{}) {
		return topic
	}
	return topic + "@" + base64.RawURLEncoding.EncodeToString(id[:])
}

// TopicOfStream is the topic name a stream is of.
func TopicOfStream(stream string) string {
	name, _, _ := strings.Cut(stream, "@")
	return name
}

// TopicStream asks the cluster for a topic's id and returns its stream.
func TopicStream(ctx context.Context, cluster *kafkaconn.Cluster, topic string) (string, error) {
	cl, err := kgo.NewClient(cluster.ClientOpts()...)
	if err != nil {
		return "", fmt.Errorf("topic id of %s: %w", topic, err)
	}
	defer cl.Close()
	md, err := kadm.NewClient(cl).Metadata(ctx, topic)
	if err != nil {
		return "", fmt.Errorf("topic id of %s: %w", topic, err)
	}
	d, ok := md.Topics[topic]
	if !ok {
		return "", fmt.Errorf("topic id of %s: not in the cluster's metadata", topic)
	}
	if d.Err != nil {
		return "", fmt.Errorf("topic id of %s: %w", topic, d.Err)
	}
	return StreamOf(topic, d.ID), nil
}

// listSingle lists a partition's batches anchored one by one on the ledger
// (before seals), of a stream and, for a stream
// with an id, those written under its bare topic name before streams
// carried ids, in offset order.
func listSingle(ctx context.Context, ledger *ledgerclient.Client, stream string, partition int32, from, to int64) ([]contract.Anchor, error) {
	anchors, err := ledger.ListAnchors(ctx, stream, partition, from, to)
	if err != nil {
		return nil, err
	}
	if bare := TopicOfStream(stream); bare != stream {
		legacy, err := ledger.ListAnchors(ctx, bare, partition, from, to)
		if err != nil {
			return nil, err
		}
		if len(legacy) > 0 {
			anchors = append(anchors, legacy...)
			slices.SortStableFunc(anchors, func(a, b contract.Anchor) int { return cmp.Compare(a.FirstOffset, b.FirstOffset) })
		}
	}
	return anchors, nil
}

// resolveStream is the stream to verify a topic against: anchoredAs when it
// names a stream with an id; the current stream of the topic anchoredAs
// names (a copy verified against its original); else the topic's own.
// A name whose topic no longer exists stays a bare name (its legacy
// anchors); name the old stream's id to reach its own.
func ResolveStream(ctx context.Context, cluster *kafkaconn.Cluster, topic, anchoredAs string) (string, error) {
	if anchoredAs == "" {
		return TopicStream(ctx, cluster, topic)
	}
	if strings.Contains(anchoredAs, "@") {
		return anchoredAs, nil
	}
	if s, err := TopicStream(ctx, cluster, anchoredAs); err == nil {
		return s, nil
	}
	return anchoredAs, nil
}
