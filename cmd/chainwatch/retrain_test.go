package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"image/png"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chainwatch/chainwatch/ledgerclient/contract"
	"github.com/chainwatch/chainwatch/pipeline"
	"github.com/chainwatch/chainwatch/pipeline/kafkaconn"
	"github.com/chainwatch/chainwatch/simulator"
)

// metricValue is the value of one sample of a /metrics scrape (0 if
// absent); series is the name with its labels as Prometheus prints them.
func metricValue(metrics, series string) float64 {
	for _, line := range strings.Split(metrics, "\n") {
		if rest, ok := strings.CutPrefix(line, series+" "); ok {
			var v float64
			fmt.Sscan(rest, &v)
			return v
		}
	}
	return 0
}

// modelOf is the hash of a profile's model in a /metrics scrape.
func modelOf(metrics, profile string) string {
	for _, line := range strings.Split(metrics, "\n") {
		if strings.HasPrefix(line, "chainwatch_model_info{") && strings.Contains(line, `profile="`+profile+`"`) {
			i := strings.Index(line, `hash="`)
			return line[i+6 : i+6+64]
		}
	}
	return ""
}

// TestRetrainingAfterAFirmwareUpdate is the data scientist's loop on a
// running service. A fleet's cameras double their traffic (a firmware
// update): the active model raises false alerts and their features drift.
// The shifted period is exported (Parquet twice, byte for byte the same,
// and CSV; DuckDB reads the Parquet as the CSV says), a model is trained
// on it (twice: the same hash), evaluated against the active model on a
// later labelled period, registered and promoted; the service swaps it in
// without a restart and the cameras' false-alert rate falls. A tampered
// artifact is refused.
func TestRetrainingAfterAFirmwareUpdate(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the service")
	}
	if raceDetector {
		t.Skip("too slow under the race detector")
	}
	dir := t.TempDir()
	httpAddr, kafkaAddr := freeAddr(t), freeAddr(t)
	env := map[string]string{
		"CHAINWATCH_DATA_DIR":               dir,
		"CHAINWATCH_HTTP_LISTEN":            httpAddr,
		"CHAINWATCH_KAFKA_EMBEDDED_LISTEN":  kafkaAddr,
		"CHAINWATCH_LOG_LEVEL":              "warn",
		"CHAINWATCH_SIMULATOR_ENABLED":      "false",
		"CHAINWATCH_DETECTOR_WARMUP":        "2h",
		"CHAINWATCH_DETECTOR_MODEL_POLL":    "300ms",
		"CHAINWATCH_ANCHOR_BATCH_AGE":       "200ms",
		"CHAINWATCH_SIMULATOR_GROUND_TRUTH": filepath.Join(dir, "unused.csv"),
	}
	for k, v := range env {
		t.Setenv(k, v)
	}
	cfg, err := LoadConfig("", os.Environ())
	if err != nil {
		t.Fatal(err)
	}
	_, stop := serveInBackground(t, cfg)
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	waitUntil := func(what string, cond func() bool) {
		t.Helper()
		for !cond() {
			if ctx.Err() != nil {
				t.Fatalf("timed out waiting for %s", what)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	waitUntil("the service", func() bool { return scrape(t, httpAddr) != "" })

	manufacturer, closeM, err := ledgerAs(cfg, contract.RoleManufacturer)
	if err != nil {
		t.Fatal(err)
	}
	defer closeM()
	operator, closeO, err := ledgerAs(cfg, contract.RoleOperator)
	if err != nil {
		t.Fatal(err)
	}
	defer closeO()
	produced := int64(0)
	truth := filepath.Join(dir, "truth.csv")
	simulate := func(sc simulator.Config) {
		t.Helper()
		sc.Kafka, sc.Seed, sc.Devices, sc.Speed, sc.TrustEvery = kafkaconn.Plain(kafkaAddr), 3, 24, -1, -1
		sc.GroundTruth = truth
		sim, err := simulator.New(sc, testLog(t))
		if err != nil {
			t.Fatal(err)
		}
		if err := sim.Register(ctx, manufacturer, operator); err != nil {
			t.Fatal(err)
		}
		st, err := sim.Run(ctx)
		if err != nil {
			t.Fatal(err)
		}
		produced += st.Records
	}
	consumed := func() bool {
		return metricValue(scrape(t, httpAddr), `chainwatch_records_consumed_total{topic="iot.flows"}`) >= float64(produced)
	}
	// camera reads the cameras' anomalous and scored windows.
	camera := func() (anomalous, scored float64) {
		m := scrape(t, httpAddr)
		return metricValue(m, `chainwatch_anomalous_windows_total{profile="camera"}`), metricValue(m, `chainwatch_windows_scored_total{profile="camera"}`)
	}

	// Three normal hours: the first models train on the first two.
	t0 := time.Date(2026, 11, 2, 0, 0, 0, 0, time.UTC)
	simulate(simulator.Config{Start: t0.Add(-3 * time.Hour), History: 3 * time.Hour, Duration: time.Minute, FirstAttackAfter: time.Hour})
	waitUntil("every profile's first model", func() bool {
		m := scrape(t, httpAddr)
		for _, p := range simulator.Profiles {
			if modelOf(m, p.Name) == "" {
				return false
			}
		}
		return true
	})
	oldModel := modelOf(scrape(t, httpAddr), "camera")
	waitUntil("the normal hours consumed", consumed)
	a0, s0 := camera()

	// The firmware update: two hours of camera traffic at thirty times its
	// rate (a change this large and this sudden is what per-device
	// baselines do not absorb by themselves: smaller ones they learn), its
	// cloud traffic moved to the vendor's new endpoints, without attacks (every anomalous camera window is false), then
	// an hour with an attack every 4 minutes somewhere in the fleet (the
	// labelled period the candidate is evaluated on).
	shift := &simulator.Shift{Profile: "camera", Factor: 30, NewCloud: true}
	simulate(simulator.Config{Resume: true, History: -1, Duration: 2 * time.Hour, Shift: shift, FirstAttackAfter: 3 * time.Hour})
	waitUntil("the shifted hours consumed", consumed)
	time.Sleep(time.Second) // the last windows close
	a1, s1 := camera()
	before := (a1 - a0) / (s1 - s0)
	t.Logf("cameras under the old model: %.0f of %.0f windows anomalous (%.3f) after the update, %.0f of %.0f before", a1-a0, s1-s0, before, a0, s0)
	if a1-a0 == 0 {
		t.Fatal("the update raised no false alert: nothing to retrain for")
	}
	simulate(simulator.Config{Resume: true, History: -1, Duration: time.Hour, Shift: shift, FirstAttackAfter: time.Minute, AttackEvery: 4 * time.Minute})
	waitUntil("the attacked hour consumed", consumed)
	time.Sleep(time.Second)
	a1, s1 = camera()

	ts := func(d time.Duration) string { return t0.Add(d).Format(time.RFC3339) }
	run := func(args ...string) string {
		t.Helper()
		if args[0] != "models" || args[1] == "drift" {
			args = append(args, "--quiet")
		}
		out, err := runCLI(t, args...)
		if err != nil {
			t.Fatalf("chainwatch %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return out
	}
	decode := func(out string, v any) {
		t.Helper()
		if err := json.Unmarshal([]byte(out), v); err != nil {
			t.Fatalf("%v in %s", err, out)
		}
	}

	// Drift grows: the cameras' features against the model's training data,
	// before and after the update.
	type drift struct {
		MaxPSI   float64 `json:"max_psi"`
		Features []struct {
			Feature string  `json:"feature"`
			PSI     float64 `json:"psi"`
		} `json:"features"`
	}
	var driftBefore, driftAfter drift
	// flowsPSI is the drift of the feature the update changes.
	flowsPSI := func(d drift) float64 {
		for _, f := range d.Features {
			if f.Feature == "flows" {
				return f.PSI
			}
		}
		return 0
	}
	decode(run("models", "drift", "--profile", "camera", "--since", ts(-50*time.Minute), "--until", ts(0)), &driftBefore)
	decode(run("models", "drift", "--profile", "camera", "--since", ts(30*time.Minute), "--until", ts(2*time.Hour)), &driftAfter)
	t.Logf("camera drift: before the update %+v; after %+v", driftBefore, driftAfter)
	if b, a := flowsPSI(driftBefore), flowsPSI(driftAfter); a <= 0.25 || a <= 2*b {
		t.Errorf("the flow count's drift did not grow with the update: PSI %.3f before, %.3f after", b, a)
	}

	// Export the shifted period: twice to Parquet, once to CSV.
	exportArgs := []string{"features", "export", "--profile", "camera", "--since", ts(10 * time.Minute), "--until", ts(2 * time.Hour), "--ground-truth", truth}
	pq1, pq2, csvOut := filepath.Join(dir, "a.parquet"), filepath.Join(dir, "b.parquet"), filepath.Join(dir, "a.csv")
	var exported struct {
		Windows  int `json:"windows"`
		Labelled int `json:"labelled"`
	}
	decode(run(append(exportArgs, "--out", pq1)...), &exported)
	run(append(exportArgs, "--out", pq2)...)
	run(append(exportArgs, "--out", csvOut)...)
	b1, _ := os.ReadFile(pq1)
	b2, _ := os.ReadFile(pq2)
	if len(b1) == 0 || !bytes.Equal(b1, b2) {
		t.Errorf("two exports of the same period differ (%d and %d bytes)", len(b1), len(b2))
	}
	if exported.Windows < 6*100 || exported.Labelled != exported.Windows {
		t.Errorf("export: %d windows, %d labelled; want ~6 cameras × 110 minutes, all labelled by the ground truth", exported.Windows, exported.Labelled)
	}
	checkWithDuckDB(t, pq1, csvOut, exported.Windows)

	// Train on the shifted period, twice: the same artifact.
	newModel, again := filepath.Join(dir, "camera.cwm"), filepath.Join(dir, "camera-again.cwm")
	var trained, trainedAgain struct {
		Hash    string `json:"hash"`
		Windows int    `json:"windows"`
		Anchors int    `json:"training_anchors"`
	}
	trainArgs := []string{"train", "--profile", "camera", "--since", ts(10 * time.Minute), "--until", ts(2 * time.Hour), "--seed", "7"}
	decode(run(append(trainArgs, "--out", newModel)...), &trained)
	decode(run(append(trainArgs, "--out", again)...), &trainedAgain)
	if trained.Hash != trainedAgain.Hash {
		t.Errorf("two trainings on the same history and seed: %s and %s", trained.Hash, trainedAgain.Hash)
	}
	if trained.Anchors == 0 {
		t.Error("the artifact records no training anchor")
	}

	// Evaluate the candidate against the active model on the later hour.
	plot := filepath.Join(dir, "roc.png")
	var evaluated struct {
		Models []pipeline.Figures `json:"models"`
	}
	decode(run("evaluate", "--model", newModel, "--since", ts(2*time.Hour), "--until", ts(3*time.Hour), "--ground-truth", truth, "--plot", plot), &evaluated)
	if len(evaluated.Models) != 2 || evaluated.Models[1].Model != oldModel {
		t.Fatalf("evaluate compared %+v, want the candidate and the active %s", evaluated.Models, oldModel)
	}
	cand, active := evaluated.Models[0], evaluated.Models[1]
	t.Logf("candidate: %d false alerts (%.1f per 1,000 device-hours), %d false incidents; active: %d (%.1f), %d",
		cand.FalseAlerts, cand.FalseAlertsPer1000DH, cand.FalseIncidents, active.FalseAlerts, active.FalseAlertsPer1000DH, active.FalseIncidents)
	if cand.FalseIncidents+cand.FalseAlerts >= active.FalseIncidents+active.FalseAlerts {
		t.Errorf("the retrained model does not cut false incidents or alerts on the shifted traffic: %d and %d against the active model's %d and %d",
			cand.FalseIncidents, cand.FalseAlerts, active.FalseIncidents, active.FalseAlerts)
	}
	if f, err := os.Open(plot); err != nil {
		t.Error(err)
	} else {
		img, err := png.Decode(f)
		f.Close()
		if err != nil {
			t.Errorf("plot: %v", err)
		} else if b := img.Bounds(); b.Dx() < 2*b.Dy()*9/10 {
			t.Errorf("plot is %d×%d: not two panels side by side", b.Dx(), b.Dy())
		}
	}

	// A tampered copy is refused at registration.
	tampered := filepath.Join(dir, "tampered.cwm")
	raw, _ := os.ReadFile(newModel)
	raw[len(raw)/2] ^= 0xff
	if err := os.WriteFile(tampered, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := runCLI(t, "models", "register", tampered); err == nil {
		t.Errorf("a tampered artifact was registered: %s", out)
	}

	// Register and promote: the running service swaps it in.
	run("models", "register", newModel)
	run("models", "promote", trained.Hash)
	waitUntil("the service to swap the retrained model in", func() bool { return modelOf(scrape(t, httpAddr), "camera") == trained.Hash })

	// Another hour of the new normal, without attacks.
	simulate(simulator.Config{Resume: true, History: -1, Duration: time.Hour, Shift: shift, FirstAttackAfter: 2 * time.Hour})
	waitUntil("the last hour consumed", consumed)
	time.Sleep(time.Second)
	a2, s2 := camera()
	after := (a2 - a1) / (s2 - s1)
	t.Logf("cameras under the retrained model: %.0f of %.0f windows anomalous (%.3f), against %.3f under the old one", a2-a1, s2-s1, after, before)
	if s2 == s1 {
		t.Fatal("no camera window scored after the swap")
	}
	if after >= before/2 {
		t.Errorf("the cameras' anomalous-window rate did not fall after the swap: %.3f, %.3f before", after, before)
	}
}

// checkWithDuckDB opens the exported Parquet file with DuckDB (the npm
// package @duckdb/node-api, a reader that is not ours) and checks its row
// count, columns and types against the CSV export of the same period. It
// skips when node or the package is missing, except in CI (.ci/run
// installs both).
func checkWithDuckDB(t *testing.T, parquetPath, csvPath string, rows int) {
	t.Helper()
	modules := os.Getenv("DUCKDB_NODE_MODULES") // a node_modules holding @duckdb/node-api
	_, nodeErr := exec.LookPath("node")
	if nodeErr != nil || modules == "" {
		if os.Getenv("CI") != "" {
			t.Fatalf("DuckDB check: node (%v) and DUCKDB_NODE_MODULES (%q) are needed; .ci/run installs them", nodeErr, modules)
		}
		t.Log("DuckDB check skipped: set DUCKDB_NODE_MODULES to a node_modules with @duckdb/node-api")
		return
	}
	script := `
const { DuckDBInstance } = require('@duckdb/node-api');
(async () => {
  const db = await DuckDBInstance.create(':memory:');
  const c = await db.connect();
  const q = async (sql) => (await c.runAndReadAll(sql)).getRowObjectsJson();
  const pq = process.argv[1], csv = process.argv[2];
  const out = {
    parquet_rows: (await q("SELECT count(*) AS n FROM read_parquet('" + pq + "')"))[0].n,
    csv_rows: (await q("SELECT count(*) AS n FROM read_csv('" + csv + "', header=true)"))[0].n,
    parquet_columns: await q("SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM read_parquet('" + pq + "'))"),
    csv_columns: await q("SELECT column_name FROM (DESCRIBE SELECT * FROM read_csv('" + csv + "', header=true))"),
    differing: (await q("SELECT count(*) AS n FROM (SELECT device_id, window_start, label, flows FROM read_parquet('" + pq + "') EXCEPT SELECT device_id, CAST(window_start AS TIMESTAMP), label, flows FROM read_csv('" + csv + "', header=true))"))[0].n,
  };
  console.log(JSON.stringify(out));
})().catch((e) => { console.error(e); process.exit(1); });
`
	cmd := exec.Command("node", "-e", script, parquetPath, csvPath)
	cmd.Env = append(os.Environ(), "NODE_PATH="+modules)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("duckdb: %v\n%s", err, out)
	}
	var got struct {
		ParquetRows    json.Number `json:"parquet_rows"`
		CSVRows        json.Number `json:"csv_rows"`
		ParquetColumns []struct {
			Name string `json:"column_name"`
			Type string `json:"column_type"`
		} `json:"parquet_columns"`
		CSVColumns []struct {
			Name string `json:"column_name"`
		} `json:"csv_columns"`
		Differing json.Number `json:"differing"`
	}
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("duckdb output %s: %v", out, err)
	}
	if got.ParquetRows.String() != fmt.Sprint(rows) || got.CSVRows.String() != fmt.Sprint(rows) {
		t.Errorf("duckdb counts %s Parquet rows and %s CSV rows, the export wrote %d", got.ParquetRows, got.CSVRows, rows)
	}
	if len(got.ParquetColumns) != len(got.CSVColumns) {
		t.Fatalf("duckdb: %d Parquet columns, %d CSV columns", len(got.ParquetColumns), len(got.CSVColumns))
	}
	want := map[string]string{"device_id": "VARCHAR", "window_start": "TIMESTAMP", "partition": "INTEGER", "first_offset": "BIGINT",
		"label": "INTEGER", "flows": "DOUBLE"}
	for i, c := range got.ParquetColumns {
		if c.Name != got.CSVColumns[i].Name {
			t.Errorf("column %d is %q in Parquet and %q in CSV", i, c.Name, got.CSVColumns[i].Name)
		}
		if w, ok := want[c.Name]; ok && !strings.HasPrefix(c.Type, w) {
			t.Errorf("column %s is %s in Parquet, want %s", c.Name, c.Type, w)
		}
	}
	if got.Differing.String() != "0" {
		t.Errorf("%s Parquet rows differ from the CSV's", got.Differing)
	}
}

// testLog is a logger for what the test itself drives (the simulator).
func testLog(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}
