package pipeline_test

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/chainwatch/chainwatch/ledgerclient"
	"github.com/chainwatch/chainwatch/ledgerclient/contract"
	"github.com/chainwatch/chainwatch/ledgerclient/embedded"
	"github.com/chainwatch/chainwatch/pipeline"
	"github.com/chainwatch/chainwatch/pipeline/integrity"
	"github.com/chainwatch/chainwatch/pipeline/kafkaconn"
	"github.com/chainwatch/chainwatch/simulator"
)

func testLogger(t *testing.T) *slog.Logger { return testLoggerB(t) }

func testLoggerB(testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// embeddedDefault is the embedded default of `chainwatch run` for a test: a
// kfake broker on a free loopback port and an embedded ledger in a temporary
// directory, both closed when the test ends.
type embeddedDefault struct {
	dir     string
	brokers []string
	kafka   *kafkaconn.Cluster
	topics  pipeline.Topics
	broker  *pipeline.EmbeddedBroker
	ledger  *embedded.Ledger
}

func startEmbeddedDefault(t *testing.T, partitions int) *embeddedDefault {
	return startEmbeddedDefaultB(t, partitions)
}

func startEmbeddedDefaultB(t testing.TB, partitions int) *embeddedDefault {
	t.Helper()
	e := &embeddedDefault{dir: t.TempDir(), topics: pipeline.Topics{}.WithDefaults()}
	broker, err := pipeline.StartEmbeddedBroker(pipeline.BrokerConfig{Listen: "127.0.0.1:0", Topics: e.topics.All(), Partitions: partitions}, testLoggerB(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(broker.Close)
	e.broker, e.brokers, e.kafka = broker, []string{broker.Addr()}, kafkaconn.Plain(broker.Addr())
	e.ledger, err = embedded.Open(filepath.Join(e.dir, "ledger"), embedded.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.ledger.Close() })
	return e
}

// as is a ledger client acting in role.
func (e *embeddedDefault) as(role contract.Role) *ledgerclient.Client {
	return ledgerclient.New(e.ledger.Client(embedded.LocalCaller(role)))
}

// anchors reads what is anchored, as role: seals on the ledger, with the
// batch index in the leaf topic.
func (e *embeddedDefault) anchors(t testing.TB, role contract.Role) *integrity.Anchors {
	index := integrity.NewLeafTopic(e.kafka, e.topics.WithDefaults().Leaves)
	t.Cleanup(func() { index.Close() })
	return integrity.NewAnchors(e.as(role), index)
}

// flowStream is the stream the flows topic's anchors are written under.
func flowStream(t testing.TB, ctx context.Context, e *embeddedDefault) string {
	t.Helper()
	s, err := integrity.TopicStream(ctx, e.kafka, e.topics.Flows)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// waitAnchored waits until every partition of the flows topic is anchored
// up to its newest record.
func waitAnchored(t testing.TB, ctx context.Context, e *embeddedDefault, partitions int) {
	t.Helper()
	stream := flowStream(t, ctx, e)
	ledger := e.anchors(t, contract.RoleAnalyst)
	for p := range partitions {
		end := countPartition(t, e.brokers[0], e.topics.Flows, p)
		for end > 0 {
			as, err := ledger.List(ctx, stream, int32(p), end-1, end-1)
			if err != nil {
				t.Fatal(err)
			}
			if len(as) > 0 {
				break
			}
			if ctx.Err() != nil {
				t.Fatalf("%s/%d never anchored up to offset %d", stream, p, end-1)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// simulate registers a simulated fleet on the harness's ledger and produces
// its traffic as fast as possible (cfg.Kafka and cfg.Speed are set here).
func (e *embeddedDefault) simulate(t testing.TB, ctx context.Context, cfg simulator.Config) simulator.Stats {
	t.Helper()
	cfg.Kafka, cfg.Speed = e.kafka, -1
	sim, err := simulator.New(cfg, testLoggerB(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := sim.Register(ctx, e.as(contract.RoleManufacturer), e.as(contract.RoleOperator)); err != nil {
		t.Fatal(err)
	}
	st, err := sim.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// startService starts the whole service on the harness as the service
// identity, its model directory and outbox in the harness's directory and
// the rest as cfg sets it; it is shut down when the test ends.
func (e *embeddedDefault) startService(t *testing.T, ctx context.Context, cfg pipeline.ServiceConfig) *pipeline.Service {
	t.Helper()
	cfg.Kafka = e.kafka
	cfg.ModelDir, cfg.OutboxPath = filepath.Join(e.dir, "models"), filepath.Join(e.dir, "outbox.db")
	svc := pipeline.NewService(cfg, e.as(contract.RoleService), prometheus.NewRegistry(), testLogger(t))
	if err := svc.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Shutdown(context.Background()) })
	return svc
}
