package pipeline

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/chainwatch/chainwatch/pipeline/integrity"
)

// TestAuditDropsFindingsOfATopicRecreatedMidRound: a round whose reads met
// a topic deleted and created again after it looked up the topic's id finds
// the old stream's history "deleted"; those findings are dropped (the next
// round audits the new stream from the start). Findings on the stream the
// topic still is stand, and a round without findings asks nothing.
func TestAuditDropsFindingsOfATopicRecreatedMidRound(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	topics := Topics{}.WithDefaults()
	cluster := embeddedBrokerFor(t, topics, 1)
	s := &AuditStage{kafka: cluster, log: slog.New(slog.DiscardHandler)}
	tp := topicPartition{topics.Flows, 0}
	old, err := integrity.TopicStream(ctx, cluster, topics.Flows)
	if err != nil {
		t.Fatal(err)
	}
	found := []integrity.ReplayRange{{Status: integrity.RangeVerified}, {Status: integrity.RangeMismatched, Detail: "records were deleted"}}
	if s.recreatedDuring(ctx, tp, old, found) {
		t.Fatal("a finding on the topic's own stream was dropped")
	}
	if s.recreatedDuring(ctx, tp, "no-such-stream", found[:1]) {
		t.Fatal("a round without findings was taken for a recreated topic")
	}

	cl, err := kgo.NewClient(cluster.ClientOpts()...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	if res, err := adm.DeleteTopic(ctx, topics.Flows); err != nil || res.Err != nil {
		t.Fatalf("delete: %v %v", err, res.Err)
	}
	if !s.recreatedDuring(ctx, tp, old, found) {
		t.Fatal("findings on a deleted topic stood")
	}
	if _, err := adm.CreateTopic(ctx, 1, 1, nil, topics.Flows); err != nil {
		t.Fatal(err)
	}
	if !s.recreatedDuring(ctx, tp, old, found) {
		t.Fatal("findings on the old stream of a topic created again stood")
	}
	now, err := integrity.TopicStream(ctx, cluster, topics.Flows)
	if err != nil || now == old {
		t.Fatalf("the recreated topic's stream %q (%v), the old %q", now, err, old)
	}
	if s.recreatedDuring(ctx, tp, now, found) {
		t.Fatal("a finding on the new stream was dropped")
	}
}
