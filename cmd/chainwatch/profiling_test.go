package main

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"runtime/pprof"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/pprof/profile"
)

// TestProfilesReachAnIngestEndpointWithTagsAndStages runs pyroscope-go as
// chainwatch configures it against a local HTTP ingest endpoint: uploads
// carry the application name and the service and instance tags, basic
// auth and the tenant header, and CPU samples carry the stage label of the
// goroutine that spent them.
func TestProfilesReachAnIngestEndpointWithTagsAndStages(t *testing.T) {
	type upload struct {
		name, user, pass, tenant string
		cpu                      *profile.Profile
	}
	var mu sync.Mutex
	var got []upload
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/ingest" {
			http.NotFound(w, r)
			return
		}
		u := upload{name: r.URL.Query().Get("name"), tenant: r.Header.Get("X-Scope-OrgID")}
		u.user, u.pass, _ = r.BasicAuth()
		if err := r.ParseMultipartForm(32 << 20); err == nil {
			if f, _, err := r.FormFile("profile"); err == nil {
				raw, _ := io.ReadAll(f)
				if p, err := profile.ParseData(raw); err == nil {
					for _, st := range p.SampleType {
						if st.Type == "cpu" {
							u.cpu = p
						}
					}
				}
			}
		}
		mu.Lock()
		got = append(got, u)
		mu.Unlock()
	}))
	defer srv.Close()

	cfg := ProfilingConfig{PyroscopeServer: srv.URL, Application: "chainwatch", Instance: "test-instance-1",
		BasicAuthUser: "profiles", BasicAuthPassword: "${PYRO_PASS}", TenantID: "soc-team", UploadRate: 500 * time.Millisecond}
	stop, err := startProfiling(cfg, []string{"PYRO_PASS=pyro-secret"}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	// Work under a stage label, as the pipeline's stage goroutines run.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	pprof.Do(ctx, pprof.Labels("stage", "detect"), func(ctx context.Context) {
		x := 0.0
		for ctx.Err() == nil {
			for i := range 100000 {
				x += float64(i % 7)
			}
		}
		_ = x
	})
	stop()

	mu.Lock()
	defer mu.Unlock()
	var cpus []*profile.Profile
	for _, u := range got {
		if !strings.HasPrefix(u.name, "chainwatch{") || !strings.Contains(u.name, "service=chainwatch") || !strings.Contains(u.name, "instance=test-instance-1") {
			t.Errorf("upload named %q lacks the application or its tags", u.name)
		}
		if u.user != "profiles" || u.pass != "pyro-secret" || u.tenant != "soc-team" {
			t.Errorf("upload %q: basic auth %q/%q, tenant %q", u.name, u.user, u.pass, u.tenant)
		}
		if u.cpu != nil {
			cpus = append(cpus, u.cpu)
		}
	}
	if len(got) == 0 || len(cpus) == 0 {
		t.Fatalf("%d uploads, none with a CPU profile", len(got))
	}
	// The labelled work may fall in any upload (the last one, at stop,
	// can hold only what came after it).
	labelled := false
	for _, cpu := range cpus {
		for _, s := range cpu.Sample {
			if s.Label["stage"] != nil && s.Label["stage"][0] == "detect" {
				labelled = true
			}
		}
	}
	if !labelled {
		t.Error("no CPU sample carries the stage label")
	}
}
