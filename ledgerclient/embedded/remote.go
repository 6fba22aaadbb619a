package embedded

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	"github.com/chainwatch/chainwatch/ledgerclient"
	"github.com/chainwatch/chainwatch/ledgerclient/contract"
)

// The embedded ledger is a file that one process holds. While `chainwatch
// run` holds it, the other subcommands reach it through that process's
// operations endpoint, which serves this gateway on loopback addresses only.
//
// A caller's identity and role come from a credential, never from the
// request: the process writes one random bearer token per role into its data
// directory (mode 0600, WriteGatewayTokens), and a subcommand run by a user
// who can read it sends the token of the role it acts as. A web page the
// user visits cannot read the file; and since a browser cannot send a
// cross-origin request without an Origin header, nor a JSON content type
// without a preflight the gateway never answers, nor a Host of its own
// choosing, requests with an Origin, another content type or a Host that is
// not loopback are refused before the token is looked at (cross-site request
// forgery and DNS rebinding).

// GatewayPath is where Handler is mounted.
const GatewayPath = "/ledger/v1/"

type gatewayRequest struct {
	Function string          `json:"function"`
	Args     json.RawMessage `json:"args"`
	Evaluate bool            `json:"evaluate"`
}

// GatewayAuth maps the gateway's bearer tokens to the callers they stand for.
type GatewayAuth map[string]contract.Caller

// tokenFile is where the token of a role is written in the token directory.
func tokenFile(dir string, role contract.Role) string {
	return filepath.Join(dir, string(role)+".token")
}

// WriteGatewayTokens makes a fresh random token for each role, writes each
// to dir (created 0700, files 0600), and returns the tokens with the local
// callers they stand for. Tokens of an earlier process are replaced.
func WriteGatewayTokens(dir string, roles ...contract.Role) (GatewayAuth, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("gateway tokens: %w", err)
	}
	auth := GatewayAuth{}
	for _, role := range roles {
		raw := make([]byte, 32)
		if _, err := rand.Read(raw); err != nil {
			return nil, fmt.Errorf("gateway tokens: %w", err)
		}
		token := hex.EncodeToString(raw)
		path := tokenFile(dir, role)
		tmp := path + ".tmp"
		if err := os.WriteFile(tmp, []byte(token+"\n"), 0o600); err != nil {
			return nil, fmt.Errorf("gateway tokens: %w", err)
		}
		if err := os.Rename(tmp, path); err != nil {
			return nil, fmt.Errorf("gateway tokens: %w", err)
		}
		auth[token] = LocalCaller(role)
	}
	return auth, nil
}

// RemoveGatewayTokens deletes the token files of the roles (at shutdown).
func RemoveGatewayTokens(dir string, roles ...contract.Role) {
	for _, role := range roles {
		_ = os.Remove(tokenFile(dir, role))
	}
}

// ReadGatewayToken reads the token a running process wrote for role.
func ReadGatewayToken(dir string, role contract.Role) (string, error) {
	raw, err := os.ReadFile(tokenFile(dir, role))
	if err != nil {
		return "", fmt.Errorf("gateway token for role %s: %w", role, err)
	}
	return strings.TrimSpace(string(raw)), nil
}

