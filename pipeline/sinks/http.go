package sinks

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/chainwatch/chainwatch/ledgerclient/contract"
	"github.com/chainwatch/chainwatch/pipeline/secret"
)

// Headers of the json format. The signature is
// "sha256=" + hex(HMAC-SHA256(secret, timestamp + "." + body)), the
// timestamp Unix seconds, as GitHub and Stripe sign their webhooks; a
// receiver recomputes it over the raw body, compares in constant time and
// refuses timestamps more than SignatureTolerance from its clock (replay
// window). Idempotency-Key and X-Chainwatch-Alert-Id carry the alert id
// for deduplication of redeliveries.
const (
	HeaderSignature = "X-Chainwatch-Signature"
	HeaderTimestamp = "X-Chainwatch-Timestamp"
	HeaderAlertID   = "X-Chainwatch-Alert-Id"
)

// SignatureTolerance is the documented replay window of signed webhooks.
const SignatureTolerance = 5 * time.Minute

// Sign returns the json format's signature of body at timestamp ts.
func Sign(key []byte, ts int64, body []byte) string {
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(strconv.FormatInt(ts, 10)))
	mac.Write([]byte("."))
	mac.Write(body)
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}

// httpSink posts alerts in one of the HTTP formats.
type httpSink struct {
	cfg    WebhookConfig
	key    secret.Secret
	filter Filter
	links  *Linker
	client *http.Client
	url    string
	batch  int
	now    func() time.Time
}

func newHTTPSink(c WebhookConfig, key secret.Secret, f Filter, l *Linker, tlsCfg *tls.Config) (*httpSink, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = tlsCfg
	s := &httpSink{cfg: c, key: key, filter: f, links: l, client: &http.Client{Transport: tr, Timeout: c.Timeout},
		url: c.URL, batch: 100, now: time.Now}
	base := strings.TrimRight(c.URL, "/")
	switch c.Format {
	case FormatJSON:
		s.batch = 1 // one signed alert per request
	case FormatECS:
		if !strings.HasSuffix(base, "/_bulk") {
			s.url = base + "/_bulk"
		}
	case FormatAlertmanager:
		if !strings.HasSuffix(base, "/api/v2/alerts") {
			s.url = base + "/api/v2/alerts"
		}
	}
	return s, nil
}

func (s *httpSink) Name() string   { return s.cfg.Name }
func (s *httpSink) BatchSize() int { return s.batch }

// Close releases idle connections.
func (s *httpSink) Close() error {
	s.client.CloseIdleConnections()
	return nil
}

func (s *httpSink) Deliver(ctx context.Context, alerts []contract.Alert) error {
	var ps []Payload
	for _, a := range alerts {
		if s.filter.Match(a) {
			ps = append(ps, NewPayload(a, s.links))
		}
	}
	if len(ps) == 0 {
		return nil
	}
	var (
		body        []byte
		contentType = "application/json"
		err         error
	)
	switch s.cfg.Format {
	case FormatJSON:
		body, err = json.Marshal(ps[0])
	case FormatSplunkHEC:
		body, err = splunkEvents(ps)
	case FormatECS:
		body, err = ecsBulk(ps, s.cfg.Index)
		contentType = "application/x-ndjson"
	case FormatAlertmanager:
		body, err = json.Marshal(alertmanagerAlerts(ps))
	}
	if err != nil {
		return Permanent(fmt.Errorf("encode: %w", err))
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.url, bytes.NewReader(body))
	if err != nil {
		return Permanent(err)
	}
	req.Header.Set("Content-Type", contentType)
	req.Header.Set("User-Agent", "chainwatch")
	if len(ps) == 1 {
		req.Header.Set(HeaderAlertID, ps[0].ID)
		req.Header.Set("Idempotency-Key", ps[0].ID)
	}
	key := s.key.Reveal()
	switch s.cfg.Format {
	case FormatJSON:
		ts := s.now().Unix()
		req.Header.Set(HeaderTimestamp, strconv.FormatInt(ts, 10))
		req.Header.Set(HeaderSignature, Sign([]byte(key), ts, body))
	case FormatSplunkHEC:
		req.Header.Set("Authorization", "Splunk "+key)
	case FormatECS:
		if key != "" {
			req.Header.Set("Authorization", "ApiKey "+key)
		}
	case FormatAlertmanager:
		if key != "" {
			req.Header.Set("Authorization", "Bearer "+key)
		}
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return fmt.Errorf("post %s: %w", s.cfg.Name, redactURL(err))
	}
	defer resp.Body.Close()
	respBody, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err := statusError(resp.StatusCode, respBody); err != nil {
		return err
	}
	if s.cfg.Format == FormatECS {
		return bulkItemsError(respBody)
	}
	return nil
}

