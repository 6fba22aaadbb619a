package main

import (
	"fmt"
	"log/slog"

	"github.com/grafana/pyroscope-go"

	"github.com/chainwatch/chainwatch/pipeline/secret"
)

// startProfiling sends continuous profiles to a Pyroscope server (or
// Grafana Cloud Profiles) until the returned function is called.
func startProfiling(cfg ProfilingConfig, environ []string, log *slog.Logger) (func(), error) {
	pass, err := secret.Expand(cfg.BasicAuthPassword, environ)
	if err != nil {
		return nil, fmt.Errorf("profiling.basic_auth_password: %w", err)
	}
	p, err := pyroscope.Start(pyroscope.Config{
		ApplicationName: cfg.Application, ServerAddress: cfg.PyroscopeServer,
		Tags:          map[string]string{"service": "chainwatch", "instance": cfg.Instance},
		BasicAuthUser: cfg.BasicAuthUser, BasicAuthPassword: pass.Reveal(), TenantID: cfg.TenantID,
		UploadRate: cfg.UploadRate,
		ProfileTypes: []pyroscope.ProfileType{pyroscope.ProfileCPU, pyroscope.ProfileAllocObjects, pyroscope.ProfileAllocSpace,
			pyroscope.ProfileInuseObjects, pyroscope.ProfileInuseSpace, pyroscope.ProfileGoroutines},
	})
	if err != nil {
		return nil, fmt.Errorf("profiling.pyroscope_server: %w", err)
	}
	log.Info("continuous profiling on", "server", cfg.PyroscopeServer, "application", cfg.Application, "instance", cfg.Instance, "tenant", cfg.TenantID)
	return func() { _ = p.Stop() }, nil
}
