package pipeline_test

import (
	"context"
	"encoding/csv"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/segmentio/kafka-go"

	"github.com/chainwatch/chainwatch/ledgerclient"
	"github.com/chainwatch/chainwatch/ledgerclient/contract"
	"github.com/chainwatch/chainwatch/pipeline"
	"github.com/chainwatch/chainwatch/simulator"
)

type groundTruth struct {
	device, scenario string
	start, end       time.Time
}

func readGroundTruth(t *testing.T, path string) []groundTruth {
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rows, err := csv.NewReader(f).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	var out []groundTruth
	for _, r := range rows[1:] {
		s, _ := time.Parse(time.RFC3339, r[3])
		e, _ := time.Parse(time.RFC3339, r[4])
		out = append(out, groundTruth{device: r[0], scenario: r[2], start: s, end: e})
	}
	return out
}

// TestEndToEndDetectsInjectedAttacks runs the embedded default in-process:
// kfake broker on a loopback port, embedded ledger, simulated fleet and the
// pipeline talking kafka-go over TCP. The fleet produces 4 h of history and
// 3 h 20 min of live traffic with ten attacks; detection is scored against
// the simulator's ground-truth CSV.
func TestEndToEndDetectsInjectedAttacks(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end run")
	}
	if raceDetector {
		// Half a million records take ten times longer instrumented; the
		// service-level tests (bad input, telemetry, replay) still run the
		// concurrent stages under the race detector.
		t.Skip("too slow under the race detector")
	}
	// A guard against a hang, not a timing: alone the test takes about
	// 70 s; beside the other packages of `make test` on two cores, several
	// times that.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	env := startEmbeddedDefault(t, 4)
	dir, brokers, topics, log := env.dir, env.brokers, env.topics, testLogger(t)
	service := env.as(contract.RoleService)

	truthPath := filepath.Join(dir, "truth.csv")
	start := time.Date(2026, 11, 20, 0, 0, 0, 0, time.UTC)
	sim, err := simulator.New(simulator.Config{
		Kafka: env.kafka, Seed: 7, Speed: -1, History: 25 * time.Hour, Duration: 200 * time.Minute,
		Start: start, GroundTruth: truthPath, Forger: env.broker,
	}, log)
	if err != nil {
		t.Fatal(err)
	}
	if err := sim.Register(ctx, env.as(contract.RoleManufacturer), env.as(contract.RoleOperator)); err != nil {
		t.Fatal(err)
	}

	svc := pipeline.NewService(pipeline.ServiceConfig{
		Kafka:    env.kafka,
		Detector: pipeline.DetectorConfig{Warmup: 24 * time.Hour, Seed: 1},
		// A full audit cycle of the run's history takes seconds, not minutes.
		Audit:    pipeline.AuditConfig{Interval: time.Second, RecordsPerRound: 200_000},
		ModelDir: filepath.Join(dir, "models"), OutboxPath: filepath.Join(dir, "outbox.db"),
	}, service, prometheus.NewRegistry(), log)
	if err := svc.Start(ctx); err != nil {
		t.Fatal(err)
	}
	stats, err := sim.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	summary := &svc.Metrics().Summary
	for summary.RecordsConsumed.Load() < stats.Records || summary.WindowsHeld.Load() > 0 {
		if ctx.Err() != nil {
			t.Fatalf("deadline: consumed %d of %d records, %d windows held", summary.RecordsConsumed.Load(), stats.Records, summary.WindowsHeld.Load())
		}
		time.Sleep(50 * time.Millisecond)
	}
	consumedAt := time.Now()
	// The audit finds tampered history in its own time: wait until every
	// tampering has an integrity alert over its span (one tampering can
	// raise several, one per anchored range it touched, so a count of
	// alerts can be reached before the last tampering is found).
	var tampered []groundTruth
	for _, g := range readGroundTruth(t, truthPath) {
		if g.scenario == simulator.ScenarioHistoryTamper {
			tampered = append(tampered, g)
		}
	}
	for {
		found, err := service.ListAlerts(ctx, contract.ListAlertsArgs{Kind: contract.AlertIntegrity})
		if err != nil && ctx.Err() == nil {
			t.Fatal(err)
		}
		var missing []string
		for _, g := range tampered {
			if !slices.ContainsFunc(found, func(a contract.Alert) bool { return g.overlaps(a) }) {
				missing = append(missing, fmt.Sprintf("%s %s–%s", g.device, g.start.Format("15:04"), g.end.Format("15:04")))
			}
		}
		if len(missing) == 0 {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("deadline: %s after the last record was consumed, the audit (%.0f rounds) had not found the tamperings of %v; integrity alerts %d",
				time.Since(consumedAt).Round(time.Second), testutil.ToFloat64(svc.Metrics().AuditRounds), missing, len(found))
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("the audit found every tampering %s after the last record was consumed", time.Since(consumedAt).Round(time.Millisecond))
	time.Sleep(500 * time.Millisecond) // let the last alerts reach the sinks
	shutdownCtx, cancelShutdown := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancelShutdown()
	if err := svc.Shutdown(shutdownCtx); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	if summary.RecordsConsumed.Load() < stats.Records {
		t.Fatalf("consumed %d of %d records", summary.RecordsConsumed.Load(), stats.Records)
	}

	alerts, err := service.ListAlerts(ctx, contract.ListAlertsArgs{Kind: contract.AlertBehaviour})
	if err != nil {
		t.Fatal(err)
	}
	var truth, trustTruth []groundTruth
	for _, g := range readGroundTruth(t, truthPath) {
		if slices.Contains(simulator.TrustScenarios, g.scenario) {
			trustTruth = append(trustTruth, g)
		} else {
			truth = append(truth, g)
		}
	}
	if len(truth) != 10 || len(trustTruth) != 10 {
		t.Fatalf("ground truth has %d attacks and %d trust scenarios, want 10 of each", len(truth), len(trustTruth))
	}
	checkTrustScenarios(t, ctx, service, trustTruth)

	// Each profile's model was trained on verified history, which its
	// registration on the ledger cites anchor by anchor.
	for _, profile := range []string{"camera", "gateway", "meter", "plc"} {
		m, err := service.GetActiveModel(ctx, profile)
		if err != nil {
			t.Fatal(err)
		}
		if len(m.TrainingAnchors) == 0 {
			t.Fatalf("model of %s cites no training anchors", profile)
		}
		for _, id := range m.TrainingAnchors {
			if _, err := env.anchors(t, contract.RoleService).Get(ctx, id); err != nil {
				t.Fatalf("model of %s cites %s: %v", profile, id, err)
			}
		}
	}
	for _, a := range alerts {
		if a.TxID == "" || a.ModelHash == "" || a.Incident == nil {
			t.Errorf("alert %s lacks tx id, model hash or incident: %+v", a.ID, a)
		}
		if a.Incident != nil && a.Incident.Status == contract.IncidentOpened && len(a.Features) == 0 {
			t.Errorf("incident %s opened without an explanation", a.Incident.ID)
		}
	}
	var attacks []attackTruth
	for _, g := range truth {
		attacks = append(attacks, attackTruth{device: g.device, scenario: g.scenario, intensity: 1, start: g.start, end: g.end})
	}
	deviceHours := float64(len(sim.Fleet)) * (200 * time.Minute).Hours()
	rep := evaluate(alerts, attacks, time.Minute, 10*time.Minute, start.Add(25*time.Hour+200*time.Minute), deviceHours)
	detected, windows, covered := 0, 0, 0
	for _, a := range rep.attacks {
		t.Logf("attack %-16s on %-12s %s–%s: detected %-5v within 3 windows %-5v after %-6s, %2d of %2d windows in the incident, peak %.3f",
			a.scenario, a.device, a.start.Format("15:04"), a.end.Format("15:04"), a.detected, a.within3, a.timeToDetect, a.covered, a.windows, a.peak)
		if a.detected {
			detected++
		}
		windows += a.windows
		covered += a.covered
	}
	for _, f := range rep.falseIncidents {
		t.Logf("false incident on %s %s–%s, peak %.3f, opening features %+v", f.device, f.first.Format("15:04"), f.last.Format("15:04"), f.peak, f.openedFeatures)
	}
	scored := summary.WindowsScored.Load()
	t.Logf("records %d, windows scored %d, behaviour alerts %d in %d incidents, anchors %d", stats.Records, scored, len(alerts), rep.incidents, summary.AnchorsWritten.Load())
	t.Logf("attacks detected %d/%d, window recall %.3f (%d/%d); false incidents %d (%.1f per 1,000 device-hours), their alerts %d (%.1f per 1,000 device-hours)",
		detected, len(truth), float64(covered)/float64(windows), covered, windows,
		len(rep.falseIncidents), rep.perThousand(len(rep.falseIncidents)), rep.falseEvents, rep.perThousand(rep.falseEvents))
	if detected < 9 {
		t.Errorf("detected %d of %d attacks, want at least 9", detected, len(truth))
	}
	// 160 device-hours at a budget of 1 per 1,000: anything above 2 is
	// well beyond the budget's noise.
	if len(rep.falseIncidents) > 2 {
		t.Errorf("%d false incidents in %.0f device-hours", len(rep.falseIncidents), deviceHours)
	}
	if summary.AnchorsWritten.Load() == 0 {
		t.Error("no batch was anchored")
	}

	// Every alert on the ledger also reached the alerts topic.
	produced := countTopic(t, brokers[0], topics.Alerts)
	if produced < int64(len(alerts)) {
		t.Errorf("alerts topic holds %d records, ledger %d alerts", produced, len(alerts))
	}
}

// overlaps reports whether an alert's window overlaps the scenario's span.
func (g groundTruth) overlaps(a contract.Alert) bool {
	return a.WindowStart.Before(g.end) && !a.WindowEnd.Before(g.start)
}

// checkTrustScenarios expects, for every trust scenario of the ground
// truth, an alert of its kind for its device inside its time span.
func checkTrustScenarios(t *testing.T, ctx context.Context, ledger *ledgerclient.Client, truth []groundTruth) {
	kindOf := map[string]string{
		simulator.ScenarioRogueDevice: contract.AlertRogueDevice, simulator.ScenarioRevokedDevice: contract.AlertRevokedDevice,
		simulator.ScenarioBadSignature: contract.AlertBadSignature, simulator.ScenarioFirmwareTamper: contract.AlertFirmwareMismatch,
		simulator.ScenarioHistoryTamper: contract.AlertIntegrity,
	}
	for _, g := range truth {
		device := g.device
		if g.scenario == simulator.ScenarioHistoryTamper {
			device = "" // an integrity alert names the anchored range, not a device
		}
		alerts, err := ledger.ListAlerts(ctx, contract.ListAlertsArgs{DeviceID: device, Kind: kindOf[g.scenario]})
		if err != nil {
			t.Fatal(err)
		}
		hit := 0
		for _, a := range alerts {
			if g.overlaps(a) {
				hit++
			}
		}
		t.Logf("trust %-16s on %-12s %s–%s: %d %s alerts", g.scenario, g.device, g.start.Format("15:04"), g.end.Format("15:04"), hit, kindOf[g.scenario])
		if hit == 0 {
			t.Errorf("%s on %s raised no %s alert", g.scenario, g.device, kindOf[g.scenario])
		}
	}
}

// countTopic sums the high-water marks of a topic's partitions.
func countTopic(t *testing.T, broker, topic string) int64 {
	conn, err := kafka.Dial("tcp", broker)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	parts, err := conn.ReadPartitions(topic)
	if err != nil {
		t.Fatal(err)
	}
	var total int64
	for _, p := range parts {
		total += countPartition(t, broker, topic, p.ID)
	}
	return total
}
