// Package pipeline owns chainwatch's Kafka stages and the path of a record
// through them:
//
//		iot.flows ──► DetectStage ─ decode.go ─► windows.go ─► detector.go ─► sinks ─► chainwatch.alerts, ledger, log
//		          │                     └─ bad record ─► chainwatch.dlq (dlq.go)
//		          └─► AnchorStage ─ merkle.go ─► ledger anchors (anchor.go)
//
//	  - decode.go turns raw Kafka values into FlowRecords (native JSON schema);
//	  - windows.go groups a device's flows into tumbling event-time windows and
//	    closes them at the partition's watermark;
//	  - models/features computes each closed window's behaviour vector;
//	  - detector.go scores it with the profile's model and turns a score above
//	    the calibrated threshold into an Alert (warmup.go trains the first
//	    model when none exists);
//	  - sinks deliver alerts; offsets are committed only once every window
//	    that a record fed has been closed and its alerts accepted.
//
// The stages speak to Kafka only through segmentio/kafka-go over TCP, so the
// embedded broker (broker.go) and a production cluster are interchangeable.
package pipeline
