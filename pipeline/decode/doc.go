// Package decode turns Kafka record values into chainwatch's records: flow
// records of the native JSON schema (a fast path, decode_fast.go, and
// encoding/json for the rest), goflow2's JSON (v2, and v1's and goflow's
// CamelCase one) and protobuf, and
// device-signed telemetry envelopes. Every rejection is an *Error whose
// reason goes into the dead-letter record's header; nothing here touches
// Kafka, the ledger or the detector.
//
//   - decode.go: the native schema (README, "Native flow schema");
//   - decode_goflow2.go: goflow2 records (v2 JSON and protobuf, v1 and
//     goflow JSON), and Flow, which takes any;
//   - flowrecord.go: FlowRecord, what every format decodes into, and the
//     window features one flow adds;
//   - telemetry.go: Envelope, its canonical signing bytes and Ed25519
//     signature (README, "Device telemetry").
package decode
