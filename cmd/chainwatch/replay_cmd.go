package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/chainwatch/chainwatch/ledgerclient"
	"github.com/chainwatch/chainwatch/ledgerclient/contract"
	"github.com/chainwatch/chainwatch/pipeline"
	"github.com/chainwatch/chainwatch/pipeline/integrity"
	"github.com/chainwatch/chainwatch/pipeline/kafkaconn"
	"github.com/chainwatch/chainwatch/pipeline/sinks"
)

// kafkaFor picks --brokers, else kafka.brokers, else the embedded broker
// of a running `chainwatch run`, and checks it answers and takes our
// credentials. kafka.tls and kafka.sasl apply to the first two; the
// embedded broker is plaintext.
func kafkaFor(cmd *cobra.Command, cfg Config, flag []string) (*kafkaconn.Cluster, error) {
	brokers := flag
	if len(brokers) == 0 {
		brokers = cfg.Kafka.Brokers
	}
	if len(brokers) == 0 {
		addr := cfg.Kafka.EmbeddedListen
		if err := reachable(cmd.Context(), addr); err != nil {
			return nil, fmt.Errorf("no Kafka broker answers at %s: start `chainwatch run` (it runs the embedded broker) or set kafka.brokers / --brokers", addr)
		}
		return kafkaconn.Plain(addr), nil
	}
	cluster, err := cfg.Kafka.cluster(brokers, os.Environ())
	if err != nil {
		return nil, err
	}
	if err := cluster.Check(cmd.Context()); err != nil {
		return nil, err
	}
	return cluster, nil
}

// historyAccess is what replay and prove need: the configuration, the topic
// (default topics.flows), live brokers and a ledger client acting as role.
type historyAccess struct {
	cfg    Config
	topic  string
	kafka  *kafkaconn.Cluster
	ledger *ledgerclient.Client
	close  func()
}

func openHistory(cmd *cobra.Command, g *globals, brokerFlag []string, topic string, role contract.Role) (*historyAccess, error) {
	cfg, err := g.load()
	if err != nil {
		return nil, err
	}
	if cfg.Ledger.Backend != "fabric" {
		// The ledger first: without it there is nothing to replay against.
		if err := embeddedLedgerExists(cfg); err != nil {
			return nil, err
		}
	}
	if topic == "" {
		topic = cfg.Topics.Flows
	}
	cluster, err := kafkaFor(cmd, cfg, brokerFlag)
	if err != nil {
		return nil, err
	}
	ledger, closeLedger, err := ledgerAs(cfg, role) // its existence checked above
	if err != nil {
		return nil, err
	}
	return &historyAccess{cfg: cfg, topic: topic, kafka: cluster, ledger: ledger, close: closeLedger}, nil
}

