// Command iforest-bench measures chainwatch's isolation forest against its
// peers: speed on synthetic Gaussian data (fit on 100,000 × 16, scoring of
// 1,000,000 × 16) against github.com/e-XpertSolutions/go-iforest/v2, and
// accuracy (ROC AUC over seeds) on labelled CSV data sets. It prints JSON;
// run.sh adds scikit-learn's figures measured in the same run and renders
// the table in docs/BENCHMARKS.md.
//
// It is its own module so that the peer library never enters the
// service's dependency graph.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"time"

	peer "github.com/e-XpertSolutions/go-iforest/v2/iforest"

	"github.com/chainwatch/chainwatch/models"
	"github.com/chainwatch/chainwatch/models/eval"
	"github.com/chainwatch/chainwatch/models/iforest"
)

func main() {
	mode := flag.String("mode", "speed", "speed or accuracy")
	dataDir := flag.String("data", "", "accuracy: directory of <name>.csv files with a label column")
	seeds := flag.Int("seeds", 10, "accuracy: seeds per data set")
	fitRows := flag.Int("fit-rows", 100_000, "speed: training rows")
	scoreRows := flag.Int("score-rows", 1_000_000, "speed: scored rows")
	repeats := flag.Int("repeats", 5, "speed: repetitions (the median is reported)")
	flag.Parse()
	var out any
	var err error
	switch *mode {
	case "speed":
		out, err = speed(*fitRows, *scoreRows, 16, *repeats)
	case "accuracy":
		out, err = accuracy(*dataDir, *seeds)
	default:
		err = fmt.Errorf("unknown mode %q", *mode)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "iforest-bench:", err)
		os.Exit(1)
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	_ = enc.Encode(out)
}

func gaussian(rows, d int, seed uint64) []float64 {
	rng := rand.New(rand.NewPCG(seed, 99))
	x := make([]float64, rows*d)
	for i := range x {
		x[i] = rng.NormFloat64()
	}
	return x
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}

func timeIt(repeats int, fn func()) float64 {
	var ts []float64
	for range repeats {
		start := time.Now()
		fn()
		ts = append(ts, time.Since(start).Seconds())
	}
	return median(ts)
}

// SpeedResult is one implementation's figures.
type SpeedResult struct {
	Implementation   string  `json:"implementation"`
	FitSeconds       float64 `json:"fit_seconds"`
	FitSecondsSerial float64 `json:"fit_seconds_one_core,omitempty"`
	ScoreRowsPerSec1 float64 `json:"score_rows_per_second_one_core"`
	ScoreRowsPerSecN float64 `json:"score_rows_per_second_all_cores"`
	NsPerRowPerTree  float64 `json:"ns_per_row_per_tree"`
	Cores            int     `json:"cores"`
}

func speed(fitRows, scoreRows, d, repeats int) ([]SpeedResult, error) {
	train := gaussian(fitRows, d, 1)
	test := gaussian(scoreRows, d, 2)
	cores := runtime.GOMAXPROCS(0)
	var results []SpeedResult

	// chainwatch: 100 trees × ψ 256.
	var f *iforest.Forest
	fitN := timeIt(repeats*4, func() { f, _ = iforest.Fit(train, d, iforest.Config{Seed: 1}) })
	fit1 := timeIt(repeats*4, func() { _, _ = iforest.Fit(train, d, iforest.Config{Seed: 1, Workers: 1}) })
	scores := make([]float64, scoreRows)
	s1 := timeIt(repeats, func() { _ = f.ScoreBatch(scores, test) })
	sN := timeIt(repeats, func() { _ = f.ScoreBatchParallel(scores, test, cores) })
	results = append(results, SpeedResult{
		Implementation: "chainwatch models/iforest", FitSeconds: fitN, FitSecondsSerial: fit1,
		ScoreRowsPerSec1: float64(scoreRows) / s1, ScoreRowsPerSecN: float64(scoreRows) / sN,
		NsPerRowPerTree: s1 * 1e9 / float64(scoreRows) / 100, Cores: cores,
	})

	// go-iforest v2: its API takes [][]float64 and must "Test" on the
	// training rows before it will predict.
	rowsOf := func(x []float64, n int) [][]float64 {
		out := make([][]float64, n)
		for i := range out {
			out[i] = x[i*d : (i+1)*d]
		}
		return out
	}
	trainRows, testRows := rowsOf(train, fitRows), rowsOf(test, scoreRows)
	var pf *peer.Forest
	pfit := timeIt(repeats, func() {
		pf = peer.NewForest(100, 256, 0.01)
		pf.Train(trainRows)
	})
	if err := pf.TestParallel(trainRows, cores); err != nil {
		return nil, err
	}
	p1 := timeIt(max(1, repeats/2), func() { _, _, _ = pf.Predict(testRows) })
	pN := timeIt(max(1, repeats/2), func() { _, _, _ = pf.PredictParallel(testRows, cores) })
	results = append(results, SpeedResult{
		Implementation: "github.com/e-XpertSolutions/go-iforest/v2 v2.0.0", FitSeconds: pfit,
		ScoreRowsPerSec1: float64(scoreRows) / p1, ScoreRowsPerSecN: float64(scoreRows) / pN,
		NsPerRowPerTree: p1 * 1e9 / float64(scoreRows) / 100, Cores: cores,
	})
	return results, nil
}

// AccuracyResult is one data set's AUC over seeds.
type AccuracyResult struct {
	Dataset   string    `json:"dataset"`
	Rows      int       `json:"rows"`
	Features  int       `json:"features"`
	Anomalies int       `json:"anomalies"`
	Variant   string    `json:"variant"`
	AUCs      []float64 `json:"aucs"`
	Mean      float64   `json:"mean"`
	Std       float64   `json:"std"`
}

func accuracy(dir string, seeds int) ([]AccuracyResult, error) {
	if dir == "" {
		return nil, fmt.Errorf("-data is required")
	}
	files, err := filepath.Glob(filepath.Join(dir, "*.csv"))
	if err != nil || len(files) == 0 {
		return nil, fmt.Errorf("no CSV files in %s", dir)
	}
	sort.Strings(files)
	var out []AccuracyResult
	for _, path := range files {
		fh, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		ds, err := models.ReadCSV(fh, "label", "")
		fh.Close()
		if err != nil {
			return nil, err
		}
		name := strings.TrimSuffix(filepath.Base(path), ".csv")
		d := len(ds.Names)
		for _, variant := range []struct {
			name string
			ext  int
		}{{"iforest", 0}, {"extended (full)", d - 1}} {
			r := AccuracyResult{Dataset: name, Rows: ds.Rows(), Features: d, Variant: variant.name}
			for _, l := range ds.Labels {
				if l {
					r.Anomalies++
				}
			}
			scores := make([]float64, ds.Rows())
			for seed := range seeds {
				f, err := iforest.Fit(ds.X, d, iforest.Config{Seed: uint64(seed), Extension: variant.ext})
				if err != nil {
					return nil, fmt.Errorf("%s: %w", name, err)
				}
				if err := f.ScoreBatch(scores, ds.X); err != nil {
					return nil, err
				}
				r.AUCs = append(r.AUCs, eval.AUC(scores, ds.Labels))
			}
			for _, a := range r.AUCs {
				r.Mean += a / float64(len(r.AUCs))
			}
			for _, a := range r.AUCs {
				r.Std += (a - r.Mean) * (a - r.Mean) / float64(len(r.AUCs)-1)
			}
			r.Std = math.Sqrt(r.Std)
			out = append(out, r)
		}
	}
	return out, nil
}
