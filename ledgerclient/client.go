package ledgerclient

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/chainwatch/chainwatch/ledgerclient/contract"
)

// Client makes typed contract calls through a Backend.
type Client struct {
	Backend Backend
}

// New returns a Client over b.
func New(b Backend) *Client { return &Client{Backend: b} }

func submit[R any](ctx context.Context, c *Client, fn string, args any) (R, string, error) {
	var r R
	raw, err := json.Marshal(args)
	if err != nil {
		return r, "", fmt.Errorf("ledger %s: encode: %w", fn, err)
	}
	out, txID, err := c.Backend.Submit(ctx, fn, raw)
	if err != nil {
		return r, "", fmt.Errorf("ledger %s: %w", fn, err)
	}
	if err := json.Unmarshal(out, &r); err != nil {
		return r, "", fmt.Errorf("ledger %s: decode result: %w", fn, err)
	}
	return r, txID, nil
}

func evaluate[R any](ctx context.Context, c *Client, fn string, args any) (R, error) {
	var r R
	raw, err := json.Marshal(args)
	if err != nil {
		return r, fmt.Errorf("ledger %s: encode: %w", fn, err)
	}
	out, err := c.Backend.Evaluate(ctx, fn, raw)
	if err != nil {
		return r, fmt.Errorf("ledger %s: %w", fn, err)
	}
	if err := json.Unmarshal(out, &r); err != nil {
		return r, fmt.Errorf("ledger %s: decode result: %w", fn, err)
	}
	return r, nil
}

// RegisterDevice records a birth certificate (manufacturer).
func (c *Client) RegisterDevice(ctx context.Context, d contract.Device) (contract.Device, error) {
	r, _, err := submit[contract.Device](ctx, c, contract.FnRegisterDevice, d)
	return r, err
}

// UpdateDevice replaces an active device's certificate (manufacturer).
func (c *Client) UpdateDevice(ctx context.Context, d contract.Device) (contract.Device, error) {
	r, _, err := submit[contract.Device](ctx, c, contract.FnUpdateDevice, d)
	return r, err
}

// RevokeDevice revokes a device from now on (operator, manufacturer).
func (c *Client) RevokeDevice(ctx context.Context, id, reason string) (contract.Device, error) {
	return c.RevokeDeviceFrom(ctx, id, reason, time.Time{})
}

// RevokeDeviceFrom revokes a device with effect from the given time (zero:
// the transaction's time), e.g. when it was stolen.
func (c *Client) RevokeDeviceFrom(ctx context.Context, id, reason string, effective time.Time) (contract.Device, error) {
	r, _, err := submit[contract.Device](ctx, c, contract.FnRevokeDevice, contract.RevokeArgs{ID: id, Reason: reason, EffectiveAt: effective})
	return r, err
}

// GetDevice reads a birth certificate.
func (c *Client) GetDevice(ctx context.Context, id string) (contract.Device, error) {
	return evaluate[contract.Device](ctx, c, contract.FnGetDevice, contract.IDArgs{ID: id})
}

// ListDevices reads every birth certificate.
func (c *Client) ListDevices(ctx context.Context) ([]contract.Device, error) {
	return evaluate[[]contract.Device](ctx, c, contract.FnListDevices, struct{}{})
}

// ApproveFirmware approves a firmware hash for a profile (operator).
func (c *Client) ApproveFirmware(ctx context.Context, f contract.Firmware) (contract.Firmware, error) {
	r, _, err := submit[contract.Firmware](ctx, c, contract.FnApproveFirmware, f)
	return r, err
}

// ListFirmware reads approved firmware; profile "" lists all.
func (c *Client) ListFirmware(ctx context.Context, profile string) ([]contract.Firmware, error) {
	return evaluate[[]contract.Firmware](ctx, c, contract.FnListFirmware, contract.ProfileArgs{Profile: profile})
}

// AnchorBatches anchors several batches' Merkle roots in one transaction
// (service).
func (c *Client) AnchorBatches(ctx context.Context, anchors []contract.Anchor) ([]contract.Anchor, error) {
	r, _, err := submit[[]contract.Anchor](ctx, c, contract.FnAnchorBatches, contract.AnchorsArgs{Anchors: anchors})
	return r, err
}

// SealBatches records an anchoring period's seal: the root over its
// batches' descriptors (service).
func (c *Client) SealBatches(ctx context.Context, s contract.Seal) (contract.Seal, error) {
	r, _, err := submit[contract.Seal](ctx, c, contract.FnSealBatches, s)
	return r, err
}

