package contract

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"time"
)

// AlertID is the deterministic identity of an alert: the same device,
// window, kind and model always give the same id, so replaying records or
// retrying a sink never creates a second alert.
func AlertID(kind, deviceID string, windowStart, windowEnd time.Time, modelHash string) string {
	h := sha256.New()
	fmt.Fprintf(h, "chainwatch-alert\x00%s\x00%s\x00%d\x00%d\x00%s", kind, deviceID,
		windowStart.UnixNano(), windowEnd.UnixNano(), modelHash)
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// IncidentID is the deterministic identity of an incident: its kind, its
// device and the start of its first window.
func IncidentID(kind, deviceID string, firstWindowStart time.Time) string {
	h := sha256.New()
	fmt.Fprintf(h, "chainwatch-incident\x00%s\x00%s\x00%d", kind, deviceID, firstWindowStart.UnixNano())
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// IncidentEventID is the alert id of one event of an incident.
func IncidentEventID(incidentID, status string, seq int) string {
	h := sha256.New()
	fmt.Fprintf(h, "chainwatch-incident-event\x00%s\x00%s\x00%d", incidentID, status, seq)
	return hex.EncodeToString(h.Sum(nil)[:16])
}

func validKind(k string) bool {
	switch k {
	case AlertBehaviour, AlertRogueDevice, AlertRevokedDevice, AlertBadSignature, AlertFirmwareMismatch, AlertIntegrity:
		return true
	}
	return false
}

// RecordAlert stores an alert. Recording an id that exists is a no-op that
// returns the first record, transaction id included.
func RecordAlert(tx Tx, a Alert) (Alert, error) {
	if err := validName("alert id", a.ID); err != nil {
		return Alert{}, err
	}
	if !validKind(a.Kind) {
		return Alert{}, fmt.Errorf("%w: alert kind %q", ErrInvalid, a.Kind)
	}
	if a.DeviceID == "" && a.Kind != AlertIntegrity {
		return Alert{}, fmt.Errorf("%w: alert %s has no device", ErrInvalid, a.ID)
	}
	if math.IsNaN(a.Score) || a.Score < 0 || a.Score > 1 {
		return Alert{}, fmt.Errorf("%w: score %v outside [0, 1]", ErrInvalid, a.Score)
	}
	old, err := getJSON[Alert](tx.State, keyAlert+a.ID)
	if err != nil || old != nil {
		return deref(old), err
	}
	a.TxID, a.RecordedAt, a.Verdict = tx.ID, stamp(tx), nil
	return a, putJSON(tx.State, keyAlert+a.ID, a)
}

// SetVerdict records an analyst's verdict on an alert; a later verdict
// replaces an earlier one (the ledger's history keeps both).
func SetVerdict(tx Tx, v VerdictArgs) (Alert, error) {
	switch v.Value {
	case VerdictTruePositive, VerdictFalsePositive, VerdictBenign:
	default:
		return Alert{}, fmt.Errorf("%w: verdict %q (want %s, %s or %s)", ErrInvalid, v.Value, VerdictTruePositive, VerdictFalsePositive, VerdictBenign)
	}
	a, err := getJSON[Alert](tx.State, keyAlert+v.ID)
	if err != nil {
		return Alert{}, err
	}
	if a == nil {
		return Alert{}, fmt.Errorf("%w: alert %s", ErrNotFound, v.ID)
	}
	a.Verdict = &Verdict{Value: v.Value, Note: v.Note, Analyst: tx.Caller.ID, At: stamp(tx)}
	return *a, putJSON(tx.State, keyAlert+a.ID, a)
}

// GetAlert returns one alert.
func GetAlert(tx Tx, a IDArgs) (Alert, error) {
	got, err := getJSON[Alert](tx.State, keyAlert+a.ID)
	if err != nil {
		return Alert{}, err
	}
	if got == nil {
		return Alert{}, fmt.Errorf("%w: alert %s", ErrNotFound, a.ID)
	}
	return *got, nil
}

// ListAlerts returns alerts matching the filter, by id.
func ListAlerts(tx Tx, a ListAlertsArgs) ([]Alert, error) {
	out, err := listJSON(tx.State, keyAlert, func(x *Alert) bool {
		return (a.DeviceID == "" || x.DeviceID == a.DeviceID) && (a.Kind == "" || x.Kind == a.Kind)
	})
	if a.Limit > 0 && len(out) > a.Limit {
		out = out[:a.Limit]
	}
	return out, err
}

// AlertVersion is one committed version of an alert record.
type AlertVersion struct {
	TxID  string    `json:"tx_id"`
	Time  time.Time `json:"time"`
	Alert Alert     `json:"alert"`
}

// AlertHistory returns every committed version of an alert, oldest first:
// its recording and each verdict an analyst set since.
func AlertHistory(tx Tx, a IDArgs) ([]AlertVersion, error) {
	entries, err := tx.State.History(keyAlert + a.ID)
	if err != nil {
		return nil, err
	}
	if len(entries) == 0 {
		return nil, fmt.Errorf("%w: alert %s", ErrNotFound, a.ID)
	}
	out := make([]AlertVersion, 0, len(entries))
	for _, e := range entries {
		v := AlertVersion{TxID: e.TxID, Time: e.Time}
		if err := json.Unmarshal(e.Value, &v.Alert); err != nil {
			return nil, fmt.Errorf("decode alert %s version of tx %s: %w", a.ID, e.TxID, err)
		}
		out = append(out, v)
	}
	return out, nil
}
