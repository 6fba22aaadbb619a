package pipeline

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"runtime/pprof"
	"strconv"

	"github.com/twmb/franz-go/pkg/kfake"
)

// EmbeddedBroker is the in-process Kafka-protocol broker of the embedded
// default (franz-go's kfake). It listens on a real TCP port and persists its
// log under a directory, so history survives restarts and can be replayed;
// the stages reach it over the wire like any cluster.
type EmbeddedBroker struct {
	cluster *kfake.Cluster
	addr    string
}

// BrokerConfig configures the embedded broker. The zero value listens on
// 127.0.0.1:9092 without persistence.
type BrokerConfig struct {
	// Listen is host:port; port 0 picks a free one. Default 127.0.0.1:9092.
	Listen string
	// DataDir persists the log; empty keeps it in memory.
	DataDir string
	// Partitions for topics created at start. Default 4.
	Partitions int
	// Topics to create at start.
	Topics []string
}

// StartEmbeddedBroker starts the broker.
func StartEmbeddedBroker(cfg BrokerConfig, log *slog.Logger) (*EmbeddedBroker, error) {
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:9092"
	}
	if cfg.Partitions == 0 {
		cfg.Partitions = 4
	}
	host, portStr, err := net.SplitHostPort(cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("embedded broker: listen address %q: %w", cfg.Listen, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("embedded broker: listen port %q: %w", portStr, err)
	}
	opts := []kfake.Opt{
		kfake.NumBrokers(1),
		kfake.Ports(port),
		kfake.ListenFn(func(network, _ string) (net.Listener, error) {
			return net.Listen(network, net.JoinHostPort(host, strconv.Itoa(port)))
		}),
		kfake.AllowAutoTopicCreation(),
		kfake.DefaultNumPartitions(cfg.Partitions),
	}
	if len(cfg.Topics) > 0 {
		opts = append(opts, kfake.SeedTopics(int32(cfg.Partitions), cfg.Topics...))
	}
	if cfg.DataDir != "" {
		opts = append(opts, kfake.DataDir(cfg.DataDir))
	}
	// Created under the profiler label component=broker, which its
	// goroutines inherit, so profiles tell the embedded broker's CPU from
	// the service's.
	var c *kfake.Cluster
	pprof.Do(context.Background(), pprof.Labels("component", "broker"), func(context.Context) {
		c, err = kfake.NewCluster(opts...)
	})
	if err != nil {
		return nil, fmt.Errorf("embedded broker on %s: %w", cfg.Listen, err)
	}
	b := &EmbeddedBroker{cluster: c, addr: c.ListenAddrs()[0]}
	log.Info("embedded Kafka broker started", "addr", b.addr, "data_dir", cfg.DataDir, "partitions", cfg.Partitions)
	return b, nil
}

// Addr is the broker's host:port.
func (b *EmbeddedBroker) Addr() string { return b.addr }

// Close stops the broker, flushing its log to disk.
func (b *EmbeddedBroker) Close() { b.cluster.Close() }
