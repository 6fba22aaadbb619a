package pipeline_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/chainwatch/chainwatch/ledgerclient/contract"
	"github.com/chainwatch/chainwatch/pipeline"
	"github.com/chainwatch/chainwatch/simulator"
)

// TestRogueStormIsOneIncidentPerDeviceAndEpisode replays what a service
// identity that may not register devices saw on Fabric: a whole fleet
// sending flows and telemetry while none of it is on the ledger. Each
// unknown device is one rogue-device incident, however many records and
// windows it sends; after the fleet falls silent for longer than the
// closing rule's quiet windows, each incident is closed, and traffic
// after that is a second episode.
func TestRogueStormIsOneIncidentPerDeviceAndEpisode(t *testing.T) {
	if testing.Short() {
		t.Skip("service run")
	}
	t.Run("one run", func(t *testing.T) { rogueStorm(t, false) })
	// A restart in the middle of the first episode resumes its incidents
	// from the state store: no device opens a second one, and each closes
	// once.
	t.Run("restarted mid-episode", func(t *testing.T) { rogueStorm(t, true) })
}

func rogueStorm(t *testing.T, restart bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	env := startEmbeddedDefault(t, 4)
	const devices = 48
	start := time.Date(2026, 11, 20, 0, 0, 0, 0, time.UTC)
	run := func(from time.Time, d time.Duration) int64 {
		sim, err := simulator.New(simulator.Config{Kafka: env.kafka, Devices: devices, Seed: 3, Speed: -1,
			History: -1, Duration: d, Start: from, FirstAttackAfter: 24 * time.Hour, TrustEvery: -1}, testLogger(t))
		if err != nil {
			t.Fatal(err)
		}
		// No sim.Register: not one device is on the ledger.
		st, err := sim.Run(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return st.Records
	}
	startService := func() *pipeline.Service {
		svc := pipeline.NewService(pipeline.ServiceConfig{Kafka: env.kafka,
			ModelDir: filepath.Join(env.dir, "models"), OutboxPath: filepath.Join(env.dir, "outbox.db")},
			env.as(contract.RoleService), prometheus.NewRegistry(), testLogger(t))
		if err := svc.Start(ctx); err != nil {
			t.Fatal(err)
		}
		return svc
	}
	// consumed waits until svc has read n flow and telemetry records.
	consumed := func(svc *pipeline.Service, n int64) {
		summary := &svc.Metrics().Summary
		for summary.RecordsConsumed.Load() < n && ctx.Err() == nil {
			time.Sleep(50 * time.Millisecond)
		}
	}
	svc := startService()
	defer func() { svc.Shutdown(context.Background()) }()
	// Episode one: 40 minutes of traffic; a 30-minute silence; episode two.
	var records, before int64 // records, and those read before the restart
	if restart {
		before = run(start, 20*time.Minute)
		consumed(svc, before)
		// The service commits and saves its state at shutdown.
		if err := svc.Shutdown(ctx); err != nil {
			t.Fatal(err)
		}
		svc = startService()
		records = run(start.Add(20*time.Minute), 20*time.Minute)
	} else {
		records = run(start, 40*time.Minute)
	}
	records += run(start.Add(70*time.Minute), 20*time.Minute)
	consumed(svc, records)
	var alerts []contract.Alert
	for ctx.Err() == nil {
		var err error
		alerts, err = env.as(contract.RoleAnalyst).ListAlerts(ctx, contract.ListAlertsArgs{Kind: contract.AlertRogueDevice})
		if err != nil {
			t.Fatal(err)
		}
		closedFirst := 0
		for _, a := range alerts {
			if a.Incident != nil && a.Incident.Status == contract.IncidentClosed && a.WindowStart.Before(start.Add(time.Hour)) {
				closedFirst++
			}
		}
		if closedFirst >= devices {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	opened := map[string][]time.Time{}
	incidents := map[string]bool{}
	for _, a := range alerts {
		if a.Incident == nil {
			t.Fatalf("rogue-device alert %s is no incident event", a.ID)
		}
		incidents[a.Incident.ID] = true
		if a.Incident.Status == contract.IncidentOpened {
			opened[a.DeviceID] = append(opened[a.DeviceID], a.WindowStart)
		}
	}
	records += before
	t.Logf("%d records from %d unregistered devices: %d rogue-device alerts in %d incidents", records, devices, len(alerts), len(incidents))
	if len(opened) != devices {
		t.Fatalf("%d devices opened a rogue incident, want %d", len(opened), devices)
	}
	for dev, at := range opened {
		first, second := 0, 0
		for _, w := range at {
			if w.Before(start.Add(time.Hour)) {
				first++
			} else {
				second++
			}
		}
		// The flow and telemetry stages both see the device; an episode
		// they open in the same minute is one incident (same id).
		if first != 1 || second > 1 {
			t.Errorf("%s: %d incidents in the first episode and %d in the second, want 1 and at most 1", dev, first, second)
		}
	}
	closings := map[string]int{}
	for _, a := range alerts {
		if a.Incident.Status == contract.IncidentClosed {
			closings[a.Incident.ID]++
		}
	}
	for id, n := range closings {
		if n != 1 {
			t.Errorf("incident %s closed %d times", id, n)
		}
	}
	if len(alerts) > 4*devices {
		t.Errorf("%d rogue-device alerts for %d devices in two episodes", len(alerts), devices)
	}
}
