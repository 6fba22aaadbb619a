package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chainwatch/chainwatch/ledgerclient/contract"
	"github.com/chainwatch/chainwatch/models"
	"github.com/chainwatch/chainwatch/models/features"
	"github.com/chainwatch/chainwatch/models/iforest"
)

// meterModel trains a behaviour model of the meter profile on synthetic
// windows, as a data scientist's retraining would produce one.
func meterModel(t *testing.T, seed uint64) string {
	t.Helper()
	r := rand.New(rand.NewPCG(seed, 1))
	var series []models.DeviceSeries
	for d := range 8 {
		s := models.DeviceSeries{Device: fmt.Sprintf("meter-%04d", d)}
		for range 120 {
			var v features.Vector
			v[features.Flows] = float64(2 + r.IntN(3))
			v[features.BytesOut] = 900 + 100*r.Float64()
			v[features.DistinctDst] = 1
			s.Vectors = append(s.Vectors, v)
		}
		series = append(series, s)
	}
	m, _, err := models.TrainBehaviour(series, models.BehaviourOptions{Forest: iforest.Config{Trees: 50, Subsample: 128, Seed: seed}, Profile: "meter",
		TrainingData: []string{"retrained-offline"}})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "meter.cwm")
	if err := m.Save(path); err != nil {
		t.Fatal(err)
	}
	return path
}

// scrape fetches the service's /metrics text ("" while it is not up).
func scrape(t *testing.T, addr string) string {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// TestPromotedModelIsSwappedInWithoutRestart: with the service running, a
// retrained model is registered and promoted with the CLI and the service
// swaps it in within its poll; a promoted model whose artifact was altered
// after registration is refused, counted, and the current model keeps
// scoring.
func TestPromotedModelIsSwappedInWithoutRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the service")
	}
	if raceDetector {
		t.Skip("too slow under the race detector")
	}
	dir := t.TempDir()
	httpAddr := freeAddr(t)
	env := compressedDay(24)
	env["CHAINWATCH_HTTP_LISTEN"] = httpAddr
	env["CHAINWATCH_DETECTOR_MODEL_POLL"] = "500ms"
	env["CHAINWATCH_DATA_DIR"] = dir
	for k, v := range env {
		t.Setenv(k, v)
	}
	cfg, err := LoadConfig("", os.Environ())
	if err != nil {
		t.Fatal(err)
	}
	_, stop := serveInBackground(t, cfg)
	defer stop()
	waitUntil := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(90 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	waitUntil("the first meter model", func() bool {
		return activeHash(t, scrape(t, httpAddr)) != ""
	})
	first := activeHash(t, scrape(t, httpAddr))

	// An altered artifact: registered, then changed in the store, then
	// promoted (the CLI itself refuses to promote it, so as an operator
	// would through the ledger's own client).
	bad := meterModel(t, 7)
	out, err := runCLI(t, "models", "register", bad)
	if err != nil {
		t.Fatalf("register: %v\n%s", err, out)
	}
	badModel, _ := models.Load(bad)
	stored := filepath.Join(dir, "models", badModel.Hash()+".cwm")
	raw, _ := os.ReadFile(stored)
	if err := os.WriteFile(stored, append(raw, ' '), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := runCLI(t, "models", "promote", badModel.Hash()); err == nil {
		t.Fatalf("the CLI promoted an altered artifact:\n%s", out)
	}
	op, closeOp, err := ledgerAs(cfg, contract.RoleOperator)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := op.PromoteModel(context.Background(), badModel.Hash()); err != nil {
		t.Fatal(err)
	}
	closeOp()
	waitUntil("the altered model refused", func() bool {
		return strings.Contains(scrape(t, httpAddr), `chainwatch_models_refused_total{profile="meter"} 1`)
	})
	if got := activeHash(t, scrape(t, httpAddr)); got != first {
		t.Fatalf("after the refusal the service scores with %s, want the first model %s", got, first)
	}

	// A good retrained model: register and promote with the CLI.
	good := meterModel(t, 11)
	goodModel, _ := models.Load(good)
	for _, args := range [][]string{{"models", "register", good}, {"models", "promote", goodModel.Hash()}} {
		if out, err := runCLI(t, args...); err != nil {
			t.Fatalf("%v: %v\n%s", args, err, out)
		}
	}
	waitUntil("the promoted model in use", func() bool { return activeHash(t, scrape(t, httpAddr)) == goodModel.Hash() })
	out, err = runCLI(t, "models", "list", "--profile", "meter")
	if err != nil {
		t.Fatal(err)
	}
	var listed []contract.ListedModel
	if err := json.Unmarshal([]byte(out), &listed); err != nil {
		t.Fatalf("models list printed %q: %v", out, err)
	}
	active := map[string]bool{}
	for _, m := range listed {
		active[m.Hash] = m.Active
	}
	if len(listed) != 3 || !active[goodModel.Hash()] || active[first] || active[badModel.Hash()] {
		t.Errorf("models list: %s", out)
	}
	before := scoredMeter(scrape(t, httpAddr))
	waitUntil("windows scored with it", func() bool { return scoredMeter(scrape(t, httpAddr)) > before })
}

// activeHash is the meter profile's model hash in chainwatch_model_info.
func activeHash(t *testing.T, metrics string) string {
	t.Helper()
	for _, line := range strings.Split(metrics, "\n") {
		if strings.HasPrefix(line, "chainwatch_model_info{") && strings.Contains(line, `profile="meter"`) {
			i := strings.Index(line, `hash="`)
			return line[i+6 : i+6+64]
		}
	}
	return ""
}

// scoredMeter is chainwatch_windows_scored_total of the meter profile.
func scoredMeter(metrics string) float64 {
	for _, line := range strings.Split(metrics, "\n") {
		if strings.HasPrefix(line, `chainwatch_windows_scored_total{profile="meter"} `) {
			var v float64
			fmt.Sscan(strings.TrimPrefix(line, `chainwatch_windows_scored_total{profile="meter"} `), &v)
			return v
		}
	}
	return 0
}
