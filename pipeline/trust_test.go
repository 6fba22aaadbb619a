package pipeline

import (
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/chainwatch/chainwatch/ledgerclient/contract"
	"github.com/chainwatch/chainwatch/pipeline/incidents"
)

// An episode is saved first by the stage that opened it, once that stage's
// outbox holds the opening (its snapshot, then saved); only then may the
// other stage save it as it extends it. A closed episode is saved as a
// tombstone by the stage its closing was handed to, and a restore brings
// back only what is still open, on the restoring stage's partitions.
func TestTrustEpisodesSavedOnlyOnceTheirOpeningIsOut(t *testing.T) {
	a := newTrustAlerts(time.Minute, incidents.Rule{M: 2}, nil)
	t0 := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	flows := kafka.Message{Topic: "iot.flows", Partition: 3, Offset: 10}
	telemetry := kafka.Message{Topic: "iot.telemetry", Partition: 1, Offset: 5}
	if a.raise(finderFlows, contract.AlertRogueDevice, "ip:10.0.0.9", "", t0, flows, "unknown") == nil {
		t.Fatal("first finding opened nothing")
	}
	// The telemetry stage extends it before the flow stage saved it.
	if a.raise(finderTelemetry, contract.AlertRogueDevice, "ip:10.0.0.9", "", t0.Add(time.Minute), telemetry, "unknown") != nil {
		t.Fatal("a finding of an open episode raised an alert")
	}
	if snap := a.snapshot(finderTelemetry); len(snap.records) != 0 {
		t.Fatalf("telemetry stage saves an episode whose opening the flow stage has not sent: %v", snap.records)
	}
	snap := a.snapshot(finderFlows)
	key := trustKey(contract.AlertRogueDevice, "ip:10.0.0.9")
	rec := snap.records[key]
	if rec == nil || rec.ID == "" || rec.Windows != 2 || rec.Opener != finderFlows || rec.Evidence.Partition != 3 {
		t.Fatalf("flow stage's snapshot: %+v", rec)
	}
	a.saved(finderFlows, snap)
	if snap := a.snapshot(finderFlows); len(snap.records) != 0 {
		t.Fatalf("saved twice: %v", snap.records)
	}
	if snap := a.snapshot(finderTelemetry); snap.records[key] == nil {
		t.Fatal("the telemetry stage does not save the extension once the opening is out")
	}

	// Restored on another instance: only on the flows partition it came from.
	recs := map[string]*trustRecord{key: rec}
	b := newTrustAlerts(time.Minute, incidents.Rule{M: 2}, nil)
	if n := b.assigned(recs, "iot.flows", []topicPartition{{"iot.flows", 0}}, true); n != 0 {
		t.Fatalf("restored %d episodes of a partition not assigned", n)
	}
	if n := b.assigned(recs, "iot.flows", []topicPartition{{"iot.flows", 3}}, false); n != 1 {
		t.Fatalf("restored %d episodes of the assigned partition, want 1", n)
	}
	// A finding after the restart extends it: no second opening.
	if al := b.raise(finderFlows, contract.AlertRogueDevice, "ip:10.0.0.9", "", t0.Add(2*time.Minute), flows, "unknown"); al != nil {
		t.Fatalf("restored episode opened again: %+v", al.Incident)
	}
	// Quiet for longer than m windows on both stages: it closes once, with
	// the id it opened with, and the closing stage saves a tombstone.
	var closed []*contract.Alert
	closed = b.expire(finderFlows, t0.Add(10*time.Minute), closed)
	closed = b.expire(finderTelemetry, t0.Add(10*time.Minute), closed)
	if len(closed) != 1 || closed[0].Incident.ID != rec.ID || closed[0].Incident.Status != contract.IncidentClosed {
		t.Fatalf("closings %v, want one of %s", closed, rec.ID)
	}
	snap = b.snapshot(finderTelemetry)
	if r, ok := snap.records[key]; !ok || r != nil {
		t.Fatalf("closing stage's snapshot %v, want a tombstone", snap.records)
	}
}
