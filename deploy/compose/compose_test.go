// Package compose holds the compose file of the whole stack; its test
// loads it with the Compose Specification's own loader.
package compose

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/compose-spec/compose-go/v2/cli"
)

// TestComposeFileLoads loads compose.yaml as `docker compose` does
// (schema validation, interpolation, relative paths resolved) and checks
// the stack's services and that every file it mounts exists.
func TestComposeFileLoads(t *testing.T) {
	opts, err := cli.NewProjectOptions([]string{"compose.yaml"}, cli.WithWorkingDirectory("."), cli.WithName("chainwatch"))
	if err != nil {
		t.Fatal(err)
	}
	p, err := opts.LoadProject(context.Background())
	if err != nil {
		t.Fatalf("compose.yaml: %v", err)
	}
	names := p.ServiceNames()
	for _, want := range []string{"kafka", "chainwatch", "prometheus", "alertmanager", "grafana", "pyroscope"} {
		if !slices.Contains(names, want) {
			t.Errorf("no %s service (have %v)", want, names)
		}
	}
	for _, s := range p.Services {
		for _, v := range s.Volumes {
			if v.Type != "bind" {
				continue
			}
			if _, err := os.Stat(v.Source); err != nil {
				t.Errorf("%s mounts %s: %v", s.Name, v.Source, err)
			}
		}
		if s.Build != nil {
			if _, err := os.Stat(filepath.Join(s.Build.Context, s.Build.Dockerfile)); err != nil {
				t.Errorf("%s builds from %s: %v", s.Name, s.Build.Dockerfile, err)
			}
		}
	}
}
