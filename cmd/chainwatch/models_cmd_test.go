package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/chainwatch/chainwatch/models"
	"github.com/chainwatch/chainwatch/models/features"
)

// writeCSV writes n rows of three Gaussian features, a share of them shifted
// far away and labelled 1.
func writeCSV(t *testing.T, path string, n int, anomalyShare float64, seed uint64) {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, 0))
	var b strings.Builder
	b.WriteString("bytes,flows,ports,is_attack\n")
	for range n {
		shift, label := 0.0, 0
		if rng.Float64() < anomalyShare {
			shift, label = 6, 1
		}
		fmt.Fprintf(&b, "%f,%f,%f,%d\n", rng.NormFloat64()+shift, rng.NormFloat64()-shift, rng.NormFloat64(), label)
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestTrainEvaluateAndShowAModelFromCSV(t *testing.T) {
	dir := t.TempDir()
	train, test, model, plot := filepath.Join(dir, "train.csv"), filepath.Join(dir, "test.csv"), filepath.Join(dir, "m.cwm"), filepath.Join(dir, "roc.png")
	writeCSV(t, train, 5000, 0.01, 1)
	writeCSV(t, test, 2000, 0.05, 2)

	out, err := runCLI(t, "train", "--csv", train, "--label-column", "is_attack", "--seed", "3", "--out", model)
	if err != nil {
		t.Fatalf("train: %v", err)
	}
	var trained map[string]any
	if err := json.Unmarshal([]byte(out), &trained); err != nil || trained["features"] != 3.0 {
		t.Fatalf("train printed %s (%v)", out, err)
	}

	out, err = runCLI(t, "evaluate", "--model", model, "--csv", test, "--label-column", "is_attack", "--plot", plot)
	if err != nil {
		t.Fatalf("evaluate: %v", err)
	}
	var res struct {
		AUC       float64 `json:"auc"`
		AP        float64 `json:"average_precision"`
		Anomalies int     `json:"anomalies"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatal(err)
	}
	if res.AUC < 0.99 || res.AP < 0.9 || res.Anomalies == 0 {
		t.Fatalf("held-out evaluation %s: want AUC ≥ 0.99 on well-separated anomalies", out)
	}
	if png, err := os.ReadFile(plot); err != nil || len(png) < 1000 || string(png[1:4]) != "PNG" {
		t.Fatalf("ROC plot not written as PNG: %v", err)
	}

	out, err = runCLI(t, "models", "show", model)
	if err != nil {
		t.Fatal(err)
	}
	var shown struct {
		Hash         string   `json:"hash"`
		Features     []string `json:"features"`
		TrainingData []string `json:"training_data"`
	}
	if err := json.Unmarshal([]byte(out), &shown); err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(model)
	sum := sha256.Sum256(raw)
	csvRaw, _ := os.ReadFile(train)
	csvSum := sha256.Sum256(csvRaw)
	if shown.Hash != hex.EncodeToString(sum[:]) || strings.Join(shown.Features, ",") != "bytes,flows,ports" ||
		len(shown.TrainingData) != 1 || shown.TrainingData[0] != "sha256:"+hex.EncodeToString(csvSum[:]) {
		t.Fatalf("models show: %s", out)
	}
}

func TestTrainRefusesNonNumericColumns(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bad.csv")
	if err := os.WriteFile(path, []byte("bytes,kind\n1,camera\n2,meter\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := runCLI(t, "train", "--csv", path, "--out", filepath.Join(t.TempDir(), "m.cwm"))
	if err == nil || !strings.Contains(err.Error(), `column "kind" is not numeric: row 2 has "camera"`) {
		t.Fatalf("err = %v, want the column, row and value named", err)
	}
	_, err = runCLI(t, "models", "show", path)
	if err == nil || !strings.Contains(err.Error(), "not a chainwatch model artifact") {
		t.Fatalf("models show on a CSV: err = %v", err)
	}
}

// A behaviour model, as the service trains it, is refused by evaluate on a
// CSV with a message saying why, rather than scoring raw rows with a forest
// grown on deviations from device baselines.
func TestEvaluateRefusesABehaviourModel(t *testing.T) {
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(4, 4))
	series := make([]models.DeviceSeries, 4)
	for d := range series {
		series[d].Device = fmt.Sprintf("m-%d", d)
		for range 60 {
			var v features.Vector
			v[features.Flows] = float64(2 + rng.IntN(4))
			v[features.BytesOut] = v[features.Flows] * 900
			series[d].Vectors = append(series[d].Vectors, v)
		}
	}
	m, _, err := models.TrainBehaviour(series, models.BehaviourOptions{Profile: "meter"})
	if err != nil {
		t.Fatal(err)
	}
	modelPath := filepath.Join(dir, "b.cwm")
	if err := m.Save(modelPath); err != nil {
		t.Fatal(err)
	}
	csvPath := filepath.Join(dir, "t.csv")
	writeCSV(t, csvPath, 50, 0.1, 1)
	_, err = runCLI(t, "evaluate", "--model", modelPath, "--csv", csvPath, "--label-column", "is_attack")
	if err == nil || !strings.Contains(err.Error(), "behaviour model") {
		t.Fatalf("err = %v, want a behaviour model refused", err)
	}
}
