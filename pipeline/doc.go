// Package pipeline owns chainwatch's Kafka stages and the path of a record
// through them:
//
//	iot.flows ──► DetectStage (detect.go) ─ decode/ ─► windows.go ─► barrier.go ─► detector.go ─► incidents/ ─► sinks/ (outbox) ─► ledger, chainwatch.alerts, log, SIEM webhooks
//	          │          ├─ bad record ─► chainwatch.dlq (dlq.go)
//	          │          └─ checkpoints ─► chainwatch.state (statestore.go)
//	          └─► AnchorStage (anchor.go) ─ integrity/ (Merkle roots, kept leaves, seals) ─► ledger seals
//	iot.telemetry ──► TelemetryStage (telemetry_stage.go) ─ decode/ ─► sinks/
//	          └─► AnchorStage
//
// Where to look:
//   - package decode turns raw Kafka values into FlowRecords (native JSON,
//     goflow2) and telemetry Envelopes; registry.go resolves the device;
//   - windows.go groups a device's flows into tumbling event-time windows and
//     closes them at the partition's watermark; assembly.go joins a device's
//     parts from several partitions, and barrier.go holds closed windows
//     until every partition is done with their window index, so that a
//     minute's windows are judged together; models/features computes each
//     closed window's behaviour vector;
//   - detector.go judges closed windows with the profile's behaviour model
//     against each device's own baseline (models/behaviour.go) and hands the
//     verdicts to the device's incident state (package incidents), whose
//     openings, updates and closings become Alerts; it trains the first
//     model, on verified history only (integrity.HistoryVerifier), when
//     none exists;
//   - trust.go groups the identity findings of the detection and telemetry
//     stages (telemetry_stage.go) into one incident per device and episode;
//   - the stages hand alerts to an AlertQueue (service.go), which package
//     sinks implements: a durable outbox with one queue per sink, retries
//     and dead letters; offsets are committed only once every window a
//     record fed has closed, its alerts are in the outbox and the state
//     store holds what the partition's next owner needs (statestore.go);
//   - package integrity re-reads history against the ledger's anchors
//     (replay, proofs, kept leaf hashes, topic identities); audit.go runs
//     it round after round.
//
// The stages consume through franz-go's client (consumer.go), a fetch at a
// time, and produce through segmentio/kafka-go, always over TCP, so the
// embedded broker (broker.go) and a production cluster are interchangeable.
package pipeline