// redactURL drops the URL from a client error: it may carry credentials.
func redactURL(err error) error {
	var ue interface{ Unwrap() error }
	if errors.As(err, &ue) {
		if inner := ue.Unwrap(); inner != nil {
			return inner
		}
	}
	return err
}

// statusError classifies an HTTP answer: 2xx is accepted; 408, 429 and
// 5xx are worth retrying; any other status is a refusal for good.
func statusError(code int, body []byte) error {
	if code >= 200 && code < 300 {
		return nil
	}
	msg := strings.TrimSpace(string(body))
	if len(msg) > 300 {
		msg = msg[:300] + "…"
	}
	err := fmt.Errorf("HTTP %d: %s", code, msg)
	if code == http.StatusRequestTimeout || code == http.StatusTooManyRequests || code >= 500 {
		return err
	}
	return Permanent(err)
}

// splunkEvent is the Splunk HTTP Event Collector envelope
// (services/collector/event): time in epoch seconds, host, source,
// sourcetype and the event itself. Several events are concatenated in one
// request body.
type splunkEvent struct {
	Time       float64 `json:"time"`
	Host       string  `json:"host"`
	Source     string  `json:"source"`
	Sourcetype string  `json:"sourcetype"`
	Event      Payload `json:"event"`
}

func splunkEvents(ps []Payload) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	for _, p := range ps {
		t := p.WindowEnd
		ev := splunkEvent{Time: float64(t.UnixMilli()) / 1000, Host: p.DeviceID, Source: "chainwatch", Sourcetype: "chainwatch:alert", Event: p}
		if err := enc.Encode(ev); err != nil {
			return nil, err
		}
	}
	return b.Bytes(), nil
}

// ecsSeverity is event.severity, a number as ECS defines it (the
// higher, the more severe).
var ecsSeverity = map[string]int{SeverityLow: 21, SeverityMedium: 47, SeverityHigh: 73, SeverityCritical: 99}

// ecsDocument is an Elastic Common Schema 8.x alert document.
type ecsDocument struct {
	Timestamp time.Time `json:"@timestamp"`
	Message   string    `json:"message"`
	ECS       struct {
		Version string `json:"version"`
	} `json:"ecs"`
	Event struct {
		Kind      string    `json:"kind"`
		Category  []string  `json:"category"`
		Type      []string  `json:"type"`
		Severity  int       `json:"severity"`
		RiskScore float64   `json:"risk_score"`
		ID        string    `json:"id"`
		Start     time.Time `json:"start"`
		End       time.Time `json:"end"`
		Dataset   string    `json:"dataset"`
		Module    string    `json:"module"`
		Reference string    `json:"reference,omitempty"`
	} `json:"event"`
	Host struct {
		Name string `json:"name"`
		Type string `json:"type,omitempty"`
	} `json:"host"`
	Rule struct {
		ID       string `json:"id"`
		Name     string `json:"name"`
		Ruleset  string `json:"ruleset"`
		Category string `json:"category"`
	} `json:"rule"`
	Observer struct {
		Vendor  string `json:"vendor"`
		Product string `json:"product"`
		Type    string `json:"type"`
	} `json:"observer"`
	Labels     map[string]string `json:"labels,omitempty"`
	Chainwatch ecsChainwatch     `json:"chainwatch"`
}

// ecsChainwatch holds what ECS has no field for, under the vendor's own
// namespace as ECS recommends for custom fields.
type ecsChainwatch struct {
	Score      float64                 `json:"score"`
	Confidence string                  `json:"confidence"`
	Severity   string                  `json:"severity"`
	Profile    string                  `json:"profile,omitempty"`
	Features   []contract.Contribution `json:"features,omitempty"`
	ModelHash  string                  `json:"model_hash,omitempty"`
	Evidence   contract.Evidence       `json:"evidence"`
	TxID       string                  `json:"ledger_tx_id,omitempty"`
	Incident   *contract.Incident      `json:"incident,omitempty"`
}

