package embedded

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/chainwatch/chainwatch/ledgerclient"
	"github.com/chainwatch/chainwatch/ledgerclient/contract"
)

// The embedded ledger is a file that one process holds. While `chainwatch
// run` holds it, the other subcommands reach it through that process's
// operations endpoint, which serves this gateway on loopback addresses only:
// the embedded ledger is single-tenant by design, and a caller's role is
// taken from the request.

// GatewayPath is where Handler is mounted.
const GatewayPath = "/ledger/v1/"

type gatewayRequest struct {
	Function string          `json:"function"`
	Args     json.RawMessage `json:"args"`
	Caller   contract.Caller `json:"caller"`
	Evaluate bool            `json:"evaluate"`
}

type gatewayResponse struct {
	Result json.RawMessage `json:"result,omitempty"`
	TxID   string          `json:"tx_id,omitempty"`
	Error  string          `json:"error,omitempty"`
	Kind   string          `json:"kind,omitempty"` // forbidden, not-found, invalid, conflict
}

// Handler serves the gateway for l.
func (l *Ledger) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			http.Error(w, "POST only", http.StatusMethodNotAllowed)
			return
		}
		var req gatewayRequest
		if err := json.NewDecoder(io.LimitReader(r.Body, 8<<20)).Decode(&req); err != nil {
			http.Error(w, "bad request: "+err.Error(), http.StatusBadRequest)
			return
		}
		b := l.Client(req.Caller)
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
// ledger through its gateway at baseURL (e.g. http://127.0.0.1:9477).
func Remote(baseURL string, caller contract.Caller) ledgerclient.Backend {
	return &remote{url: strings.TrimRight(baseURL, "/") + GatewayPath, caller: caller}
}

type remote struct {
	url    string
	caller contract.Caller
}

func (r *remote) call(ctx context.Context, fn string, args []byte, evaluate bool) ([]byte, string, error) {
	body, err := json.Marshal(gatewayRequest{Function: fn, Args: args, Caller: r.caller, Evaluate: evaluate})
	if err != nil {
		return nil, "", err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, r.url, bytes.NewReader(body))
	if err != nil {
		return nil, "", err
	}
	req.Header.Set("Content-Type", "application/json")
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
