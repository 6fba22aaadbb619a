package sinks

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the outbox's and every sink queue's, labelled by sink.
type Metrics struct {
	Delivered    *prometheus.CounterVec
	Retries      *prometheus.CounterVec
	DeadLettered *prometheus.CounterVec
	QueueFull    *prometheus.CounterVec
	QueueDepth   *prometheus.GaugeVec
	Latency      *prometheus.HistogramVec
	OutboxDepth  prometheus.Gauge
}

// NewMetrics registers the metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Delivered: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "chainwatch_sink_delivered_total",
			Help: "Alerts a sink accepted."}, []string{"sink"}),
		Retries: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "chainwatch_sink_retries_total",
			Help: "Failed deliveries to a sink that were retried (the sink was down, timed out, or answered 408, 429 or 5xx)."}, []string{"sink"}),
		DeadLettered: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "chainwatch_sink_dead_lettered_total",
			Help: "Alerts a sink refused for good, written to its dead-letter file with the reason."}, []string{"sink"}),
		QueueFull: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "chainwatch_sink_queue_full_total",
			Help: "Times a sink's queue reached its capacity and held the pipeline back."}, []string{"sink"}),
		QueueDepth: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "chainwatch_sink_queue_depth",
			Help: "Alerts waiting for a sink."}, []string{"sink"}),
		Latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "chainwatch_sink_delivery_seconds",
			Help:    "Time a successful delivery to a sink took.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 9)}, []string{"sink"}),
		OutboxDepth: prometheus.NewGauge(prometheus.GaugeOpts{Name: "chainwatch_outbox_depth",
			Help: "Alerts accepted but not yet delivered to every sink."}),
	}
	reg.MustRegister(m.Delivered, m.Retries, m.DeadLettered, m.QueueFull, m.QueueDepth, m.Latency, m.OutboxDepth)
	return m
}