// GetSeal reads one seal.
func (c *Client) GetSeal(ctx context.Context, id string) (contract.Seal, error) {
	return evaluate[contract.Seal](ctx, c, contract.FnGetSeal, contract.IDArgs{ID: id})
}

// ListSeals reads up to limit seals whose ids sort after after, in time
// order.
func (c *Client) ListSeals(ctx context.Context, after string, limit int) ([]contract.Seal, error) {
	return evaluate[[]contract.Seal](ctx, c, contract.FnListSeals, contract.ListSealsArgs{After: after, Limit: limit})
}

// AnchorBatch anchors a batch's Merkle root (service).
func (c *Client) AnchorBatch(ctx context.Context, a contract.Anchor) (contract.Anchor, error) {
	r, _, err := submit[contract.Anchor](ctx, c, contract.FnAnchorBatch, a)
	return r, err
}

// GetAnchor reads one anchor.
func (c *Client) GetAnchor(ctx context.Context, id string) (contract.Anchor, error) {
	return evaluate[contract.Anchor](ctx, c, contract.FnGetAnchor, contract.IDArgs{ID: id})
}

// ListAnchors reads a partition's anchors overlapping [from, to]; to < 0 means open-ended.
func (c *Client) ListAnchors(ctx context.Context, stream string, partition int32, from, to int64) ([]contract.Anchor, error) {
	return evaluate[[]contract.Anchor](ctx, c, contract.FnListAnchors, contract.ListAnchorsArgs{Stream: stream, Partition: partition, FromOffset: from, ToOffset: to})
}

// RecordAlert records an alert, idempotently by id (service).
func (c *Client) RecordAlert(ctx context.Context, a contract.Alert) (contract.Alert, error) {
	r, _, err := submit[contract.Alert](ctx, c, contract.FnRecordAlert, a)
	return r, err
}

// SetVerdict records an analyst's verdict (analyst).
func (c *Client) SetVerdict(ctx context.Context, id, verdict, note string) (contract.Alert, error) {
	r, _, err := submit[contract.Alert](ctx, c, contract.FnSetVerdict, contract.VerdictArgs{ID: id, Value: verdict, Note: note})
	return r, err
}

// GetAlert reads one alert.
func (c *Client) GetAlert(ctx context.Context, id string) (contract.Alert, error) {
	return evaluate[contract.Alert](ctx, c, contract.FnGetAlert, contract.IDArgs{ID: id})
}

// ListAlerts reads alerts matching a filter.
func (c *Client) ListAlerts(ctx context.Context, f contract.ListAlertsArgs) ([]contract.Alert, error) {
	return evaluate[[]contract.Alert](ctx, c, contract.FnListAlerts, f)
}

// AlertHistory reads every committed version of an alert, oldest first.
func (c *Client) AlertHistory(ctx context.Context, id string) ([]contract.AlertVersion, error) {
	return evaluate[[]contract.AlertVersion](ctx, c, contract.FnAlertHistory, contract.IDArgs{ID: id})
}

// RegisterModel registers a model artifact's hash (service, operator).
func (c *Client) RegisterModel(ctx context.Context, m contract.Model) (contract.Model, error) {
	r, _, err := submit[contract.Model](ctx, c, contract.FnRegisterModel, m)
	return r, err
}

// PromoteModel makes a registered model active for its profile.
func (c *Client) PromoteModel(ctx context.Context, hash string) (contract.Model, error) {
	r, _, err := submit[contract.Model](ctx, c, contract.FnPromoteModel, contract.HashArgs{Hash: hash})
	return r, err
}

// ListModels lists the registered models of a profile (all when empty),
// each marked active or not.
func (c *Client) ListModels(ctx context.Context, profile string) ([]contract.ListedModel, error) {
	return evaluate[[]contract.ListedModel](ctx, c, contract.FnListModels, contract.ProfileArgs{Profile: profile})
}

// GetActiveModel reads the active model of a profile.
func (c *Client) GetActiveModel(ctx context.Context, profile string) (contract.Model, error) {
	return evaluate[contract.Model](ctx, c, contract.FnGetActiveModel, contract.ProfileArgs{Profile: profile})
}

// Close closes the backend.
func (c *Client) Close() error { return c.Backend.Close() }

// Marshal encodes contract arguments the way Client does, for callers that
// drive a Backend directly.
func Marshal(v any) ([]byte, error) { return json.Marshal(v) }

// Unmarshal decodes a contract result.
func Unmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }
