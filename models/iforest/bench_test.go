package iforest

import (
	"runtime"
	"testing"
)

// Benchmarks of the hot paths; docs/BENCHMARKS.md quotes them. Each scoring
// benchmark reports rows/s and ns per row per tree.

func benchData(rows, d int, seed uint64) []float64 { return gaussianWithOutliers(rows, d, nil, seed) }

func BenchmarkFit100x256(b *testing.B) {
	data := benchData(100_000, 16, 1)
	b.ResetTimer()
	for b.Loop() {
		if _, err := Fit(data, 16, Config{Seed: 1}); err != nil {
			b.Fatal(err)
		}
	}
}

func benchmarkScore(b *testing.B, ext, workers int) {
	train := benchData(100_000, 16, 1)
	f, err := Fit(train, 16, Config{Seed: 1, Extension: ext})
	if err != nil {
		b.Fatal(err)
	}
	const rows = 100_000
	test := benchData(rows, 16, 2)
	dst := make([]float64, rows)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if workers == 1 {
			_ = f.ScoreBatch(dst, test)
		} else {
			_ = f.ScoreBatchParallel(dst, test, workers)
		}
	}
	perRow := b.Elapsed().Seconds() / float64(b.N) / rows
	b.ReportMetric(1/perRow, "rows/s")
	b.ReportMetric(perRow*1e9/float64(f.Trees()), "ns/row/tree")
}

func BenchmarkScoreOneCore(b *testing.B)  { benchmarkScore(b, 0, 1) }
func BenchmarkScoreAllCores(b *testing.B) { benchmarkScore(b, 0, runtime.GOMAXPROCS(0)) }
func BenchmarkScoreExtendedOneCore(b *testing.B) {
	benchmarkScore(b, 15, 1)
}

func BenchmarkScoreSingleRow(b *testing.B) {
	f, _ := Fit(benchData(10_000, 16, 1), 16, Config{Seed: 1})
	x := benchData(1, 16, 3)
	b.ReportAllocs()
	for b.Loop() {
		_ = f.Score(x)
	}
}
