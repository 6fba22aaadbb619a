package pipeline_test

import (
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/chainwatch/chainwatch/ledgerclient"
	"github.com/chainwatch/chainwatch/ledgerclient/contract"
	"github.com/chainwatch/chainwatch/ledgerclient/embedded"
	"github.com/chainwatch/chainwatch/pipeline"
	"github.com/chainwatch/chainwatch/pipeline/kafkaconn"
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
