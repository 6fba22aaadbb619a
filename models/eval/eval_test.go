package eval

import (
	"math"
	"os"
	"path/filepath"
	"testing"
)

func TestMetricsMatchScikitLearnExamples(t *testing.T) {
	// sklearn docs: roc_auc_score([0,0,1,1], [0.1,0.4,0.35,0.8]) = 0.75,
	// average_precision_score(same) = 0.8333….
	scores := []float64{0.1, 0.4, 0.35, 0.8}
	labels := []bool{false, false, true, true}
	r, err := Evaluate(scores, labels, 0)
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(r.AUC-0.75) > 1e-12 || math.Abs(r.AP-0.8333333333333333) > 1e-12 {
		t.Fatalf("AUC %v AP %v, want 0.75 and 0.8333", r.AUC, r.AP)
	}
	if r.K != 2 || r.PrecisionAtK != 0.5 {
		t.Fatalf("precision at %d = %v, want 0.5 at 2", r.K, r.PrecisionAtK)
	}
}

func TestTiesAndPerfectSeparation(t *testing.T) {
	labels := []bool{true, false, true, false}
	if got := AUC([]float64{0.5, 0.5, 0.5, 0.5}, labels); got != 0.5 {
		t.Errorf("all-tied AUC = %v, want 0.5", got)
	}
	if got := AUC([]float64{0.9, 0.1, 0.8, 0.2}, labels); got != 1 {
		t.Errorf("separable AUC = %v, want 1", got)
	}
	if _, err := Evaluate([]float64{1, 2}, []bool{true, true}, 0); err != ErrOneClass {
		t.Errorf("one class: err = %v", err)
	}
	fpr, tpr := ROC([]float64{0.9, 0.1, 0.8, 0.2}, labels)
	if fpr[0] != 0 || tpr[0] != 0 || fpr[len(fpr)-1] != 1 || tpr[len(tpr)-1] != 1 {
		t.Errorf("ROC endpoints fpr %v tpr %v", fpr, tpr)
	}
}

func TestPlotROCWritesPNG(t *testing.T) {
	path := filepath.Join(t.TempDir(), "roc.png")
	fpr, tpr := ROC([]float64{0.9, 0.1, 0.8, 0.2, 0.6}, []bool{true, false, true, false, false})
	if err := PlotROC(path, "test", fpr, tpr, 1); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil || len(b) < 8 || string(b[1:4]) != "PNG" {
		t.Fatalf("not a PNG (%d bytes, err %v)", len(b), err)
	}
}
