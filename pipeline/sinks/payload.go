package sinks

import (
	"bytes"
	"fmt"
	"strings"
	"text/template"
	"time"

	"github.com/chainwatch/chainwatch/ledgerclient/contract"
)

// Severities, lowest first.
const (
	SeverityLow      = "low"
	SeverityMedium   = "medium"
	SeverityHigh     = "high"
	SeverityCritical = "critical"
)

var severityRank = map[string]int{SeverityLow: 1, SeverityMedium: 2, SeverityHigh: 3, SeverityCritical: 4}

// ValidSeverity reports whether s is a severity name.
func ValidSeverity(s string) bool { return severityRank[s] > 0 }

// Severity grades an alert for a SOC's triage:
//   - critical: anchored history changed (integrity) or a revoked device
//     still sending;
//   - high: an unknown (rogue) device, a forged signature, unapproved
//     firmware, and behaviour incidents of high confidence (an extreme
//     window);
//   - medium and low: behaviour incidents of medium and low confidence.
func Severity(a contract.Alert) string {
	switch a.Kind {
	case "integrity", "revoked-device":
		return SeverityCritical
	case "rogue-device", "bad-signature", "firmware-mismatch":
		return SeverityHigh
	}
	switch a.Confidence {
	case "high":
		return SeverityHigh
	case "medium":
		return SeverityMedium
	}
	return SeverityLow
}

// Payload is the alert content every format carries: the alert as the
// ledger recorded it, its severity, a one-line summary and the link.
type Payload struct {
	contract.Alert
	Severity string `json:"severity"`
	Summary  string `json:"summary"`
	Link     string `json:"link,omitempty"`
}

// Linker builds an alert's link from a text/template over the alert, for
// example https://grafana.example/d/chainwatch-device?var-device={{.DeviceID}}.
type Linker struct{ t *template.Template }

// NewLinker parses a link template; an empty one gives no links.
func NewLinker(tmpl string) (*Linker, error) {
	if tmpl == "" {
		return &Linker{}, nil
	}
	t, err := template.New("link").Option("missingkey=error").Parse(tmpl)
	if err != nil {
		return nil, err
	}
	// Execute once on an example so a template naming no alert field
	// fails at start-up, not on the first alert.
	if err := t.Execute(new(bytes.Buffer), contract.Alert{ID: "x", DeviceID: "d", WindowStart: time.Unix(0, 0), WindowEnd: time.Unix(60, 0)}); err != nil {
		return nil, err
	}
	return &Linker{t: t}, nil
}

// Link renders the link of a.
func (l *Linker) Link(a contract.Alert) string {
	if l == nil || l.t == nil {
		return ""
	}
	var b bytes.Buffer
	if err := l.t.Execute(&b, a); err != nil {
		return ""
	}
	return b.String()
}

// NewPayload prepares a's content.
func NewPayload(a contract.Alert, l *Linker) Payload {
	return Payload{Alert: a, Severity: Severity(a), Summary: Summary(a), Link: l.Link(a)}
}

// Summary is the one line an analyst reads first.
func Summary(a contract.Alert) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s on %s", a.Kind, a.DeviceID)
	if a.Profile != "" {
		fmt.Fprintf(&b, " (%s)", a.Profile)
	}
	if a.Incident != nil {
		fmt.Fprintf(&b, ", incident %s", a.Incident.Status)
		if a.Incident.OpenedBy != "" {
			fmt.Fprintf(&b, " (rule: %s)", a.Incident.OpenedBy)
		}
		fmt.Fprintf(&b, ", %d window(s)", a.Incident.Windows)
	}
	if len(a.Features) > 0 {
		f := a.Features[0]
		fmt.Fprintf(&b, ": %s=%.4g (baseline %.4g)", f.Feature, f.Value, f.Baseline)
	} else if a.Evidence.Detail != "" {
		fmt.Fprintf(&b, ": %s", a.Evidence.Detail)
	}
	return strings.Join(strings.Fields(b.String()), " ") // one line

}

// TopFeatures renders the contributing features as "name=value (baseline b)".
func TopFeatures(a contract.Alert) string {
	parts := make([]string, 0, len(a.Features))
	for _, f := range a.Features {
		parts = append(parts, fmt.Sprintf("%s=%.4g (baseline %.4g)", f.Feature, f.Value, f.Baseline))
	}
	return strings.Join(parts, "; ")
}

// Filter selects the alerts a sink receives. Zero value: all.
type Filter struct {
	MinSeverity string
	Kinds       []string
}

// Match reports whether a passes the filter.
func (f Filter) Match(a contract.Alert) bool {
	if f.MinSeverity != "" && severityRank[Severity(a)] < severityRank[f.MinSeverity] {
		return false
	}
	if len(f.Kinds) == 0 {
		return true
	}
	for _, k := range f.Kinds {
		if k == a.Kind {
			return true
		}
	}
	return false
}