// loopbackHost reports whether a Host header names a loopback address.
func loopbackHost(host string) bool {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.Trim(host, "[]")
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

type gatewayResponse struct {
	Result json.RawMessage `json:"result,omitempty"`
	TxID   string          `json:"tx_id,omitempty"`
	Error  string          `json:"error,omitempty"`
	Kind   string          `json:"kind,omitempty"` // forbidden, not-found, invalid, conflict
}

// Handler serves the gateway for l to the callers auth names.
func (l *Ledger) Handler(auth GatewayAuth) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.Method != http.MethodPost:
			http.Error(w, "POST only", http.StatusMethodNotAllowed)
			return
		case !loopbackHost(r.Host):
			http.Error(w, "forbidden: the ledger gateway answers only requests addressed to a loopback host", http.StatusForbidden)
			return
		case r.Header.Get("Origin") != "":
			http.Error(w, "forbidden: the ledger gateway does not answer browsers (request has an Origin)", http.StatusForbidden)
			return
		}
		if ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); ct != "application/json" {
			http.Error(w, "forbidden: the ledger gateway takes application/json only", http.StatusForbidden)
			return
		}
		token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || token == "" {
			w.Header().Set("WWW-Authenticate", `Bearer realm="chainwatch ledger gateway"`)
			http.Error(w, "unauthorized: send the role's token from the data directory's gateway/ as a bearer token", http.StatusUnauthorized)
			return
		}
		caller, ok := auth.caller(token)
		if !ok {
			http.Error(w, "forbidden: unknown token", http.StatusForbidden)
			return
		}
		var req gatewayRequest
		if err := json.NewDecoder(io.LimitReader(r.Body, 8<<20)).Decode(&req); err != nil {
			http.Error(w, "bad request: "+err.Error(), http.StatusBadRequest)
			return
		}
		b := l.Client(caller)
		var resp gatewayResponse
		var err error
		if req.Evaluate {
			resp.Result, err = b.Evaluate(r.Context(), req.Function, req.Args)
		} else {
			resp.Result, resp.TxID, err = b.Submit(r.Context(), req.Function, req.Args)
		}
		if err != nil {
			resp = gatewayResponse{Error: err.Error(), Kind: errorKind(err)}
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(resp)
	})
}

// caller finds the caller of a token, comparing in constant time.
func (a GatewayAuth) caller(token string) (contract.Caller, bool) {
	for t, c := range a {
		if subtle.ConstantTimeCompare([]byte(t), []byte(token)) == 1 {
			return c, true
		}
	}
	return contract.Caller{}, false
}

var kinds = []struct {
	name string
	err  error
}{
	{"forbidden", contract.ErrForbidden}, {"not-found", contract.ErrNotFound},
	{"invalid", contract.ErrInvalid}, {"conflict", contract.ErrConflict},
}

func errorKind(err error) string {
	for _, k := range kinds {
		if errors.Is(err, k.err) {
			return k.name
		}
	}
	return ""
}

// Remote returns a Backend that reaches a running process's embedded
// ledger through its gateway at baseURL (e.g. http://127.0.0.1:9477), as
// the caller the token stands for.
func Remote(baseURL, token string) ledgerclient.Backend {
	return &remote{url: strings.TrimRight(baseURL, "/") + GatewayPath, token: token}
}

type remote struct {
	url, token string
}

func (r *remote) call(ctx context.Context, fn string, args []byte, evaluate bool) ([]byte, string, error) {
	body, err := json.Marshal(gatewayRequest{Function: fn, Args: args, Evaluate: evaluate})
	if err != nil {
		return nil, "", err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, r.url, bytes.NewReader(body))
	if err != nil {
		return nil, "", err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+r.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, "", fmt.Errorf("embedded ledger gateway %s: %w", r.url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return nil, "", fmt.Errorf("embedded ledger gateway %s: %s: %s", r.url, resp.Status, bytes.TrimSpace(msg))
	}
	var out gatewayResponse
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return nil, "", fmt.Errorf("embedded ledger gateway: %w", err)
	}
	if out.Error != "" {
		for _, k := range kinds {
			if k.name == out.Kind {
				return nil, "", fmt.Errorf("%w: %s", k.err, out.Error)
			}
		}
		return nil, "", errors.New(out.Error)
	}
	return out.Result, out.TxID, nil
}

func (r *remote) Submit(ctx context.Context, fn string, args []byte) ([]byte, string, error) {
	return r.call(ctx, fn, args, false)
}

func (r *remote) Evaluate(ctx context.Context, fn string, args []byte) ([]byte, error) {
	out, _, err := r.call(ctx, fn, args, true)
	return out, err
}

func (r *remote) Subscribe(context.Context) (<-chan ledgerclient.Event, error) {
	return nil, errors.New("embedded ledger gateway: events are delivered only in the process that holds the ledger")
}

func (r *remote) Close() error { return nil }
