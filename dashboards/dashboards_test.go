package dashboards

import (
	"bytes"
	"os"
	"testing"
)

// TestCheckedInJSONIsWhatTheCodeBuilds fails when a dashboard's JSON in
// this folder differs from what the code builds: run `make dashboards`.
func TestCheckedInJSONIsWhatTheCodeBuilds(t *testing.T) {
	for name, b := range All() {
		want, err := Render(b)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		got, err := os.ReadFile(name)
		if err != nil {
			t.Fatalf("%s: %v (run make dashboards)", name, err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s differs from what the code builds: run make dashboards", name)
		}
	}
}
