package pipeline

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/chainwatch/chainwatch/pipeline/kafkaconn"
)

// TestLargeWritesFitTheBroker: a checkpoint of thousands of devices (about
// 750 bytes each, 3.75 MB in all, on the state topic's one partition) and a
// model artifact of several chunks are written and read back whole from a
// broker with Kafka's default message.max.bytes. With batches allowed past
// it, both writes were refused as too large, every time: a fleet of more
// than about 1,300 devices never checkpointed, so its offsets were never
// committed.
func TestLargeWritesFitTheBroker(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	topics := Topics{}.WithDefaults()
	cluster := embeddedBrokerFor(t, topics, 4)
	if err := EnsureStateTopic(ctx, cluster, 1, topics.State); err != nil {
		t.Fatal(err)
	}

	const devices = 5000
	histories := map[string][]byte{}
	for i := range devices {
		h := make([]byte, 750)
		for j := range h {
			h[j] = byte(i*7 + j*13)
		}
		histories[fmt.Sprintf("device-%05d", i)] = h
	}
	st := NewStateStore(cluster, topics.State)
	defer st.Close()
	if err := st.Save(ctx, topics.Flows, histories, map[int]partitionCheckpoint{0: {Processed: 41, Watermark: 7}}); err != nil {
		t.Fatalf("checkpoint of %d devices: %v", devices, err)
	}
	got, err := st.Load(ctx, topics.Flows)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.histories) != devices || got.checkpoints[0].Processed != 41 {
		t.Fatalf("read back %d device checkpoints and partition 0 at %d, want %d and 41", len(got.histories), got.checkpoints[0].Processed, devices)
	}
	for id, h := range histories {
		if !bytes.Equal(got.histories[id], h) {
			t.Fatalf("%s read back differs", id)
		}
	}

	if err := EnsureStateTopic(ctx, cluster, 1, topics.Models); err != nil {
		t.Fatal(err)
	}
	mt := NewModelTopic(cluster, topics.Models)
	defer mt.Close()
	artifact := make([]byte, 3*ModelChunkBytes+1234) // four chunks
	for i := range artifact {
		artifact[i] = byte(i * 31)
	}
	if err := mt.Put(ctx, "cafe", artifact); err != nil {
		t.Fatalf("model of %d bytes: %v", len(artifact), err)
	}
	back, err := mt.Get(ctx, "cafe")
	if err != nil || !bytes.Equal(back, artifact) {
		t.Fatalf("model read back: %d bytes, err %v", len(back), err)
	}
}

// TestFleetStatesRoundTripTheStateStore: fleet episode states saved for one
// flows topic are read back, the newest of each profile, and not for
// another flows topic.
func TestFleetStatesRoundTripTheStateStore(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	topics := Topics{}.WithDefaults()
	cluster := embeddedBrokerFor(t, topics, 1)
	if err := EnsureStateTopic(ctx, cluster, 1, topics.State); err != nil {
		t.Fatal(err)
	}
	st := NewStateStore(cluster, topics.State)
	defer st.Close()
	var f fleetJudge
	f.dir[0], f.n, f.novel = 2.5, 3, 1
	old, _ := f.MarshalBinary()
	f.n = 4
	newer, _ := f.MarshalBinary()
	if err := st.SaveFleets(ctx, topics.Flows, map[string][]byte{"camera": old, "meter": old}); err != nil {
		t.Fatal(err)
	}
	if err := st.SaveFleets(ctx, topics.Flows, map[string][]byte{"camera": newer}); err != nil {
		t.Fatal(err)
	}
	if err := st.SaveFleets(ctx, "other.flows", map[string][]byte{"plc": newer}); err != nil {
		t.Fatal(err)
	}
	got, err := st.Load(ctx, topics.Flows)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.fleets) != 2 || !bytes.Equal(got.fleets["camera"], newer) || !bytes.Equal(got.fleets["meter"], old) {
		t.Fatalf("read back %d fleet states: %v", len(got.fleets), got.fleets)
	}
	var g fleetJudge
	if err := g.UnmarshalBinary(got.fleets["camera"]); err != nil || g.dir[0] != 2.5 || g.n != 4 || g.novel != 1 {
		t.Fatalf("restored %+v, %v", g, err)
	}
}

// embeddedBrokerFor starts an embedded broker with topics' topics of
// partitions partitions, closed when the test ends.
func embeddedBrokerFor(t *testing.T, topics Topics, partitions int) *kafkaconn.Cluster {
	t.Helper()
	broker, err := StartEmbeddedBroker(BrokerConfig{Listen: "127.0.0.1:0", Topics: topics.All(), Partitions: partitions}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { broker.Close() })
	return kafkaconn.Plain(broker.Addr())
}
