package pipeline_test

import (
	"context"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/chainwatch/chainwatch/ledgerclient/contract"
	"github.com/chainwatch/chainwatch/models/features"
	"github.com/chainwatch/chainwatch/pipeline"
	"github.com/chainwatch/chainwatch/pipeline/decode"
)

// Verified history of records not keyed by device is read as the service
// scores it: one window per device and minute, holding every flow of the
// device's minute from all the partitions they were spread over, and
// naming the other partitions' records. Read a partition at a time, as
// before, each partition gave a quarter-window of its own.
func TestHistoryOfRecordsNotKeyedIsReadWhole(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a service")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	// The harness's trainer service has read and anchored three hours of
	// round-robin traffic on train.flows.
	g := newGroupHarness(t, ctx, &kafka.RoundRobin{})
	topic := "train.flows"
	reg, err := pipeline.SnapshotRegistry(ctx, g.env.as(contract.RoleAnalyst))
	if err != nil {
		t.Fatal(err)
	}
	since, until := g.start.Add(-2*time.Hour), g.start.Add(-time.Hour)

	// What each device sent in each minute of the period, from the topic.
	type key struct {
		device string
		start  time.Time
	}
	want := map[key]int{}
	for p := range 4 {
		end := countPartition(t, g.env.brokers[0], topic, p)
		r := kafka.NewReader(kafka.ReaderConfig{Brokers: g.env.brokers, Topic: topic, Partition: p, MaxWait: 50 * time.Millisecond})
		var rec decode.FlowRecord
		for off := int64(0); off < end; off++ {
			m, err := r.ReadMessage(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if decode.Flow(m.Value, &rec) != nil {
				continue
			}
			start := rec.Time.Truncate(time.Minute)
			if dev := reg.Resolve(&rec); dev != nil && !start.Before(since) && start.Before(until) {
				want[key{dev.ID, start}]++
			}
		}
		r.Close()
	}

	got := map[key]int{}
	joined := 0
	rep, err := pipeline.ReadHistory(ctx, pipeline.HistoryRequest{Kafka: g.env.kafka, Ledger: g.env.as(contract.RoleAnalyst), Registry: reg,
		Topic: topic, Since: since, Until: until}, func(w *pipeline.HistoryWindow) error {
		k := key{w.Device, w.Start}
		if _, again := got[k]; again {
			t.Fatalf("%s at %s read twice", w.Device, w.Start.Format("15:04"))
		}
		got[k] = int(w.Vector[features.Flows])
		if len(w.Others) > 0 {
			joined++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d windows, %d of them joined from several partitions, %d excluded", rep.Windows, joined, rep.ExcludedWindows)
	if rep.ExcludedWindows > 0 || joined < rep.Windows/2 {
		t.Fatalf("%d windows excluded, %d of %d joined: the records were keyed after all, or did not verify", rep.ExcludedWindows, joined, rep.Windows)
	}
	for k, n := range want {
		if got[k] != n {
			t.Errorf("%s at %s: %d flows read back, %d in the topic", k.device, k.start.Format("15:04"), got[k], n)
		}
	}
	if len(got) != len(want) {
		t.Errorf("%d windows read back, %d device-minutes in the topic", len(got), len(want))
	}
}
