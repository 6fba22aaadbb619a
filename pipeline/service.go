package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/chainwatch/chainwatch/ledgerclient"
	"github.com/chainwatch/chainwatch/ledgerclient/contract"
	"github.com/chainwatch/chainwatch/pipeline/integrity"
	"github.com/chainwatch/chainwatch/pipeline/kafkaconn"
	"github.com/chainwatch/chainwatch/pipeline/sinks"
)

// ServiceConfig configures the whole pipeline. Zero values are defaults.
type ServiceConfig struct {
	Kafka  *kafkaconn.Cluster
	Topics Topics
	// Partitions and Replication are used only for topics chainwatch has to
	// create. Defaults 4 and 1.
	Partitions  int
	Replication int
	Detect      DetectConfig
	Detector    DetectorConfig
	Anchor      AnchorConfig
	Telemetry   TelemetryConfig
	Audit       AuditConfig
	// ModelDir holds model artifacts named by hash.
	ModelDir string
	// OutboxPath is the file of the durable alert outbox. Required.
	OutboxPath string
	// Outbox sets the sink queues' capacity and retry backoff; its Path
	// is OutboxPath.
	Outbox sinks.OutboxConfig
	// Sinks are remote sinks (SIEM webhooks, syslog, Alertmanager) that
	// receive every alert after the ledger, each through its own queue.
	Sinks []sinks.Sink
}

// AlertQueue is how the stages hand their alerts over for delivery: Add
// returns once the alerts are durable (pipeline/sinks.Outbox).
type AlertQueue interface {
	Add(ctx context.Context, alerts []contract.Alert) ([]contract.Alert, error)
}

// Service runs the detection and anchoring stages against a Kafka cluster
// and a ledger.
type Service struct {
	cfg     ServiceConfig
	ledger  *ledgerclient.Client
	metrics *Metrics
	log     *slog.Logger

	detect    *DetectStage
	anchor    *AnchorStage
	telemetry *TelemetryStage
	audit     *AuditStage
	outbox    *sinks.Outbox
	outboxRun context.CancelFunc
	sinks     []sinks.Sink
	dlq       *DeadLetter
	state     *StateStore
	// modelTopic carries artifacts between the group's instances.
	modelTopic *ModelTopic
	detector   *Detector
	cancel     context.CancelFunc
	ready      atomic.Bool
}

// NewService prepares a service; Start runs it.
func NewService(cfg ServiceConfig, ledger *ledgerclient.Client, reg prometheus.Registerer, log *slog.Logger) *Service {
	if cfg.Partitions == 0 {
		cfg.Partitions = 4
	}
	if cfg.Replication == 0 {
		cfg.Replication = 1
	}
	cfg.Topics = cfg.Topics.WithDefaults()
	return &Service{cfg: cfg, ledger: ledger, metrics: NewMetrics(reg), log: log}
}

// Metrics exposes the service's metrics and run summary.
func (s *Service) Metrics() *Metrics { return s.metrics }

// Ready reports whether both stages are running.
func (s *Service) Ready() bool { return s.ready.Load() }

// ModelHash is the hash of the profile's model this instance scores with,
// or "" while it has none.
func (s *Service) ModelHash(profile string) string {
	if s.detector == nil {
		return ""
	}
	if m := s.detector.Model(profile); m != nil {
		return m.Hash()
	}
	return ""
}

// Unscorable lists the profiles whose windows go unscored because their
// active model is refused or cannot be found, with the reason.
func (s *Service) Unscorable() map[string]string {
	if s.detector == nil {
		return nil
	}
	return s.detector.Unscorable()
}

