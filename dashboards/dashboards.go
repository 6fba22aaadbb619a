// Package dashboards builds chainwatch's Grafana dashboards with the
// Grafana Foundation SDK, so that panels are typed Go rather than edited
// JSON; `make dashboards` writes them to this folder as JSON (the files
// Grafana provisions, see deploy/grafana), and a test fails when the
// checked-in JSON is not what the code builds. It is a Go module of its own
// so the SDK stays out of the service's dependencies.
//
// Every expression reads a metric the service exports (pipeline/metrics.go,
// pipeline/sinks/metrics.go) or a recording rule of
// deploy/prometheus/rules/chainwatch-recording.yml; the service's
// integration test runs each one against a real Prometheus scraping a
// running service and fails if any errors or returns no series.
package dashboards

import (
	"encoding/json"

	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/common"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
	"github.com/grafana/grafana-foundation-sdk/go/prometheus"
	"github.com/grafana/grafana-foundation-sdk/go/stat"
	"github.com/grafana/grafana-foundation-sdk/go/table"
	"github.com/grafana/grafana-foundation-sdk/go/timeseries"
)

// ds is the Prometheus data source, chosen by the dashboard's datasource
// variable.
var ds = common.DataSourceRef{Type: cog.ToPtr("prometheus"), Uid: cog.ToPtr("${datasource}")}

func query(expr, legend string) *prometheus.DataqueryBuilder {
	return prometheus.NewDataqueryBuilder().Expr(expr).LegendFormat(legend).Datasource(ds)
}

func instant(expr string) *prometheus.DataqueryBuilder {
	return prometheus.NewDataqueryBuilder().Expr(expr).Instant().Format(prometheus.PromQueryFormatTable).Datasource(ds)
}

func series(title, description, unit string, width uint32, qs ...*prometheus.DataqueryBuilder) *timeseries.PanelBuilder {
	p := timeseries.NewPanelBuilder().Title(title).Description(description).Unit(unit).Datasource(ds).Height(8).Span(width).
		Legend(common.NewVizLegendOptionsBuilder().ShowLegend(true).DisplayMode(common.LegendDisplayModeList).Placement(common.LegendPlacementBottom)).
		Tooltip(common.NewVizTooltipOptionsBuilder().Mode(common.TooltipDisplayModeMulti).Sort(common.SortOrderDescending))
	for i, q := range qs {
		p.WithTarget(q.RefId(string(rune('A' + i))))
	}
	return p
}

func single(title, description, unit string, width uint32, q *prometheus.DataqueryBuilder) *stat.PanelBuilder {
	return stat.NewPanelBuilder().Title(title).Description(description).Unit(unit).Datasource(ds).Height(5).Span(width).WithTarget(q.RefId("A"))
}

func grid(title, description string, width uint32, q *prometheus.DataqueryBuilder) *table.PanelBuilder {
	return table.NewPanelBuilder().Title(title).Description(description).Datasource(ds).Height(8).Span(width).WithTarget(q.RefId("A"))
}

func base(uid, title, description string) *dashboard.DashboardBuilder {
	return dashboard.NewDashboardBuilder(title).
		Uid(uid).Description(description).Tags([]string{"chainwatch"}).
		Refresh("30s").Time("now-6h", "now").Timezone(common.TimeZoneBrowser).
		Tooltip(dashboard.DashboardCursorSyncCrosshair).
		WithVariable(dashboard.NewDatasourceVariableBuilder("datasource").Label("Prometheus").Type("prometheus")).
		Link(dashboard.NewDashboardLinkBuilder("chainwatch").Type(dashboard.DashboardLinkTypeDashboards).Tags([]string{"chainwatch"}).AsDropdown(true))
}

func variable(name, label, q string) *dashboard.QueryVariableBuilder {
	return dashboard.NewQueryVariableBuilder(name).Label(label).
		Query(dashboard.StringOrMap{String: cog.ToPtr(q)}).Datasource(ds).
		Refresh(dashboard.VariableRefreshOnTimeRangeChanged).Sort(dashboard.VariableSortAlphabeticalAsc)
}

// deviceLink opens the device drill-down for the device in a table row.
var deviceLink = dashboard.NewDashboardLinkBuilder("device drill-down").Type(dashboard.DashboardLinkTypeLink).
	Url("/d/chainwatch-device?var-device=${__data.fields.device}")