func ecsDoc(p Payload) ecsDocument {
	var d ecsDocument
	d.Timestamp = p.WindowEnd.UTC()
	d.Message = p.Summary
	d.ECS.Version = "8.11.0"
	d.Event.Kind = "alert"
	d.Event.Category = []string{"intrusion_detection"}
	if p.Kind == "integrity" {
		d.Event.Category = []string{"file"} // stored records changed
	}
	d.Event.Type = []string{"info"}
	d.Event.Severity = ecsSeverity[p.Severity]
	d.Event.RiskScore = 100 * p.Score
	d.Event.ID = p.ID
	d.Event.Start, d.Event.End = p.WindowStart.UTC(), p.WindowEnd.UTC()
	d.Event.Dataset, d.Event.Module = "chainwatch.alerts", "chainwatch"
	d.Event.Reference = p.Link
	d.Host.Name, d.Host.Type = p.DeviceID, p.Profile
	d.Rule.ID, d.Rule.Name, d.Rule.Ruleset, d.Rule.Category = p.Kind, p.Kind, "chainwatch", p.Severity
	d.Observer.Vendor, d.Observer.Product, d.Observer.Type = "chainwatch", "chainwatch", "ids"
	d.Chainwatch = ecsChainwatch{Score: p.Score, Confidence: p.Confidence, Severity: p.Severity, Profile: p.Profile,
		Features: p.Features, ModelHash: p.ModelHash, Evidence: p.Evidence, TxID: p.TxID, Incident: p.Incident}
	return d
}

// ecsBulk is an Elasticsearch _bulk body: a create action naming the
// alert id as the document id (so a redelivery is refused as a conflict
// rather than indexed twice), then the document, one JSON per line.
func ecsBulk(ps []Payload, index string) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	for _, p := range ps {
		action := map[string]map[string]string{"create": {"_index": index, "_id": p.ID}}
		if err := enc.Encode(action); err != nil {
			return nil, err
		}
		if err := enc.Encode(ecsDoc(p)); err != nil {
			return nil, err
		}
	}
	return b.Bytes(), nil
}

// bulkItemsError reads a _bulk answer: an item created, or refused as a
// conflict (already indexed by an earlier delivery), is accepted; 429 and
// 5xx items make the batch retried; any other refusal is permanent.
func bulkItemsError(body []byte) error {
	var resp struct {
		Errors bool `json:"errors"`
		Items  []map[string]struct {
			Status int             `json:"status"`
			Error  json.RawMessage `json:"error"`
		} `json:"items"`
	}
	if err := json.Unmarshal(body, &resp); err != nil {
		return fmt.Errorf("_bulk answer: %w", err)
	}
	if !resp.Errors {
		return nil
	}
	var permanent error
	for _, item := range resp.Items {
		for _, r := range item {
			switch {
			case r.Status < 300, r.Status == http.StatusConflict:
			case r.Status == http.StatusTooManyRequests || r.Status >= 500:
				return fmt.Errorf("_bulk item %d: %s", r.Status, r.Error)
			default:
				permanent = Permanent(fmt.Errorf("_bulk item %d: %s", r.Status, r.Error))
			}
		}
	}
	return permanent
}

// amAlert is one alert of Alertmanager's POST /api/v2/alerts.
type amAlert struct {
	Labels       map[string]string `json:"labels"`
	Annotations  map[string]string `json:"annotations"`
	StartsAt     time.Time         `json:"startsAt"`
	EndsAt       *time.Time        `json:"endsAt,omitempty"`
	GeneratorURL string            `json:"generatorURL,omitempty"`
}

// alertmanagerAlerts labels each alert for routing (alertname, kind,
// severity, profile, device; incident when there is one, so an
// incident's events update one Alertmanager alert) and annotates it for
// the notification. A closed incident resolves its alert.
func alertmanagerAlerts(ps []Payload) []amAlert {
	out := make([]amAlert, 0, len(ps))
	for _, p := range ps {
		labels := map[string]string{
			"alertname": "chainwatch_" + strings.ReplaceAll(p.Kind, "-", "_"),
			"service":   "chainwatch", "kind": p.Kind, "severity": p.Severity, "device": p.DeviceID,
		}
		if p.Profile != "" {
			labels["profile"] = p.Profile
		}
		if p.Incident != nil {
			labels["incident"] = p.Incident.ID
		}
		ann := map[string]string{"summary": p.Summary, "alert_id": p.ID, "score": strconv.FormatFloat(p.Score, 'f', 3, 64), "confidence": p.Confidence}
		if tf := TopFeatures(p.Alert); tf != "" {
			ann["top_features"] = tf
		}
		if p.TxID != "" {
			ann["ledger_tx_id"] = p.TxID
		}
		if p.ModelHash != "" {
			ann["model_hash"] = p.ModelHash
		}
		if p.Link != "" {
			ann["link"] = p.Link
		}
		if p.Evidence.Detail != "" {
			ann["description"] = p.Evidence.Detail
		}
		a := amAlert{Labels: labels, Annotations: ann, StartsAt: p.WindowStart.UTC(), GeneratorURL: p.Link}
		if p.Incident != nil && p.Incident.Status == contract.IncidentClosed {
			end := p.WindowEnd.UTC()
			a.EndsAt = &end
		}
		out = append(out, a)
	}
	return out
}