// Start creates missing topics, loads the device registry and starts the
// detection, anchoring and telemetry stages. It fails fast, naming the broker, when Kafka is unreachable.
func (s *Service) Start(ctx context.Context) error {
	if err := s.cfg.Detector.Validate(); err != nil {
		return fmt.Errorf("detector.%w", err)
	}
	if s.cfg.OutboxPath == "" {
		return errors.New("pipeline: no outbox path")
	}
	ensureCtx, cancelEnsure := context.WithTimeout(ctx, 15*time.Second)
	err := EnsureTopics(ensureCtx, s.cfg.Kafka, s.cfg.Partitions, s.cfg.Replication, s.cfg.Topics.All()...)
	if err == nil {
		err = EnsureStateTopic(ensureCtx, s.cfg.Kafka, s.cfg.Replication, s.cfg.Topics.State)
	}
	if err == nil {
		err = EnsureStateTopic(ensureCtx, s.cfg.Kafka, s.cfg.Replication, s.cfg.Topics.Models)
	}
	if err == nil {
		err = EnsureStateTopic(ensureCtx, s.cfg.Kafka, s.cfg.Replication, s.cfg.Topics.Leaves)
	}
	cancelEnsure()
	if err != nil {
		return err
	}
	runCtx, cancel := context.WithCancel(ctx)
	s.cancel = cancel
	registry, err := NewRegistry(runCtx, s.ledger, s.log)
	if err != nil {
		cancel()
		return err
	}
	s.modelTopic = NewModelTopic(s.cfg.Kafka, s.cfg.Topics.Models)
	store := &ModelStore{Dir: s.cfg.ModelDir, Ledger: s.ledger, Share: s.modelTopic}
	// The warm-up's newest records sit in the anchoring stage's open
	// batches until the period's seal: while the verifier waits for them,
	// it asks for them to be sealed now.
	verifier := integrity.NewHistoryVerifier(s.ledger, s.cfg.Kafka, s.cfg.Topics.Flows, s.cfg.Topics.Leaves, 2*time.Minute,
		func() {
			if s.anchor != nil {
				s.anchor.SealSoon()
			}
		})
	detectorCfg := s.cfg.Detector
	detectorCfg.WindowSize = s.cfg.Detect.Window.WithDefaults().Size
	detector := NewDetector(detectorCfg, store, verifier, s.cfg.Topics.Flows, s.metrics, s.log)
	s.detector = detector
	kafkaSink := sinks.NewKafkaAlertSink(s.cfg.Kafka, s.cfg.Topics.Alerts)
	s.sinks = append([]sinks.Sink{sinks.LedgerRecorder{Ledger: s.ledger, TxSeconds: s.metrics.LedgerTx}, kafkaSink, sinks.LogSink{Log: s.log}}, s.cfg.Sinks...)
	s.dlq = NewDeadLetter(s.cfg.Kafka, s.cfg.Topics.DeadLetter)
	outboxCfg := s.cfg.Outbox
	outboxCfg.Path = s.cfg.OutboxPath
	outboxCfg.OnAdded = func(a contract.Alert) {
		severity := sinks.Severity(a)
		s.metrics.Alerts.WithLabelValues(a.Kind, severity, a.Confidence).Inc()
		if a.Incident != nil {
			s.metrics.Incidents.WithLabelValues(a.Kind, a.Incident.Status, severity).Inc()
		}
		s.metrics.Summary.AddAlert(a.Kind)
		detector.watch.alert(a.DeviceID, a.Kind)
	}
	if s.outbox, err = sinks.OpenOutbox(outboxCfg, s.sinks, s.metrics.Sinks, s.log); err != nil {
		cancel()
		return err
	}
	if err := s.outbox.ReconcileKafka(ctx, s.cfg.Kafka, s.cfg.Topics.Alerts, kafkaSink.Name()); err != nil {
		cancel()
		return fmt.Errorf("outbox: reconcile with %s: %w", s.cfg.Topics.Alerts, err)
	}
	// The deliverer outlives the stages a little at shutdown, to drain.
	outboxCtx, stopOutbox := context.WithCancel(context.WithoutCancel(ctx))
	s.outboxRun = stopOutbox
	go s.outbox.Run(outboxCtx)

	detectCfg := s.cfg.Detect
	detectCfg.Kafka, detectCfg.Topics = s.cfg.Kafka, s.cfg.Topics
	s.state = NewStateStore(s.cfg.Kafka, s.cfg.Topics.State)
	// One tracker of trust incidents for both stages that find them.
	trust := newTrustAlerts(detectCfg.Window.WithDefaults().Size, detectorCfg.Incident, s.metrics)
	// Its open episodes come back before either stage reads a record, so
	// that neither opens again an episode the other would have restored;
	// each stage keeps those of the partitions it is assigned.
	st, err := s.state.loadRetrying(ctx, s.cfg.Topics.Flows, s.log)
	if err != nil {
		cancel()
		return fmt.Errorf("state store: %w", err)
	}
	trust.restore(st.trust, func(string, int32) bool { return true })
	s.detect = NewDetectStage(detectCfg, registry, detector, trust, s.outbox, s.state, s.dlq, s.metrics, s.log)
	anchorCfg := s.cfg.Anchor
	anchorCfg.Kafka = s.cfg.Kafka
	s.anchor = NewAnchorStage(anchorCfg, s.cfg.Topics, s.ledger, s.metrics, s.log)
	if err := s.detect.Start(runCtx); err != nil {
		cancel()
		return err
	}
	if err := s.anchor.Start(runCtx); err != nil {
		cancel()
		return err
	}
	telemetryCfg := s.cfg.Telemetry
	telemetryCfg.Kafka, telemetryCfg.Topics = s.cfg.Kafka, s.cfg.Topics
	if telemetryCfg.Window == 0 {
		telemetryCfg.Window = detectCfg.Window.WithDefaults().Size
	}
	s.telemetry = NewTelemetryStage(telemetryCfg,
		registry, trust, s.outbox, s.state, s.dlq, s.metrics, s.log)
	if err := s.telemetry.Start(runCtx); err != nil {
		cancel()
		return err
	}
	s.audit = NewAuditStage(s.cfg.Audit, s.cfg.Kafka, s.cfg.Topics.Leaves, s.ledger, s.outbox, s.anchor.Owned, s.metrics, s.log)
	if err := s.audit.Start(runCtx); err != nil {
		cancel()
		return err
	}
	if poll := detectorCfg.WithDefaults().ModelPoll; poll > 0 {
		go func() {
			t := time.NewTicker(poll)
			defer t.Stop()
			for {
				select {
				case <-runCtx.Done():
					return
				case <-t.C:
					detector.Refresh(runCtx)
				}
			}
		}()
	}
	s.ready.Store(true)
	s.log.Info("pipeline started", "brokers", s.cfg.Kafka.Brokers(), "kafka_security", s.cfg.Kafka.Secured(), "flows", s.cfg.Topics.Flows, "devices_registered", registry.Len())
	return nil
}