// SOCOverview is what the SOC watches: alerts and incidents, the devices
// scoring highest now, rogue and revoked devices, integrity findings and
// what analysts decided.
func SOCOverview() *dashboard.DashboardBuilder {
	return base("chainwatch-soc", "chainwatch · SOC overview", "Alerts, incidents, the most anomalous devices, rogue and revoked devices, integrity findings and analysts' verdicts.").
		WithPanel(series("Alerts by severity", "Alerts raised per second, by severity (recording rule chainwatch:alerts:rate5m).", "reqps", 12,
			query(`sum by (severity) (chainwatch:alerts:rate5m)`, "{{severity}}"))).
		WithPanel(series("Incidents opened by kind", "Incidents opened per second, by kind (recording rule chainwatch:incidents_opened:rate5m).", "reqps", 12,
			query(`sum by (kind) (chainwatch:incidents_opened:rate5m)`, "{{kind}}"))).
		WithPanel(grid("Top anomalous devices", "The devices with the highest-scoring anomalous windows in the last 15 minutes (score L/(1+L)); a row opens the device's drill-down.", 12,
			instant(`sort_desc(chainwatch_top_anomalous_device_score)`)).DataLinks([]cog.Builder[dashboard.DashboardLink]{deviceLink})).
		WithPanel(single("Rogue and revoked devices", "Rogue-device and revoked-device alerts in the dashboard's time range.", "short", 6,
			query(`sum by (kind) (increase(chainwatch_alerts_total{kind=~"rogue-device|revoked-device"}[$__range]))`, "{{kind}}"))).
		WithPanel(single("Integrity findings", "Anchored ranges found changed since they were anchored, in the time range (a non-zero value is a critical finding).", "short", 6,
			query(`sum(increase(chainwatch_integrity_findings_total[$__range]))`, "findings"))).
		WithPanel(series("Alerts by kind", "Alerts raised per second, by kind.", "reqps", 12,
			query(`sum by (kind) (chainwatch:alerts:rate5m)`, "{{kind}}"))).
		WithPanel(single("Verdict mix", "Analysts' verdicts recorded through the alerts API, by verdict.", "short", 12,
			query(`sum by (verdict) (chainwatch_verdicts_total)`, "{{verdict}}")))
}

// Device is the drill-down of one watched device (a device with an
// anomalous window in the last 15 minutes: per-device series exist only
// for those, at most 100, to keep the series bounded).
func Device() *dashboard.DashboardBuilder {
	return base("chainwatch-device", "chainwatch · device", "One watched device: its window scores against its profile's threshold, the features that drove its latest window against its own baseline, and its alerts.").
		WithVariable(variable("device", "Device", `label_values(chainwatch_device_score, device)`)).
		WithPanel(series("Score against threshold", "The device's window scores, and the alert threshold of its profile's active model.", "percentunit", 24,
			query(`max by (device) (chainwatch_device_score{device="$device"})`, "score"),
			query(`max by (profile) (chainwatch_model_threshold and on (profile) chainwatch_device_score{device="$device"})`, "threshold ({{profile}})"))).
		WithPanel(series("Features against baseline", "The features that drove the device's latest window, and the device's own baseline of each.", "short", 12,
			query(`chainwatch_device_feature_value{device="$device"}`, "{{feature}}"),
			query(`chainwatch_device_feature_baseline{device="$device"}`, "{{feature}} baseline"))).
		WithPanel(grid("Its alerts", "Alerts raised for the device since it has been watched, by kind.", 12,
			instant(`chainwatch_device_alerts{device="$device"}`)))
}

// Pipeline is for whoever runs the service: throughput, lag, latency,
// dead letters and the alert queues.
func Pipeline() *dashboard.DashboardBuilder {
	return base("chainwatch-pipeline", "chainwatch · pipeline health", "Throughput, consumer lag per partition, stage latency, dead letters, the outbox and every sink's queue.").
		WithPanel(series("Records consumed", "Records read per second by the detection stage, per topic, and those that came after their window had closed (kept in Kafka and anchored, not scored: window.allowed_lateness).", "reqps", 12,
			query(`sum by (topic) (chainwatch:records_consumed:rate1m)`, "{{topic}}"),
			query(`sum by (topic) (rate(chainwatch_records_late_total[$__rate_interval]))`, "{{topic}} too late for their window"))).
		WithPanel(series("Consumer lag per partition", "Records between each group's position and the partition's end.", "short", 12,
			query(`chainwatch_consumer_lag`, "{{group}} {{topic}}/{{partition}}"))).
		WithPanel(series("Stage latency (p99)", "99th percentile of each pipeline step's latency (recording rule).", "s", 12,
			query(`chainwatch:stage_latency_seconds:p99`, "{{stage}}"))).
		WithPanel(series("Dead letters", "Records sent to the dead-letter topic per second, by reason.", "reqps", 12,
			query(`sum by (reason) (rate(chainwatch_records_rejected_total[$__rate_interval]))`, "{{reason}}"))).
		WithPanel(series("Outbox and sink queues", "Alerts waiting in the outbox, and for each sink.", "short", 12,
			query(`chainwatch_outbox_depth`, "outbox"),
			query(`chainwatch_sink_queue_depth`, "{{sink}}"))).
		WithPanel(series("Sink deliveries", "Alerts delivered, retried and dead-lettered per second, per sink.", "reqps", 12,
			query(`sum by (sink) (rate(chainwatch_sink_delivered_total[$__rate_interval]))`, "{{sink}} delivered"),
			query(`sum by (sink) (rate(chainwatch_sink_retries_total[$__rate_interval]))`, "{{sink}} retried"),
			query(`sum by (sink) (rate(chainwatch_sink_dead_lettered_total[$__rate_interval]))`, "{{sink}} dead-lettered"))).
		WithPanel(series("Windows scored", "Device windows judged per second, per profile.", "reqps", 12,
			query(`sum by (profile) (rate(chainwatch_windows_scored_total[$__rate_interval]))`, "{{profile}}"))).
		WithPanel(series("Tracked devices and open windows", "Devices with state in each instance, and windows not yet closed.", "short", 12,
			query(`chainwatch_tracked_devices`, "devices {{instance}}"),
			query(`chainwatch_open_windows`, "open windows {{instance}}")))
}

