package sinks

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"

	"github.com/chainwatch/chainwatch/ledgerclient"
	"github.com/chainwatch/chainwatch/ledgerclient/contract"
	"github.com/chainwatch/chainwatch/pipeline/kafkaconn"
)

// Sink delivers alerts somewhere. Deliver must be idempotent on alert
// ids: the outbox retries a failed batch whole, and replays re-raise the
// same ids. An error wrapped with Permanent says the sink refuses the
// alerts for good (an HTTP 4xx other than 408 and 429): they go to the
// sink's dead-letter file instead of being retried.
type Sink interface {
	Name() string
	Deliver(ctx context.Context, alerts []contract.Alert) error
}

// Batcher is a Sink that takes at most BatchSize alerts per Deliver.
type Batcher interface {
	BatchSize() int
}

// PermanentError is a refusal that retrying will not change.
type PermanentError struct{ Err error }

func (e *PermanentError) Error() string { return e.Err.Error() }
func (e *PermanentError) Unwrap() error { return e.Err }

// Permanent marks err as a refusal for good.
func Permanent(err error) error { return &PermanentError{Err: err} }

// LedgerRecorder records alerts on the ledger and fills in each alert's
// transaction id and time, which the later sinks then carry. The contract
// makes recording idempotent: a repeated id returns the first record.
type LedgerRecorder struct {
	Ledger *ledgerclient.Client
	// TxSeconds, if set, observes each transaction's latency by function
	// and result.
	TxSeconds *prometheus.HistogramVec
}

func (LedgerRecorder) Name() string { return "ledger" }

func (l LedgerRecorder) Deliver(ctx context.Context, alerts []contract.Alert) error {
	for i := range alerts {
		start := time.Now()
		rec, err := l.Ledger.RecordAlert(ctx, alerts[i])
		result := "ok"
		if err != nil {
			result = "error"
		}
		if l.TxSeconds != nil {
			l.TxSeconds.WithLabelValues(contract.FnRecordAlert, result).Observe(time.Since(start).Seconds())
		}
		if err != nil {
			return err
		}
		alerts[i].TxID, alerts[i].RecordedAt = rec.TxID, rec.RecordedAt
	}
	return nil
}

// KafkaAlertSink produces alerts as JSON to the alerts topic, keyed by
// device so that one device's alerts stay in order.
type KafkaAlertSink struct {
	Writer *kafka.Writer
}

// NewKafkaAlertSink returns a sink producing to topic on cluster.
func NewKafkaAlertSink(cluster *kafkaconn.Cluster, topic string) *KafkaAlertSink {
	return &KafkaAlertSink{Writer: &kafka.Writer{
		Addr: cluster.Addr(), Transport: cluster.Transport(), Topic: topic, Balancer: &kafka.Hash{},
		RequiredAcks: kafka.RequireAll, BatchTimeout: 5 * time.Millisecond,
	}}
}

func (KafkaAlertSink) Name() string { return "kafka" }

func (k *KafkaAlertSink) Deliver(ctx context.Context, alerts []contract.Alert) error {
	msgs := make([]kafka.Message, len(alerts))
	for i := range alerts {
		v, err := json.Marshal(alerts[i])
		if err != nil {
			return fmt.Errorf("encode alert %s: %w", alerts[i].ID, err)
		}
		msgs[i] = kafka.Message{
			Key: []byte(alerts[i].DeviceID), Value: v,
			Headers: []kafka.Header{{Key: "chainwatch-alert-id", Value: []byte(alerts[i].ID)}, {Key: "chainwatch-alert-kind", Value: []byte(alerts[i].Kind)}},
		}
	}
	return k.Writer.WriteMessages(ctx, msgs...)
}

// Close flushes and closes the writer.
func (k *KafkaAlertSink) Close() error { return k.Writer.Close() }

// LogSink writes each alert to the structured log, where `make run` shows it.
type LogSink struct{ Log *slog.Logger }

func (LogSink) Name() string { return "log" }

func (s LogSink) Deliver(_ context.Context, alerts []contract.Alert) error {
	for _, a := range alerts {
		attrs := []any{"id", a.ID, "kind", a.Kind}
		if a.Incident != nil {
			attrs = append(attrs, "incident", a.Incident.Status, "incident_id", a.Incident.ID, "windows", a.Incident.Windows)
			if a.Incident.OpenedBy != "" {
				attrs = append(attrs, "opened_by", a.Incident.OpenedBy)
			}
		}
		attrs = append(attrs, "device", a.DeviceID, "profile", a.Profile,
			"window", a.WindowStart.Format(time.RFC3339), "until", a.WindowEnd.Format(time.RFC3339),
			"score", fmt.Sprintf("%.3f", a.Score), "confidence", a.Confidence, "tx", a.TxID)
		if len(a.Features) > 0 {
			top := a.Features[0]
			attrs = append(attrs, "top_feature", fmt.Sprintf("%s=%.4g (baseline %.4g)", top.Feature, top.Value, top.Baseline))
		}
		if a.Evidence.Detail != "" {
			attrs = append(attrs, "detail", a.Evidence.Detail)
		}
		s.Log.Warn("ALERT", attrs...)
	}
	return nil
}
