// Package sinks delivers alerts: the durable outbox the stages hand their
// alerts to (outbox.go), one queue per sink over it with retries, jitter,
// backpressure and a dead-letter file (the same file), the built-in sinks
// — the ledger, the alerts topic, the log (sink.go) — and the SOC's tools
// (webhook.go): signed JSON, Splunk HEC and ECS over HTTP (http.go), CEF
// over syslog (syslog.go) and Prometheus Alertmanager. Every format carries
// the same content (payload.go).
//
// The pipeline reaches it through one small interface, pipeline.AlertQueue
// (Add returns once the alerts are durable); nothing here knows about
// Kafka consumers, windows or models.
package sinks
