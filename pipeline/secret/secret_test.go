package secret

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSecretResolvesAndNeverShows(t *testing.T) {
	got, err := Expand("${HOOK_KEY}", []string{"OTHER=x", "HOOK_KEY=k3y=with=equals"})
	if err != nil || got.Reveal() != "k3y=with=equals" {
		t.Fatalf("Expand = %q, %v", got.Reveal(), err)
	}
	if got, _ := Expand("literal", nil); got.Reveal() != "literal" {
		t.Fatalf("a literal changed: %q", got.Reveal())
	}
	if _, err := Expand("${UNSET_CW}", nil); err == nil || !strings.Contains(err.Error(), "UNSET_CW") {
		t.Fatalf("unset variable: %v", err)
	}
	path := filepath.Join(t.TempDir(), "s")
	if err := os.WriteFile(path, []byte("from-file\r\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if s, err := FromFile(path); err != nil || s.Reveal() != "from-file" {
		t.Fatalf("FromFile = %q, %v", s.Reveal(), err)
	}
	s := Secret("hunter2")
	j, _ := json.Marshal(struct{ P Secret }{s})
	y, _ := s.MarshalYAML()
	for _, out := range []string{fmt.Sprint(s), fmt.Sprintf("%v %s %#v %+v", s, s, s, struct{ P Secret }{s}), string(j), y.(string)} {
		if strings.Contains(out, "hunter2") {
			t.Errorf("shown: %s", out)
		}
	}
	if Secret("").String() != "" {
		t.Error("an empty secret should print empty, so config print shows it unset")
	}
}
