package pipeline

import (
	"sync"
	"sync/atomic"

	"github.com/chainwatch/chainwatch/pipeline/sinks"
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the pipeline's Prometheus series; the dashboards in
// dashboards/ read them by these names.
type Metrics struct {
	RecordsConsumed  *prometheus.CounterVec   // topic
	RecordsRejected  *prometheus.CounterVec   // topic, reason
	RecordsLate      *prometheus.CounterVec   // topic
	WindowsScored    *prometheus.CounterVec   // profile
	Scores           *prometheus.HistogramVec // profile
	Alerts           *prometheus.CounterVec   // kind, severity, confidence
	AnomalousWindows *prometheus.CounterVec   // profile
	WindowsUnscored  *prometheus.CounterVec   // profile, reason
	Incidents        *prometheus.CounterVec   // kind, status, severity
	FleetAbsorbed    *prometheus.CounterVec   // profile
	Anchors          *prometheus.CounterVec   // topic
	AnchoredRecords  *prometheus.CounterVec   // topic
	AuditedRecords   *prometheus.CounterVec   // topic, result (verified, mismatched, expired)
	AuditRounds      prometheus.Counter
	AuditLastRound   prometheus.Gauge         // Unix seconds
	IntegrityFinds   *prometheus.CounterVec   // topic
	StageLatency     *prometheus.HistogramVec // stage
	ConsumerLag      *prometheus.GaugeVec     // group, topic, partition
	TrackedDevices   prometheus.Gauge
	SplitDevices     prometheus.Gauge
	OpenWindows      prometheus.Gauge
	ModelInfo        *prometheus.GaugeVec   // profile, hash, algorithm
	ModelThreshold   *prometheus.GaugeVec   // profile
	ModelExpected    *prometheus.GaugeVec   // profile
	ModelCreated     *prometheus.GaugeVec   // profile
	FeatureDrift     *prometheus.GaugeVec   // profile, feature
	TopDevices       *prometheus.GaugeVec   // rank, device, profile
	DeviceScore      *prometheus.GaugeVec   // device, profile (watched devices only)
	DeviceFeature    *prometheus.GaugeVec   // device, feature (watched devices only)
	DeviceBaseline   *prometheus.GaugeVec   // device, feature (watched devices only)
	DeviceAlerts     *prometheus.GaugeVec   // device, kind (watched devices only)
	WarmupWindows    *prometheus.GaugeVec   // profile
	WindowsHeld      *prometheus.GaugeVec   // profile
	TrainingExcluded *prometheus.CounterVec // profile
	ModelsRefused    *prometheus.CounterVec // profile
	// Sinks are the outbox's and the sink queues' metrics.
	Sinks    *sinks.Metrics
	LedgerTx *prometheus.HistogramVec // function, result

	// Summary mirrors the totals for the --duration summary line.
	Summary Summary
}

// Summary is the one-line run summary: plain counters, no labels.
type Summary struct {
	RecordsConsumed atomic.Int64
	RecordsRejected atomic.Int64
	WindowsScored   atomic.Int64
	// WindowsHeld are windows waiting for their profile's first model.
	WindowsHeld    atomic.Int64
	AnchorsWritten atomic.Int64
	// RecordsAudited are anchored records the continuous audit re-read
	// and found matching their anchor.
	RecordsAudited atomic.Int64
	mu             sync.Mutex
	alertsByKind   map[string]int64
}

// AddAlert counts an alert of kind.
func (s *Summary) AddAlert(kind string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.alertsByKind == nil {
		s.alertsByKind = map[string]int64{}
	}
	s.alertsByKind[kind]++
}

// AlertsByKind returns a copy of the alert counts.
func (s *Summary) AlertsByKind() map[string]int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]int64, len(s.alertsByKind))
	for k, v := range s.alertsByKind {
		out[k] = v
	}
	return out
}