// Models shows each profile's active model, how the live traffic drifts
// from its training data, and the score distributions.
func Models() *dashboard.DashboardBuilder {
	return base("chainwatch-models", "chainwatch · models", "The active model per profile, its age and threshold, the false incidents it is expected to give, feature drift (population stability index) and score distributions.").
		WithPanel(grid("Active models", "The active model of each profile: hash and algorithm.", 12,
			instant(`chainwatch_model_info`))).
		WithPanel(grid("Model age and threshold", "Hours since each active model was trained, and its alert threshold.", 12,
			instant(`(time() - chainwatch_model_created_timestamp_seconds) / 3600`))).
		WithPanel(grid("Expected false incidents", "False incidents per 1,000 device-hours each active model is to be expected to give, the error of its fitted thresholds counted: near the budget (detector.false_alerts_per_1000_device_hours, default 1) once trained on enough history; several times it after a short warm-up of a small fleet — promote a model retrained on more history.", 12,
			instant(`chainwatch_model_expected_false_incidents_per_1000_device_hours`))).
		WithPanel(series("Drift per profile", "Largest population stability index of any feature, per profile (0.1: moderate shift, 0.25: significant).", "short", 12,
			query(`max by (profile) (chainwatch_feature_drift_psi)`, "{{profile}}"))).
		WithPanel(grid("Most drifted features", "The ten features whose live distribution moved most from training.", 12,
			instant(`topk(10, chainwatch_feature_drift_psi)`))).
		WithPanel(series("Score distribution", "Median and 99th percentile of window scores per profile (recording rules).", "percentunit", 12,
			query(`chainwatch:anomaly_score:p50`, "{{profile}} p50"),
			query(`chainwatch:anomaly_score:p99`, "{{profile}} p99"))).
		WithPanel(series("Anomalous windows", "Windows judged anomalous per second, per profile.", "reqps", 12,
			query(`sum by (profile) (rate(chainwatch_anomalous_windows_total[$__rate_interval]))`, "{{profile}}")))
}

// Ledger shows anchoring, the continuous audit and the ledger's latency.
func Ledger() *dashboard.DashboardBuilder {
	return base("chainwatch-ledger", "chainwatch · ledger", "Anchors written, audit coverage and progress, integrity findings and ledger transaction latency.").
		WithPanel(series("Anchors", "Batches anchored on the ledger per second, per topic.", "reqps", 12,
			query(`sum by (topic) (rate(chainwatch_anchors_total[$__rate_interval]))`, "{{topic}}"))).
		WithPanel(series("Anchored records", "Records covered by anchors per second, per topic.", "reqps", 12,
			query(`sum by (topic) (rate(chainwatch_anchored_records_total[$__rate_interval]))`, "{{topic}}"))).
		WithPanel(series("Audit coverage", "Anchored records re-read and re-verified per second, by result.", "reqps", 12,
			query(`sum by (topic, result) (rate(chainwatch_audited_records_total[$__rate_interval]))`, "{{topic}} {{result}}"))).
		WithPanel(single("Since the last audit round", "Seconds since the continuous audit last completed a round.", "s", 6,
			query(`time() - max(chainwatch_audit_last_round_timestamp_seconds)`, "seconds"))).
		WithPanel(single("Integrity findings", "Anchored ranges found changed, in the time range.", "short", 6,
			query(`sum(increase(chainwatch_integrity_findings_total[$__range]))`, "findings"))).
		WithPanel(series("Ledger transaction latency (p99)", "99th percentile of ledger transaction latency, per contract function.", "s", 24,
			query(`histogram_quantile(0.99, sum by (function, le) (rate(chainwatch_ledger_tx_seconds_bucket[$__rate_interval])))`, "{{function}}")))
}

// All maps each dashboard's file name to its builder.
func All() map[string]*dashboard.DashboardBuilder {
	return map[string]*dashboard.DashboardBuilder{
		"soc-overview.json": SOCOverview(),
		"device.json":       Device(),
		"pipeline.json":     Pipeline(),
		"models.json":       Models(),
		"ledger.json":       Ledger(),
	}
}

// Render builds a dashboard as the JSON Grafana imports.
func Render(b *dashboard.DashboardBuilder) ([]byte, error) {
	d, err := b.Build()
	if err != nil {
		return nil, err
	}
	out, err := json.MarshalIndent(d, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(out, '\n'), nil
}