// Done is closed when any stage stops on its own (an error).
func (s *Service) Done() <-chan struct{} {
	ch := make(chan struct{})
	go func() {
		select {
		case <-s.detect.Done():
		case <-s.anchor.Done():
		case <-s.telemetry.Done():
		}
		close(ch)
	}()
	return ch
}

// Err is the first stage error, if any.
func (s *Service) Err() error {
	select {
	case <-s.detect.Done():
		if err := s.detect.Err(); err != nil {
			return err
		}
	default:
	}
	select {
	case <-s.anchor.Done():
		if err := s.anchor.Err(); err != nil {
			return err
		}
	default:
	}
	select {
	case <-s.telemetry.Done():
		return s.telemetry.Err()
	default:
	}
	return nil
}

// Shutdown stops both stages, commits what was fully processed and closes
// the writers.
func (s *Service) Shutdown(ctx context.Context) error {
	s.ready.Store(false)
	if s.cancel == nil {
		return nil // not started, or already shut down
	}
	s.cancel()
	s.cancel = nil
	var errs []error
	if s.detect != nil {
		errs = append(errs, s.detect.Shutdown(ctx))
	}
	if s.anchor != nil {
		errs = append(errs, s.anchor.Shutdown(ctx))
	}
	if s.telemetry != nil {
		errs = append(errs, s.telemetry.Shutdown(ctx))
	}
	if s.audit != nil {
		errs = append(errs, s.audit.Shutdown(ctx))
	}
	if s.outbox != nil {
		// Give queued alerts a moment to reach the sinks; whatever is left
		// stays on disk and goes out after the next start.
		drain, stop := context.WithTimeout(ctx, 5*time.Second)
		for s.outbox.Pending() > 0 && drain.Err() == nil {
			time.Sleep(20 * time.Millisecond)
		}
		stop()
		s.outboxRun()
		s.outbox.Wait()
		errs = append(errs, s.outbox.Close())
	}
	for _, sink := range s.sinks {
		if c, ok := sink.(interface{ Close() error }); ok {
			errs = append(errs, c.Close())
		}
	}
	if s.modelTopic != nil {
		errs = append(errs, s.modelTopic.Close())
	}
	if s.state != nil {
		errs = append(errs, s.state.Close())
	}
	if s.dlq != nil {
		errs = append(errs, s.dlq.Close())
	}
	return errors.Join(errs...)
}
