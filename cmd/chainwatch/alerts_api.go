package main

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/chainwatch/chainwatch/ledgerclient"
	"github.com/chainwatch/chainwatch/ledgerclient/contract"
)

// alertsAPI is the HTTP API through which a SIEM or SOAR playbook lists
// alerts and sends an analyst's verdict back, on the operations listener:
//
//	GET  /api/v1/alerts?device=&kind=&since=RFC3339&limit=N
//	POST /api/v1/alerts/{id}/verdict   {"verdict": "true-positive|false-positive|benign", "note": "…"}
//
// Every request carries "Authorization: Bearer <token>" (none: 401, a
// wrong one: 403). Verdicts are recorded on the ledger as the analyst
// role; sending the same verdict and note again changes nothing.
type alertsAPI struct {
	ledger   *ledgerclient.Client
	token    []byte
	verdicts *prometheus.CounterVec
	log      *slog.Logger
}

// apiToken reads the API token from path, creating it with a random value
// (mode 0600) when it does not exist.
func apiToken(path string) ([]byte, error) {
	raw, err := os.ReadFile(path)
	if err == nil {
		tok := strings.TrimSpace(string(raw))
		if len(tok) < 16 {
			return nil, fmt.Errorf("alerts.api.token_file: %s holds a token shorter than 16 characters", path)
		}
		return []byte(tok), nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("alerts.api.token_file: %w", err)
	}
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return nil, err
	}
	tok := hex.EncodeToString(b)
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("alerts.api.token_file: %w", err)
	}
	if err := os.WriteFile(path, []byte(tok+"\n"), 0o600); err != nil {
		return nil, fmt.Errorf("alerts.api.token_file: %w", err)
	}
	return []byte(tok), nil
}

func newAlertsAPI(ledger *ledgerclient.Client, token []byte, reg prometheus.Registerer, log *slog.Logger) *alertsAPI {
	v := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "chainwatch_verdicts_total",
		Help: "Analysts' verdicts recorded through the alerts API, by verdict and alert kind."}, []string{"verdict", "kind"})
	reg.MustRegister(v)
	return &alertsAPI{ledger: ledger, token: token, verdicts: v, log: log.With("component", "alerts-api")}
}

func (a *alertsAPI) register(mux *http.ServeMux) {
	mux.Handle("GET /api/v1/alerts", a.auth(a.list))
	mux.Handle("POST /api/v1/alerts/{id}/verdict", a.auth(a.verdict))
}

func (a *alertsAPI) auth(next http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || got == "" {
			w.Header().Set("WWW-Authenticate", `Bearer realm="chainwatch"`)
			apiError(w, http.StatusUnauthorized, "a bearer token is required")
			return
		}
		if subtle.ConstantTimeCompare([]byte(got), a.token) != 1 {
			apiError(w, http.StatusForbidden, "the token is not valid")
			return
		}
		next(w, r)
	})
}

func apiError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(map[string]string{"error": msg})
}

func apiJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}

func (a *alertsAPI) list(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	var since time.Time
	if s := q.Get("since"); s != "" {
		t, err := time.Parse(time.RFC3339, s)
		if err != nil {
			apiError(w, http.StatusBadRequest, fmt.Sprintf("since: %q is not RFC 3339", s))
			return
		}
		since = t
	}
	limit := 0
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			apiError(w, http.StatusBadRequest, fmt.Sprintf("limit: %q is not a non-negative integer", s))
			return
		}
		limit = n
	}
	got, err := a.ledger.ListAlerts(r.Context(), contract.ListAlertsArgs{DeviceID: q.Get("device"), Kind: q.Get("kind")})
	if err != nil {
		apiError(w, http.StatusBadGateway, "ledger: "+err.Error())
		return
	}
	out := make([]contract.Alert, 0, len(got))
	for _, al := range got {
		if !since.IsZero() && al.WindowEnd.Before(since) {
			continue
		}
		out = append(out, al)
		if limit > 0 && len(out) == limit {
			break
		}
	}
	apiJSON(w, out)
}

func (a *alertsAPI) verdict(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	var body struct {
		Verdict string `json:"verdict"`
		Note    string `json:"note"`
	}
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10)).Decode(&body); err != nil {
		apiError(w, http.StatusBadRequest, "body: "+err.Error())
		return
	}
	switch body.Verdict {
	case contract.VerdictTruePositive, contract.VerdictFalsePositive, contract.VerdictBenign:
	default:
		apiError(w, http.StatusBadRequest, fmt.Sprintf("verdict: must be true-positive, false-positive or benign, got %q", body.Verdict))
		return
	}
	cur, err := a.ledger.GetAlert(r.Context(), id)
	if errors.Is(err, contract.ErrNotFound) || err != nil && strings.Contains(err.Error(), contract.ErrNotFound.Error()) {
		apiError(w, http.StatusNotFound, "no alert "+id)
		return
	}
	if err != nil {
		apiError(w, http.StatusBadGateway, "ledger: "+err.Error())
		return
	}
	if v := cur.Verdict; v != nil && v.Value == body.Verdict && v.Note == body.Note {
		apiJSON(w, cur) // already recorded: nothing changes
		return
	}
	got, err := a.ledger.SetVerdict(r.Context(), id, body.Verdict, body.Note)
	if err != nil {
		apiError(w, http.StatusBadGateway, "ledger: "+err.Error())
		return
	}
	a.verdicts.WithLabelValues(body.Verdict, got.Kind).Inc()
	a.log.Info("verdict recorded", "alert", id, "verdict", body.Verdict, "tx", got.TxID)
	apiJSON(w, got)
}
