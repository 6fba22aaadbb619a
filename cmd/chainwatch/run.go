package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"

	"github.com/chainwatch/chainwatch/ledgerclient/contract"
	"github.com/chainwatch/chainwatch/ledgerclient/embedded"
	"github.com/chainwatch/chainwatch/pipeline"
	"github.com/chainwatch/chainwatch/pipeline/kafkaconn"
	"github.com/chainwatch/chainwatch/pipeline/sinks"
	"github.com/chainwatch/chainwatch/simulator"
)

func newRunCommand(g *globals) *cobra.Command {
	var duration time.Duration
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Run the detection service (embedded broker, ledger and simulated fleet unless configured otherwise)",
		Long: `Run the detection service.

With no configuration it starts the embedded default: an in-process Kafka-protocol
broker on 127.0.0.1:9092 whose log persists under the data directory, the embedded
ledger, a simulated device fleet and the pipeline. Setting kafka.brokers uses a real
cluster instead and switches the embedded broker and the simulator off.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := g.load()
			if err != nil {
				return err
			}
			summary, err := runService(cmd.Context(), cfg, duration, newLogger(cfg.LogLevel))
			if err != nil {
				return err
			}
			if duration > 0 {
				return json.NewEncoder(cmd.OutOrStdout()).Encode(summary)
			}
			return nil
		},
	}
	cmd.Flags().DurationVar(&duration, "duration", 0, "stop after this long and print a one-line JSON summary (default: run until SIGINT/SIGTERM)")
	return cmd
}

// RunSummary is the one-line JSON `run --duration` prints.
type RunSummary struct {
	Duration         string           `json:"duration"`
	RecordsConsumed  int64            `json:"records_consumed"`
	RecordsRejected  int64            `json:"records_rejected"`
	WindowsScored    int64            `json:"windows_scored"`
	Alerts           int64            `json:"alerts"`
	AlertsByKind     map[string]int64 `json:"alerts_by_kind"`
	AnchorsWritten   int64            `json:"anchors_written"`
	RecordsAudited   int64            `json:"records_audited"`
	SimulatedRecords int64            `json:"simulated_records,omitempty"`
	SimulatedAttacks int              `json:"simulated_attacks,omitempty"`
}

// runService assembles and runs everything `chainwatch run` starts, until
// ctx ends, duration passes (if positive) or a stage fails.
func runService(ctx context.Context, cfg Config, duration time.Duration, log *slog.Logger) (RunSummary, error) {
	started := time.Now()
	if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
		return RunSummary{}, fmt.Errorf("data_dir: %w", err)
	}
	if duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, duration)
		defer cancel()
	}
	if cfg.Profiling.PyroscopeServer != "" {
		stop, err := startProfiling(cfg.Profiling, os.Environ(), log)
		if err != nil {
			return RunSummary{}, err
		}
		defer stop()
	}

	var (
		cluster        *kafkaconn.Cluster
		embeddedBroker *pipeline.EmbeddedBroker
	)
	if len(cfg.Kafka.Brokers) > 0 {
		c, err := cfg.Kafka.cluster(cfg.Kafka.Brokers, os.Environ())
		if err != nil {
			return RunSummary{}, err
		}
		cluster = c
		if cfg.Kafka.TLS.InsecureSkipVerify {
			log.Warn("kafka.tls.insecure_skip_verify is set: broker certificates are not checked; use it only in tests")
		}
		if cfg.Kafka.SASL.On() && cfg.Kafka.SASL.Mechanism == kafkaconn.MechanismPlain && !cfg.Kafka.TLS.On() {
			log.Warn("kafka.sasl.mechanism PLAIN without kafka.tls sends the password in clear text")
		}
		if err := cluster.Check(ctx); err != nil {
			return RunSummary{}, err
		}
		log.Info("kafka cluster reached", "brokers", cluster.Brokers(), "security", cluster.Secured(), "sasl_user", cluster.Username())
	} else {
		b, err := pipeline.StartEmbeddedBroker(pipeline.BrokerConfig{
			Listen: cfg.Kafka.EmbeddedListen, DataDir: filepath.Join(cfg.DataDir, "broker"),
			Partitions: cfg.Kafka.Partitions, Topics: cfg.Topics.All(), RetentionBytes: max(cfg.Kafka.EmbeddedRetentionBytes, 0),
		}, log)
		if err != nil {
			return RunSummary{}, fmt.Errorf("kafka.embedded_listen: %w", err)
		}
		defer b.Close()
		cluster, embeddedBroker = kafkaconn.Plain(b.Addr()), b
	}

	ledgers, err := openLedgers(cfg)
	if err != nil {
		return RunSummary{}, err
	}
	defer ledgers.close()
	service := ledgers.service

	remote, err := cfg.Alerts.buildSinks(os.Environ())
	if err != nil {
		return RunSummary{}, err
	}
	for _, w := range cfg.Alerts.Webhooks {
		log.Info("alert sink configured", "sink", w.Name, "format", w.Format, "min_severity", w.MinSeverity, "kinds", w.Kinds)
	}
	token, err := apiToken(cfg.Alerts.API.TokenFile)
	if err != nil {
		return RunSummary{}, err
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	svc := pipeline.NewService(pipeline.ServiceConfig{
		Kafka: cluster, Topics: cfg.Topics, Partitions: cfg.Kafka.Partitions, Replication: cfg.Kafka.Replication,
		Detect:   pipeline.DetectConfig{GroupID: cfg.Kafka.GroupID, Window: cfg.Window},
		Detector: cfg.Detector,
		Anchor:   pipeline.AnchorConfig{GroupID: cfg.Kafka.AnchorGroupID, BatchRecords: cfg.Anchor.BatchRecords, BatchAge: cfg.Anchor.BatchAge, Period: cfg.Anchor.Period},
		Audit:    pipeline.AuditConfig{Interval: cfg.Audit.Interval, RecordsPerRound: cfg.Audit.RecordsPerRound},
		ModelDir: filepath.Join(cfg.DataDir, "models"), OutboxPath: filepath.Join(cfg.DataDir, "outbox.db"),
		Outbox: sinks.OutboxConfig{Capacity: cfg.Alerts.QueueCapacity, MaxBackoff: cfg.Alerts.MaxBackoff, DeadLetterDir: filepath.Join(cfg.DataDir, "dead-letters")},
		Sinks:  remote,
	}, service, reg, log)
	api := newAlertsAPI(ledgers.analyst, token, reg, log)

	httpDone, err := serveOperations(cfg.HTTP.Listen, reg, svc, ledgers.gateway, api, log)
	if err != nil {
		return RunSummary{}, err
	}
	defer httpDone()

	// The fleet's birth certificates go on the ledger before the pipeline
	// loads its registry, so its first records are not taken for rogues.
	var sim *simulator.Simulator
	if *cfg.Simulator.Enabled {
		simCfg := simulatorConfig(cfg, cluster)
		simCfg.Resume = true
		if embeddedBroker != nil {
			simCfg.Forger = embeddedBroker // the history-tamper scenario plays a compromised broker
		}
		sim, err = simulator.New(simCfg, log.With("component", "simulator"))
		if err != nil {
			return RunSummary{}, fmt.Errorf("simulator.%w", err)
		}
		err := sim.Register(ctx, ledgers.manufacturer, ledgers.operator)
		switch {
		case errors.Is(err, contract.ErrForbidden):
			// On Fabric the identity's role is the network's to give.
			log.Warn("simulated fleet not registered: this ledger identity may not register devices or approve firmware; "+
				"its devices will raise rogue-device alerts until a manufacturer registers them", "err", err)
		case err != nil:
			return RunSummary{}, err
		}
	}
	if err := svc.Start(ctx); err != nil {
		return RunSummary{}, err
	}

	var simStats simulator.Stats
	simDone := make(chan error, 1)
	if sim != nil {
		go func() {
			st, err := sim.Run(ctx)
			simStats = st
			simDone <- err
		}()
	} else {
		close(simDone)
	}

	var runErr error
	select {
	case <-ctx.Done():
		log.Info("shutting down", "reason", context.Cause(ctx))
	case <-svc.Done():
		runErr = svc.Err()
	}
	if err, ok := <-simDone; ok && err != nil && runErr == nil {
		runErr = err
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := svc.Shutdown(shutdownCtx); err != nil && runErr == nil {
		runErr = fmt.Errorf("shutdown: %w", err)
	}
	s := &svc.Metrics().Summary
	byKind := s.AlertsByKind()
	var total int64
	for _, n := range byKind {
		total += n
	}
	return RunSummary{
		Duration:        time.Since(started).Round(time.Millisecond).String(),
		RecordsConsumed: s.RecordsConsumed.Load(), RecordsRejected: s.RecordsRejected.Load(),
		WindowsScored: s.WindowsScored.Load(), Alerts: total, AlertsByKind: byKind,
		AnchorsWritten: s.AnchorsWritten.Load(), RecordsAudited: s.RecordsAudited.Load(),
		SimulatedRecords: simStats.Records, SimulatedAttacks: simStats.Attacks,
	}, runErr
}

func simulatorConfig(cfg Config, cluster *kafkaconn.Cluster) simulator.Config {
	return simulator.Config{
		Kafka: cluster, Topic: cfg.Topics.Flows, Devices: cfg.Simulator.Devices, Seed: cfg.Simulator.Seed,
		Speed: cfg.Simulator.Speed, History: cfg.Simulator.History,
		FirstAttackAfter: cfg.Simulator.FirstAttackAfter, AttackEvery: cfg.Simulator.AttackEvery,
		FirstTrustAfter: cfg.Simulator.FirstTrustAfter, TrustEvery: cfg.Simulator.TrustEvery,
		TelemetryTopic: cfg.Topics.Telemetry, LeafTopic: cfg.Topics.Leaves, GroundTruth: cfg.Simulator.GroundTruth,
	}
}

// serveOperations starts /metrics, /healthz and /readyz, and the embedded
// ledger's gateway (when there is one) when listening on loopback only. It
// returns a function that stops the server.
func serveOperations(listen string, reg *prometheus.Registry, svc *pipeline.Service, ledgerGateway http.Handler, api *alertsAPI, log *slog.Logger) (func(), error) {
	if listen == "off" {
		return func() {}, nil
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !svc.Ready() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		if bad := svc.Unscorable(); len(bad) > 0 {
			// Running, but part of the fleet goes unwatched: say which.
			w.WriteHeader(http.StatusServiceUnavailable)
			for _, profile := range slices.Sorted(maps.Keys(bad)) {
				fmt.Fprintf(w, "profile %s: windows not scored: %s\n", profile, bad[profile])
			}
			return
		}
		fmt.Fprintln(w, "ready")
	})
	api.register(mux)
	host, _, _ := net.SplitHostPort(listen)
	if ip := net.ParseIP(host); ledgerGateway != nil && (host == "localhost" || ip != nil && ip.IsLoopback()) {
		mux.Handle(embedded.GatewayPath, ledgerGateway)
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, fmt.Errorf("http.listen: %w", err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("operations endpoint stopped", "err", err)
		}
	}()
	log.Info("operations endpoint listening", "addr", ln.Addr().String(), "paths", "/metrics /healthz /readyz /api/v1/alerts")
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	}, nil
}