func newReplayCommand(g *globals) *cobra.Command {
	var (
		brokers          []string
		topic, anchored  string
		partition        int
		from, to         int64
		since            string
		verify, noAlerts bool
	)
	cmd := &cobra.Command{
		Use:   "replay --topic T [--from OFFSET | --since TIME] [--to OFFSET] --verify",
		Short: "Re-read a topic's history and prove each anchored range against its root on the ledger",
		Long: `Re-read a topic's records and recompute every anchored range's Merkle root.
Prints one JSON line per range — verified, mismatched or unanchored — and a summary.
A mismatched range raises an integrity alert (ledger, alerts topic, log) and makes
the command exit non-zero. --anchored-as verifies a copy of a topic (a restore, a
mirror) against the original's anchors.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !verify {
				return usagef("replay verifies history; pass --verify")
			}
			h, err := openHistory(cmd, g, brokers, topic, contract.RoleService)
			if err != nil {
				return err
			}
			defer h.close()
			cfg, topic, cluster, ledger, ctx := h.cfg, h.topic, h.kafka, h.ledger, cmd.Context()
			parts, err := partitionsOf(ctx, cluster, topic, partition)
			if err != nil {
				return err
			}
			var sinceTime time.Time
			if since != "" {
				if sinceTime, err = time.Parse(time.RFC3339, since); err != nil {
					return fmt.Errorf("--since: %q is not RFC 3339", since)
				}
			}
			counts := map[integrity.RangeStatus]int{}
			var mismatched []integrity.ReplayRange
			enc := json.NewEncoder(cmd.OutOrStdout())
			for _, p := range parts {
				start := from
				if !sinceTime.IsZero() {
					conn, err := cluster.DialLeader(ctx, topic, p)
					if err != nil {
						return err
					}
					start, err = conn.ReadOffset(sinceTime)
					conn.Close()
					if err != nil {
						return fmt.Errorf("--since on partition %d: %w", p, err)
					}
				}
				ranges, err := integrity.Replay(ctx, ledger, integrity.ReplayRequest{Kafka: cluster, Topic: topic, LeafTopic: cfg.Topics.Leaves, AnchoredAs: anchored, Partition: int32(p), From: start, To: to})
				if err != nil {
					return err
				}
				for _, r := range ranges {
					counts[r.Status]++
					if r.Status == integrity.RangeMismatched {
						mismatched = append(mismatched, r)
					}
					if err := enc.Encode(r); err != nil {
						return err
					}
				}
			}
			if err := enc.Encode(map[string]any{"summary": counts}); err != nil {
				return err
			}
			if len(mismatched) == 0 {
				return nil
			}
			if !noAlerts {
				stream := anchored
				if stream == "" {
					stream = topic
				}
				alerts := make([]contract.Alert, len(mismatched))
				for i, r := range mismatched {
					alerts[i] = integrity.IntegrityAlert(stream, r, time.Now())
				}
				kafkaSink := sinks.NewKafkaAlertSink(cluster, cfg.Topics.Alerts)
				defer kafkaSink.Close()
				for _, s := range []sinks.Sink{sinks.LedgerRecorder{Ledger: ledger}, kafkaSink, sinks.LogSink{Log: newLogger(cfg.LogLevel)}} {
					if err := s.Deliver(ctx, alerts); err != nil {
						return fmt.Errorf("raise integrity alert via %s: %w", s.Name(), err)
					}
				}
			}
			return fmt.Errorf("%d anchored range(s) of %s do not match the ledger: history was changed after it was anchored", len(mismatched), topic)
		},
	}
	f := cmd.Flags()
	f.StringSliceVar(&brokers, "brokers", nil, "Kafka brokers (default: kafka.brokers, else the embedded broker of a running `chainwatch run`)")
	f.StringVar(&topic, "topic", "", "topic to read (default topics.flows)")
	f.StringVar(&anchored, "anchored-as", "", "topic or stream (name@id, as anchor ids show it) whose anchors the topic is checked against (default: the topic itself)")
	f.IntVar(&partition, "partition", -1, "only this partition (default: all)")
	f.Int64Var(&from, "from", 0, "first offset")
	f.StringVar(&since, "since", "", "first record at or after this RFC 3339 time (instead of --from)")
	f.Int64Var(&to, "to", -1, "last offset (default: the newest record)")
	f.BoolVar(&verify, "verify", false, "recompute and check every anchored range (required)")
	f.BoolVar(&noAlerts, "no-alerts", false, "report mismatches without raising integrity alerts")
	return cmd
}

func partitionsOf(ctx context.Context, cluster *kafkaconn.Cluster, topic string, only int) ([]int, error) {
	if only >= 0 {
		return []int{only}, nil
	}
	ps, err := pipeline.TopicPartitions(ctx, cluster, topic)
	if err != nil {
		return nil, err
	}
	out := make([]int, len(ps))
	for i, p := range ps {
		out[i] = int(p)
	}
	return out, nil
}

func newProveCommand(g *globals) *cobra.Command {
	var (
		brokers         []string
		topic, anchored string
		partition       int
		offset          int64
	)
	cmd := &cobra.Command{
		Use:   "prove --topic T --partition P --offset O",
		Short: "Print the inclusion proof of one record against its anchored Merkle root",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			h, err := openHistory(cmd, g, brokers, topic, contract.RoleAnalyst)
			if err != nil {
				return err
			}
			defer h.close()
			proof, err := integrity.Prove(cmd.Context(), h.ledger, h.kafka, h.cfg.Topics.Leaves, h.topic, anchored, int32(partition), offset)
			if err != nil {
				return err
			}
			return writeJSON(cmd.OutOrStdout(), proof)
		},
	}
	f := cmd.Flags()
	f.StringSliceVar(&brokers, "brokers", nil, "Kafka brokers (default as for replay)")
	f.StringVar(&topic, "topic", "", "topic (default topics.flows)")
	f.StringVar(&anchored, "anchored-as", "", "topic or stream (name@id) whose anchors to prove against (default: the topic itself)")
	f.IntVar(&partition, "partition", 0, "partition")
	f.Int64Var(&offset, "offset", 0, "offset of the record")
	return cmd
}

func newVerifyProofCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "verify-proof FILE",
		Short: "Check an inclusion proof from `chainwatch prove` against the anchor on the ledger",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			raw, err := os.ReadFile(args[0])
			if err != nil {
				return err
			}
			var p integrity.RecordProof
			if err := json.Unmarshal(raw, &p); err != nil {
				return fmt.Errorf("%s: %w", args[0], err)
			}
			if err := p.Check(); err != nil {
				return fmt.Errorf("proof does not hold: %w", err)
			}
			cfg, err := g.load()
			if err != nil {
				return err
			}
			ledger, closeLedger, err := ledgerToRead(cfg, contract.RoleAnalyst)
			if err != nil {
				return err
			}
			defer closeLedger()
			if p.Seal != nil {
				// The batch is one of a seal's: the seal's root is what
				// the ledger holds.
				s, err := ledger.GetSeal(cmd.Context(), p.Seal.ID)
				if err != nil {
					return err
				}
				if s.Root != p.Seal.Root || s.Batches != p.Seal.BatchCount {
					return fmt.Errorf("proof does not hold: the ledger seals %s with root %s over %d batches, the proof claims %s over %d",
						s.ID, s.Root, s.Batches, p.Seal.Root, p.Seal.BatchCount)
				}
				return writeJSON(cmd.OutOrStdout(), map[string]any{"verified": true, "anchor_id": p.AnchorID, "seal": s.ID, "anchored_tx": s.TxID,
					"stream": p.Stream, "partition": p.Partition, "offset": p.Offset})
			}
			a, err := ledger.GetAnchor(cmd.Context(), p.AnchorID)
			if err != nil {
				return err
			}
			if a.MerkleRoot != p.MerkleRoot || int(a.Count) != p.LeafCount {
				return fmt.Errorf("proof does not hold: the ledger anchors %s with root %s over %d records, the proof claims %s over %d",
					a.ID, a.MerkleRoot, a.Count, p.MerkleRoot, p.LeafCount)
			}
			return writeJSON(cmd.OutOrStdout(), map[string]any{"verified": true, "anchor_id": a.ID, "anchored_tx": a.TxID, "stream": p.Stream, "partition": p.Partition, "offset": p.Offset})
		},
	}
}
