package contract

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Function names, as passed to Invoke and to the Fabric chaincode.
const (
	FnRegisterDevice  = "RegisterDevice"
	FnUpdateDevice    = "UpdateDevice"
	FnRevokeDevice    = "RevokeDevice"
	FnGetDevice       = "GetDevice"
	FnListDevices     = "ListDevices"
	FnApproveFirmware = "ApproveFirmware"
	FnListFirmware    = "ListFirmware"
	FnAnchorBatch     = "AnchorBatch"
	FnAnchorBatches   = "AnchorBatches"
	FnSealBatches     = "SealBatches"
	FnGetSeal         = "GetSeal"
	FnListSeals       = "ListSeals"
	FnGetAnchor       = "GetAnchor"
	FnListAnchors     = "ListAnchors"
	FnRecordAlert     = "RecordAlert"
	FnSetVerdict      = "SetVerdict"
	FnGetAlert        = "GetAlert"
	FnListAlerts      = "ListAlerts"
	FnAlertHistory    = "AlertHistory"
	FnRegisterModel   = "RegisterModel"
	FnPromoteModel    = "PromoteModel"
	FnGetModel        = "GetModel"
	FnGetActiveModel  = "GetActiveModel"
	FnListModels      = "ListModels"
)

// Argument types of the functions that take more than a record.
type (
	IDArgs struct {
		ID string `json:"id"`
	}
	RevokeArgs struct {
		ID     string `json:"id"`
		Reason string `json:"reason"`
		// EffectiveAt dates the revocation; zero means the transaction time.
		EffectiveAt time.Time `json:"effective_at,omitzero"`
	}
	ProfileArgs struct {
		Profile string `json:"profile"`
	}
	HashArgs struct {
		Hash string `json:"hash"`
	}
	AnchorsArgs struct {
		Anchors []Anchor `json:"anchors"`
	}
	ListAnchorsArgs struct {
		Stream    string `json:"stream"`
		Partition int32  `json:"partition"`
		// FromOffset and ToOffset bound the anchors returned to those that
		// overlap [FromOffset, ToOffset]; ToOffset < 0 means no upper bound.
		FromOffset int64 `json:"from_offset"`
		ToOffset   int64 `json:"to_offset"`
	}
	VerdictArgs struct {
		ID    string `json:"id"`
		Value string `json:"value"`
		Note  string `json:"note,omitempty"`
	}
	ListAlertsArgs struct {
		DeviceID string `json:"device_id,omitempty"`
		Kind     string `json:"kind,omitempty"`
		Limit    int    `json:"limit,omitempty"` // zero means all
	}
)

// Key prefixes of the world state.
const (
	keyDevice      = "device/"
	keyFirmware    = "firmware/"
	keyAnchor      = "anchor/"
	keyAnchorHead  = "anchorhead/"
	keyAlert       = "alert/"
	keyModel       = "model/"
	keyActiveModel = "activemodel/"
)

// Invoke runs the named function with JSON arguments and returns its JSON
// result. It is the single entry point both ledger hosts call.
func Invoke(tx Tx, fn string, args []byte) ([]byte, error) {
	h, ok := handlers[fn]
	if !ok {
		return nil, fmt.Errorf("%w: unknown function %q", ErrInvalid, fn)
	}
	if !tx.Caller.Role.Valid() {
		return nil, fmt.Errorf("%w: caller %q has no valid role", ErrForbidden, tx.Caller.ID)
	}
	if len(h.roles) > 0 && tx.Caller.Role != RoleAdmin && !slices.Contains(h.roles, tx.Caller.Role) {
		return nil, fmt.Errorf("%w: %s may not call %s (needs %v)", ErrForbidden, tx.Caller.Role, fn, h.roles)
	}
	return h.run(tx, args)
}

// ReadOnly reports whether fn only reads state, so hosts may evaluate it
// without ordering a transaction.
func ReadOnly(fn string) bool { return handlers[fn].readOnly }

type handler struct {
	roles    []Role // empty: any role
	readOnly bool
	run      func(Tx, []byte) ([]byte, error)
}

// bind adapts a typed contract function to the JSON calling convention.
func bind[A, R any](f func(Tx, A) (R, error)) func(Tx, []byte) ([]byte, error) {
	return func(tx Tx, raw []byte) ([]byte, error) {
		var a A
		if len(raw) > 0 {
			if err := json.Unmarshal(raw, &a); err != nil {
				return nil, fmt.Errorf("%w: arguments: %v", ErrInvalid, err)
			}
		}
		r, err := f(tx, a)
		if err != nil {
			return nil, err
		}
		return json.Marshal(r)
	}
}

