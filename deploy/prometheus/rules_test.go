// Package prometheus holds chainwatch's Prometheus rules and examples; its
// test runs promtool on them.
package prometheus

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

func promtool(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("promtool"); err == nil {
		return p
	}
	if os.Getenv("CI") != "" {
		t.Fatal("promtool is missing; .ci/run installs it with: apt-get install prometheus")
	}
	t.Skip("promtool is not installed (apt-get install prometheus)")
	return ""
}

// TestRulesCheckAndPassTheirUnitTests runs `promtool check rules` on every
// rule file, `promtool test rules` on the unit tests (synthetic series
// against the alerting rules) and `promtool check config` on the example
// configuration.
func TestRulesCheckAndPassTheirUnitTests(t *testing.T) {
	bin := promtool(t)
	rules, _ := filepath.Glob("rules/*.yml")
	tests, _ := filepath.Glob("tests/*.yml")
	if len(rules) == 0 || len(tests) == 0 {
		t.Fatal("no rule files or rule tests")
	}
	for _, args := range [][]string{
		append([]string{"check", "rules"}, rules...),
		append([]string{"test", "rules"}, tests...),
		{"check", "config", "prometheus.yml"},
	} {
		out, err := exec.Command(bin, args...).CombinedOutput()
		if err != nil {
			t.Errorf("promtool %v: %v\n%s", args, err, out)
		}
	}
}
