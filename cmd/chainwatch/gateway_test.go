package main

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chainwatch/chainwatch/ledgerclient/contract"
	"github.com/chainwatch/chainwatch/ledgerclient/embedded"
)

func freeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestLedgerGatewayTakesRolesFromTokensOnly runs the service, then reaches
// its embedded ledger the way the CLI does and the ways an attacker would:
// the CLI, with the tokens `run` wrote in the data directory, registers and
// lists devices; a cross-origin browser request, a request without a
// token, one whose body claims another role and one with a rebound Host are
// all refused, and the device they tried to revoke stays active.
func TestLedgerGatewayTakesRolesFromTokensOnly(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the service")
	}
	dir := filepath.Join(t.TempDir(), "data")
	listen := freeAddr(t)
	t.Setenv("CHAINWATCH_HTTP_LISTEN", listen)
	t.Setenv("CHAINWATCH_KAFKA_EMBEDDED_LISTEN", freeAddr(t))
	t.Setenv("CHAINWATCH_SIMULATOR_ENABLED", "false")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		root := newRootCommand()
		root.SetOut(io.Discard)
		root.SetArgs([]string{"run", "--data-dir", dir, "--duration", "2m"})
		done <- root.ExecuteContext(ctx)
	}()
	defer func() {
		cancel()
		<-done
		if _, err := os.Stat(filepath.Join(dir, "gateway", "operator.token")); !os.IsNotExist(err) {
			t.Errorf("gateway token left behind after shutdown: %v", err)
		}
	}()
	gateway := "http://" + listen + embedded.GatewayPath
	for deadline := time.Now().Add(30 * time.Second); ; {
		resp, err := http.Get("http://" + listen + "/healthz")
		if err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("service did not come up")
		}
		time.Sleep(100 * time.Millisecond)
	}
	info, err := os.Stat(filepath.Join(dir, "gateway", "operator.token"))
	if err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("operator token: %v, mode %v; want 0600", err, info)
	}

	// The CLI works through the gateway.
	if _, err := runCLI(t, "devices", "register", "--data-dir", dir, "--id", "meter-0001", "--profile", "meter", "--owner", "acme"); err != nil {
		t.Fatalf("register through the gateway: %v", err)
	}
	active := func() bool {
		out, err := runCLI(t, "devices", "list", "--data-dir", dir)
		if err != nil {
			t.Fatalf("list through the gateway: %v", err)
		}
		return strings.Contains(out, `"meter-0001"`) && strings.Contains(out, `"active"`)
	}
	if !active() {
		t.Fatal("registered device not listed as active")
	}

	post := func(body, contentType string, header map[string]string) int {
		req, _ := http.NewRequest(http.MethodPost, gateway, strings.NewReader(body))
		req.Header.Set("Content-Type", contentType)
		for k, v := range header {
			if k == "Host" {
				req.Host = v
			} else {
				req.Header.Set(k, v)
			}
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		if resp.StatusCode == http.StatusOK && bytes.Contains(raw, []byte(`"error"`)) {
			return http.StatusForbidden // refused by the contract (the role the token stands for)
		}
		return resp.StatusCode
	}
	revoke := `{"function":"RevokeDevice","args":{"id":"meter-0001","reason":"csrf demo"},"caller":{"id":"evil","role":"operator"}}`
	analyst, err := embedded.ReadGatewayToken(filepath.Join(dir, "gateway"), contract.RoleAnalyst)
	if err != nil {
		t.Fatal(err)
	}
	operator, err := embedded.ReadGatewayToken(filepath.Join(dir, "gateway"), contract.RoleOperator)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name        string
		contentType string
		header      map[string]string
		want        int
	}{
		{"cross-origin page", "text/plain", map[string]string{"Origin": "http://evil.example"}, http.StatusForbidden},
		{"cross-origin page with the operator's token", "application/json", map[string]string{"Origin": "http://evil.example", "Authorization": "Bearer " + operator}, http.StatusForbidden},
		{"no token", "application/json", nil, http.StatusUnauthorized},
		{"wrong token", "application/json", map[string]string{"Authorization": "Bearer 00ff"}, http.StatusForbidden},
		{"analyst's token, body claims operator", "application/json", map[string]string{"Authorization": "Bearer " + analyst}, http.StatusForbidden},
		{"DNS rebinding", "application/json", map[string]string{"Host": "evil.example:9477", "Authorization": "Bearer " + operator}, http.StatusForbidden},
	} {
		if got := post(revoke, c.contentType, c.header); got != c.want {
			t.Errorf("%s: status %d, want %d", c.name, got, c.want)
		}
		if !active() {
			t.Fatalf("%s revoked the device", c.name)
		}
	}
	// The operator's own CLI may revoke.
	if _, err := runCLI(t, "devices", "revoke", "meter-0001", "--data-dir", dir, "--reason", "decommissioned"); err != nil {
		t.Fatalf("revoke through the gateway: %v", err)
	}
	if active() {
		t.Fatal("the operator's revocation did not take")
	}
}
