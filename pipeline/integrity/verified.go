package integrity

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/chainwatch/chainwatch/ledgerclient"
	"github.com/chainwatch/chainwatch/pipeline/kafkaconn"
)

// OffsetRange is an inclusive range of one partition's offsets.
type OffsetRange struct {
	Partition   int32
	First, Last int64
}

// HistoryVerifier proves that records are untampered history before a model
// learns from them: it waits until the ranges are anchored, re-reads them
// from Kafka and checks every anchored root, and returns the anchor ids
// that verified — the model's training references on the ledger — and the
// ranges that did not (changed since anchored, or never anchored), which
// training leaves out. An integrity finding never stops a model from
// training on what does verify; an error means verification itself could
// not run (the ledger or Kafka away, anchoring behind).
type HistoryVerifier func(ctx context.Context, ranges []OffsetRange) (verified []string, excluded []OffsetRange, err error)

// NewHistoryVerifier verifies ranges of topic against its anchors, listed
// with the batch index in leafTopic (empty: DefaultLeafTopic), waiting up
// to wait for the anchoring stage to catch up. While it waits for a range
// to be sealed it calls sealSoon (when not nil) every poll, so that an
// anchoring stage in the same process seals what it holds now rather than
// at its period's end.
func NewHistoryVerifier(ledger *ledgerclient.Client, cluster *kafkaconn.Cluster, topic, leafTopic string, wait time.Duration, sealSoon func()) HistoryVerifier {
	return func(ctx context.Context, ranges []OffsetRange) ([]string, []OffsetRange, error) {
		stream, err := TopicStream(ctx, cluster, topic)
		if err != nil {
			return nil, nil, err
		}
		index := NewLeafTopic(cluster, leafTopic)
		defer index.Close()
		x := NewAnchors(ledger, index)
		// Each range (a partition's) is awaited and replayed on its own,
		// up to maxReplays at once: a first model waits for the slowest,
		// and each spends most of its time waiting on Kafka and the
		// ledger.
		deadline := time.Now().Add(wait)
		verdicts := make([][]ReplayRange, len(ranges))
		errs := make([]error, len(ranges))
		var wg sync.WaitGroup
		slots := make(chan struct{}, maxReplays)
		for i, r := range ranges {
			wg.Go(func() {
				slots <- struct{}{}
				defer func() { <-slots }()
				if errs[i] = awaitAnchored(ctx, x, stream, topic, r, deadline, wait, sealSoon); errs[i] != nil {
					return
				}
				verdicts[i], errs[i] = Replay(ctx, ledger, ReplayRequest{Kafka: cluster, Topic: topic, AnchoredAs: stream, Partition: r.Partition, From: r.First, To: r.Last, Anchors: x})
			})
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			return nil, nil, err
		}
		var ids []string
		var excluded []OffsetRange
		for _, vs := range verdicts {
			for _, v := range vs {
				if v.Status != RangeVerified {
					excluded = append(excluded, OffsetRange{Partition: v.Partition, First: v.FirstOffset, Last: v.LastOffset})
					continue
				}
				ids = append(ids, v.AnchorID)
			}
		}
		sort.Strings(ids)
		return ids, excluded, nil
	}
}

// maxReplays is how many ranges a verifier replays at once.
const maxReplays = 8

// anchorPoll is how often a verifier looks again for a range's seal.
const anchorPoll = 50 * time.Millisecond

// awaitAnchored waits until a batch covering r's last offset is sealed, or
// until deadline.
func awaitAnchored(ctx context.Context, x *Anchors, stream, topic string, r OffsetRange, deadline time.Time, wait time.Duration, sealSoon func()) error {
	for {
		covering, err := x.List(ctx, stream, r.Partition, r.Last, r.Last)
		if err != nil {
			return err
		}
		if len(covering) > 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s/%d is not anchored up to offset %d after %s", topic, r.Partition, r.Last, wait)
		}
		if sealSoon != nil {
			sealSoon()
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(anchorPoll):
		}
	}
}