var handlers = map[string]handler{
	FnRegisterDevice:  {roles: []Role{RoleManufacturer}, run: bind(RegisterDevice)},
	FnUpdateDevice:    {roles: []Role{RoleManufacturer}, run: bind(UpdateDevice)},
	FnRevokeDevice:    {roles: []Role{RoleOperator, RoleManufacturer}, run: bind(RevokeDevice)},
	FnGetDevice:       {readOnly: true, run: bind(GetDevice)},
	FnListDevices:     {readOnly: true, run: bind(ListDevices)},
	FnApproveFirmware: {roles: []Role{RoleOperator}, run: bind(ApproveFirmware)},
	FnListFirmware:    {readOnly: true, run: bind(ListFirmware)},
	FnAnchorBatch:     {roles: []Role{RoleService}, run: bind(AnchorBatch)},
	FnAnchorBatches:   {roles: []Role{RoleService}, run: bind(AnchorBatches)},
	FnSealBatches:     {roles: []Role{RoleService}, run: bind(SealBatches)},
	FnGetSeal:         {readOnly: true, run: bind(GetSeal)},
	FnListSeals:       {readOnly: true, run: bind(ListSeals)},
	FnGetAnchor:       {readOnly: true, run: bind(GetAnchor)},
	FnListAnchors:     {readOnly: true, run: bind(ListAnchors)},
	FnRecordAlert:     {roles: []Role{RoleService}, run: bind(RecordAlert)},
	FnSetVerdict:      {roles: []Role{RoleAnalyst}, run: bind(SetVerdict)},
	FnGetAlert:        {readOnly: true, run: bind(GetAlert)},
	FnListAlerts:      {readOnly: true, run: bind(ListAlerts)},
	FnAlertHistory:    {readOnly: true, run: bind(AlertHistory)},
	FnRegisterModel:   {roles: []Role{RoleService, RoleOperator}, run: bind(RegisterModel)},
	FnPromoteModel:    {roles: []Role{RoleOperator, RoleService}, run: bind(PromoteModel)},
	FnGetModel:        {readOnly: true, run: bind(GetModel)},
	FnGetActiveModel:  {readOnly: true, run: bind(GetActiveModel)},
	FnListModels:      {readOnly: true, run: bind(ListModels)},
}

func getJSON[T any](s State, key string) (*T, error) {
	raw, err := s.Get(key)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", key, err)
	}
	if raw == nil {
		return nil, nil
	}
	v := new(T)
	if err := json.Unmarshal(raw, v); err != nil {
		return nil, fmt.Errorf("decode %s: %w", key, err)
	}
	return v, nil
}

func putJSON(s State, key string, v any) error {
	raw, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return s.Put(key, raw)
}

// listJSON decodes the values under prefix that keep accepts (nil: all).
func listJSON[T any](s State, prefix string, keep func(*T) bool) ([]T, error) {
	return rangeJSON(s, prefix, prefixEnd(prefix), keep, 0)
}

// rangeJSON decodes the values of the keys in [start, end), in key order,
// that keep accepts (nil: all), stopping at limit of them (0: no limit).
func rangeJSON[T any](s State, start, end string, keep func(*T) bool, limit int) ([]T, error) {
	var out []T
	var decodeErr error
	err := s.Range(start, end, func(key string, raw []byte) bool {
		var v T
		if decodeErr = json.Unmarshal(raw, &v); decodeErr != nil {
			decodeErr = fmt.Errorf("decode %s: %w", key, decodeErr)
			return false
		}
		if keep == nil || keep(&v) {
			out = append(out, v)
		}
		return limit <= 0 || len(out) < limit
	})
	if err == nil {
		err = decodeErr
	}
	return out, err
}

// prefixEnd is the exclusive end of the key range under prefix. It must be
// valid UTF-8: Fabric carries range keys in protobuf strings, which refuse
// anything else, so the usual 0xff sentinel would crash the chaincode.
func prefixEnd(prefix string) string { return prefix + string(utf8.MaxRune) }

// validName accepts the identifiers used in keys: non-empty, no separators
// or control characters, at most 128 bytes.
func validName(what, s string) error {
	if s == "" || len(s) > 128 || strings.ContainsAny(s, "/\x00") || !utf8.ValidString(s) || strings.TrimSpace(s) != s {
		return fmt.Errorf("%w: %s %q must be 1–128 characters without '/' or surrounding spaces", ErrInvalid, what, s)
	}
	return nil
}

func validHash(what, s string) error {
	if b, err := hex.DecodeString(s); err != nil || len(b) != 32 {
		return fmt.Errorf("%w: %s must be a hex SHA-256, got %q", ErrInvalid, what, s)
	}
	return nil
}

// AnchorID names the anchor of stream partition's offsets first..last.
func AnchorID(stream string, partition int32, first, last int64) string {
	return fmt.Sprintf("%s/%d/%d-%d", stream, partition, first, last)
}

func anchorKey(stream string, partition int32, first int64) string {
	return fmt.Sprintf("%s%s/%010d/%020d", keyAnchor, stream, partition, first)
}

func anchorHeadKey(stream string, partition int32) string {
	return fmt.Sprintf("%s%s/%010d", keyAnchorHead, stream, partition)
}

// parseAnchorID splits an AnchorID.
func parseAnchorID(id string) (stream string, partition int32, first, last int64, err error) {
	parts := strings.Split(id, "/")
	if len(parts) != 3 {
		return "", 0, 0, 0, fmt.Errorf("%w: anchor id %q is not stream/partition/first-last", ErrInvalid, id)
	}
	p, err1 := strconv.ParseInt(parts[1], 10, 32)
	rng := strings.SplitN(parts[2], "-", 2)
	if err1 != nil || len(rng) != 2 {
		return "", 0, 0, 0, fmt.Errorf("%w: anchor id %q is not stream/partition/first-last", ErrInvalid, id)
	}
	f, err2 := strconv.ParseInt(rng[0], 10, 64)
	l, err3 := strconv.ParseInt(rng[1], 10, 64)
	if err2 != nil || err3 != nil {
		return "", 0, 0, 0, fmt.Errorf("%w: anchor id %q has bad offsets", ErrInvalid, id)
	}
	return parts[0], int32(p), f, l, nil
}

// stamp returns the transaction time in UTC.
func stamp(tx Tx) time.Time { return tx.Time.UTC() }