// NewMetrics creates the series and registers them with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		RecordsConsumed: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "chainwatch_records_consumed_total", Help: "Records read from Kafka by the detection stage."}, []string{"topic"}),
		RecordsRejected: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "chainwatch_records_rejected_total", Help: "Records sent to the dead-letter topic."}, []string{"topic", "reason"}),
		RecordsLate:     prometheus.NewCounterVec(prometheus.CounterOpts{Name: "chainwatch_records_late_total", Help: "Records that arrived after their window closed (kept in Kafka and anchored, not scored)."}, []string{"topic"}),
		WindowsScored:   prometheus.NewCounterVec(prometheus.CounterOpts{Name: "chainwatch_windows_scored_total", Help: "Device windows scored by a model."}, []string{"profile"}),
		Scores: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "chainwatch_anomaly_score", Help: "Scores L/(1 + L) of judged device windows (L: the window's anomaly level).",
			Buckets: []float64{0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.9, 1}}, []string{"profile"}),
		Alerts: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "chainwatch_alerts_total", Help: "Alerts raised, by kind, severity and confidence."}, []string{"kind", "severity", "confidence"}),
		AnomalousWindows: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "chainwatch_anomalous_windows_total",
			Help: "Windows judged anomalous against their device's baseline and profile model, whether or not they opened an incident."}, []string{"profile"}),
		WindowsUnscored: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "chainwatch_windows_unscored_total",
			Help: "Closed windows not scored, by reason (model_refused: the ledger's active model is of another feature schema)."}, []string{"profile", "reason"}),
		Incidents: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "chainwatch_incident_events_total",
			Help: "Incident events (opened, updated, closed) by alert kind and severity."}, []string{"kind", "status", "severity"}),
		FleetAbsorbed: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "chainwatch_fleet_absorbed_incidents_total",
			Help: "Device incidents grouped into their profile's fleet episode (most of the profile raised at once) instead of reported one by one."}, []string{"profile"}),
		Anchors:         prometheus.NewCounterVec(prometheus.CounterOpts{Name: "chainwatch_anchors_total", Help: "Batches anchored on the ledger."}, []string{"topic"}),
		AnchoredRecords: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "chainwatch_anchored_records_total", Help: "Records covered by ledger anchors."}, []string{"topic"}),
		AuditedRecords: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "chainwatch_audited_records_total",
			Help: "Anchored records re-read by the continuous audit, by whether their range still matched its anchor."}, []string{"topic", "result"}),
		AuditRounds: prometheus.NewCounter(prometheus.CounterOpts{Name: "chainwatch_audit_rounds_total", Help: "Rounds of the continuous audit completed."}),
		AuditLastRound: prometheus.NewGauge(prometheus.GaugeOpts{Name: "chainwatch_audit_last_round_timestamp_seconds",
			Help: "When the continuous audit last completed a round (Unix seconds)."}),
		IntegrityFinds: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "chainwatch_integrity_findings_total",
			Help: "Anchored ranges the audit found no longer matching their anchor."}, []string{"topic"}),
		StageLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "chainwatch_stage_latency_seconds", Help: "Latency of pipeline steps.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 10)}, []string{"stage"}),
		ConsumerLag:    prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "chainwatch_consumer_lag", Help: "Records between a group's position and the partition's high-water mark."}, []string{"group", "topic", "partition"}),
		TrackedDevices: prometheus.NewGauge(prometheus.GaugeOpts{Name: "chainwatch_tracked_devices", Help: "Devices with state in this instance."}),
		SplitDevices: prometheus.NewGauge(prometheus.GaugeOpts{Name: "chainwatch_devices_on_several_partitions",
			Help: "Devices of this instance whose flows arrive on more than one partition (records not keyed by device; a few are the victims of scans and lateral movement, whose reply legs travel with the attacker's records)."}),
		OpenWindows:    prometheus.NewGauge(prometheus.GaugeOpts{Name: "chainwatch_open_windows", Help: "Device windows not yet closed."}),
		ModelInfo:      prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "chainwatch_model_info", Help: "The active model of each profile (value 1)."}, []string{"profile", "hash", "algorithm"}),
		ModelThreshold: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "chainwatch_model_threshold", Help: "Alert threshold (score) of each profile's active model."}, []string{"profile"}),
		ModelExpected: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "chainwatch_model_expected_false_incidents_per_1000_device_hours",
			Help: "False incidents per 1,000 device-hours each profile's active model is to be expected to give on traffic like its training's, the error of its fitted tails counted: near the budget (detector.false_alerts_per_1000_device_hours) when it was trained on enough history, several times it on a short warm-up of a small fleet."}, []string{"profile"}),
		ModelCreated: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "chainwatch_model_created_timestamp_seconds",
			Help: "When each profile's active model was trained (Unix seconds)."}, []string{"profile"}),
		FeatureDrift: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "chainwatch_feature_drift_psi",
			Help: "Population stability index of a profile's recent live windows (500 sampled from 2,000) against its model's training data, per feature (0.1: moderate, 0.25: significant shift)."}, []string{"profile", "feature"}),
		TopDevices: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "chainwatch_top_anomalous_device_score",
			Help: "Peak score of the 10 devices with the highest-scoring anomalous windows in the last 15 minutes, by rank."}, []string{"rank", "device", "profile"}),
		DeviceScore: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "chainwatch_device_score",
			Help: "Latest window score of each watched device (an anomalous window in the last 15 minutes; at most 100 devices)."}, []string{"device", "profile"}),
		DeviceFeature: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "chainwatch_device_feature_value",
			Help: "The features that drove a watched device's latest window, in their own units."}, []string{"device", "feature"}),
		DeviceBaseline: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "chainwatch_device_feature_baseline",
			Help: "A watched device's own baseline of the features in chainwatch_device_feature_value."}, []string{"device", "feature"}),
		DeviceAlerts: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "chainwatch_device_alerts",
			Help: "Alerts raised for a watched device since it has been watched, by kind."}, []string{"device", "kind"}),
		WarmupWindows: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "chainwatch_warmup_windows", Help: "Windows collected for a profile's first model."}, []string{"profile"}),
		WindowsHeld:   prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "chainwatch_windows_held", Help: "Windows past a profile's warm-up span waiting for its first model to be verified and trained; scored once it is."}, []string{"profile"}),
		ModelsRefused: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "chainwatch_models_refused_total",
			Help: "Promoted models not swapped in: artifact missing, altered since registration, or of another feature schema (the current model keeps scoring)."}, []string{"profile"}),
		TrainingExcluded: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "chainwatch_training_windows_excluded_total",
			Help: "Warm-up windows left out of a first model's training because their records no longer match their anchors (or were never anchored)."}, []string{"profile"}),
		Sinks: sinks.NewMetrics(reg),
		LedgerTx: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "chainwatch_ledger_tx_seconds", Help: "Ledger transaction latency.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 4, 8)}, []string{"function", "result"}),
	}
	reg.MustRegister(m.RecordsConsumed, m.RecordsRejected, m.RecordsLate, m.WindowsScored, m.Scores, m.Alerts, m.AnomalousWindows, m.WindowsUnscored, m.Incidents, m.FleetAbsorbed,
		m.Anchors, m.AnchoredRecords, m.AuditedRecords, m.AuditRounds, m.AuditLastRound, m.IntegrityFinds, m.StageLatency, m.ConsumerLag, m.TrackedDevices, m.SplitDevices, m.OpenWindows,
		m.ModelInfo, m.ModelThreshold, m.ModelExpected, m.ModelCreated, m.FeatureDrift, m.TopDevices,
		m.DeviceScore, m.DeviceFeature, m.DeviceBaseline, m.DeviceAlerts, m.WarmupWindows, m.WindowsHeld, m.TrainingExcluded, m.ModelsRefused, m.LedgerTx)
	return m
}
