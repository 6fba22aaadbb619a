package main

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/chainwatch/chainwatch/pipeline"
)

// TestWindowTablesAreByteIdentical: the same rows make the same file, in
// both formats.
func TestWindowTablesAreByteIdentical(t *testing.T) {
	dir := t.TempDir()
	write := func(name string) []byte {
		t.Helper()
		path := filepath.Join(dir, name)
		w, err := newTableWriter(path, path)
		if err != nil {
			t.Fatal(err)
		}
		start := time.Date(2026, 11, 2, 0, 0, 0, 0, time.UTC)
		for i := range 500 {
			hw := &pipeline.HistoryWindow{Device: "cam-1", Profile: "camera", Start: start.Add(time.Duration(i) * time.Minute),
				End: start.Add(time.Duration(i+1) * time.Minute), Partition: 2, FirstOffset: int64(10 * i), LastOffset: int64(10*i + 9),
				Anchors: []string{"a1", "a2"}}
			hw.Vector[0] = float64(i)
			l := pipeline.Label{}
			if i%7 == 0 {
				l = pipeline.Label{Value: 1, OK: true, Source: "ground_truth", Detail: "port_scan"}
			}
			if err := w.Write(windowRow{w: hw, label: l}); err != nil {
				t.Fatal(err)
			}
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	for _, ext := range []string{".parquet", ".csv"} {
		a, b := write("a"+ext), write("b"+ext)
		if !bytes.Equal(a, b) {
			t.Errorf("%s: two writes of the same rows differ (%d and %d bytes)", ext, len(a), len(b))
		}
	}
}
