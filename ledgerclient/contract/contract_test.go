package contract

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"testing"
	"time"
)

// memState is a plain map: the contract's logic needs nothing more, which is
// what lets it run unchanged on the embedded ledger and as chaincode.
type memState map[string][]byte

func (m memState) Get(k string) ([]byte, error) { return m[k], nil }
func (m memState) Put(k string, v []byte) error {
	m[k] = append([]byte(nil), v...)
	// Each Put commits at once here; history lives under a key the
	// contract never uses, one entry per write.
	h, _ := m.History(k)
	h = append(h, HistoryEntry{TxID: fmt.Sprintf("w%d", len(h)), Value: m[k]})
	raw, _ := json.Marshal(h)
	m["\x00history/"+k] = raw
	return nil
}
func (m memState) History(k string) ([]HistoryEntry, error) {
	var h []HistoryEntry
	if raw := m["\x00history/"+k]; raw != nil {
		_ = json.Unmarshal(raw, &h)
	}
	return h, nil
}
func (m memState) Range(start, end string, fn func(string, []byte) bool) error {
	var keys []string
	for k := range m {
		if k >= start && k < end {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	for _, k := range keys {
		if !fn(k, m[k]) {
			break
		}
	}
	return nil
}

type harness struct {
	t     *testing.T
	state memState
	n     int
}

func newHarness(t *testing.T) *harness { return &harness{t: t, state: memState{}} }

// call invokes fn as role with args and decodes the result into out.
func (h *harness) call(role Role, fn string, args any, out any) error {
	h.n++
	raw, err := json.Marshal(args)
	if err != nil {
		h.t.Fatal(err)
	}
	res, err := Invoke(Tx{State: h.state, Caller: Caller{ID: "id-" + string(role), Role: role},
		ID: fmt.Sprintf("tx-%d", h.n), Time: time.Date(2026, 11, 24, 12, 0, h.n, 0, time.UTC)}, fn, raw)
	if err != nil {
		return err
	}
	if out != nil {
		if err := json.Unmarshal(res, out); err != nil {
			h.t.Fatal(err)
		}
	}
	return nil
}

func (h *harness) must(role Role, fn string, args any, out any) {
	h.t.Helper()
	if err := h.call(role, fn, args, out); err != nil {
		h.t.Fatalf("%s as %s: %v", fn, role, err)
	}
}

func sha(s string) string {
	b := sha256.Sum256([]byte(s))
	return hex.EncodeToString(b[:])
}

func TestDevices(t *testing.T) {
	h := newHarness(t)
	var d Device
	h.must(RoleManufacturer, FnRegisterDevice, Device{ID: "cam-1", Profile: "camera", Owner: "acme", MACs: []string{"AA-BB-CC-00-11-22"}, IPs: []string{"10.0.0.5"}, Firmware: sha("fw")}, &d)
	if d.Status != DeviceActive || d.RegisteredBy != "id-manufacturer" || d.MACs[0] != "aa:bb:cc:00:11:22" {
		t.Fatalf("registered %+v", d)
	}
	if err := h.call(RoleManufacturer, FnRegisterDevice, Device{ID: "cam-1", Profile: "camera", Owner: "acme"}, nil); !errors.Is(err, ErrConflict) {
		t.Errorf("double registration: %v", err)
	}
	h.must(RoleManufacturer, FnUpdateDevice, Device{ID: "cam-1", Profile: "camera", Owner: "globex"}, &d)
	if d.Owner != "globex" || d.RegisteredBy != "id-manufacturer" {
		t.Errorf("update lost fields: %+v", d)
	}
	if err := h.call(RoleManufacturer, FnUpdateDevice, Device{ID: "cam-1", Profile: "meter", Owner: "globex"}, nil); !errors.Is(err, ErrInvalid) {
		t.Errorf("profile change: %v", err)
	}
	if err := h.call(RoleOperator, FnRevokeDevice, RevokeArgs{ID: "cam-1"}, nil); !errors.Is(err, ErrInvalid) {
		t.Errorf("revocation without reason: %v", err)
	}
	h.must(RoleOperator, FnRevokeDevice, RevokeArgs{ID: "cam-1", Reason: "stolen"}, &d)
	h.must(RoleOperator, FnRevokeDevice, RevokeArgs{ID: "cam-1", Reason: "again"}, &d)
	if d.Status != DeviceRevoked || d.RevokedReason != "stolen" || d.RevokedAt.IsZero() {
		t.Errorf("revocation %+v, want the first reason and time kept", d)
	}
	stolen := time.Date(2026, 11, 1, 3, 0, 0, 0, time.UTC)
	h.must(RoleManufacturer, FnRegisterDevice, Device{ID: "cam-2", Profile: "camera", Owner: "acme"}, nil)
	h.must(RoleOperator, FnRevokeDevice, RevokeArgs{ID: "cam-2", Reason: "stolen", EffectiveAt: stolen}, &d)
	if !d.RevokedAt.Equal(stolen) {
		t.Errorf("backdated revocation took effect at %v, want %v", d.RevokedAt, stolen)
	}
	if err := h.call(RoleManufacturer, FnUpdateDevice, Device{ID: "cam-1", Profile: "camera", Owner: "x"}, nil); !errors.Is(err, ErrConflict) {
		t.Errorf("update of a revoked device: %v", err)
	}
	h.must(RoleManufacturer, FnRegisterDevice, Device{ID: "m-1", Profile: "meter", Owner: "acme"}, nil)
	var list []Device
	h.must(RoleAnalyst, FnListDevices, struct{}{}, &list)
	if len(list) != 3 || list[0].ID != "cam-1" || list[2].ID != "m-1" {
		t.Errorf("list %+v", list)
	}
	if err := h.call(RoleAnalyst, FnGetDevice, IDArgs{ID: "nope"}, nil); !errors.Is(err, ErrNotFound) {
		t.Errorf("get unknown: %v", err)
	}
}

func TestFirmwareApprovalIsIdempotent(t *testing.T) {
	h := newHarness(t)
	var f1, f2 Firmware
	h.must(RoleOperator, FnApproveFirmware, Firmware{Profile: "camera", Hash: sha("v1"), Version: "1"}, &f1)
	h.must(RoleOperator, FnApproveFirmware, Firmware{Profile: "camera", Hash: sha("v1"), Version: "1-again"}, &f2)
	if f2.Version != "1" || !f2.ApprovedAt.Equal(f1.ApprovedAt) {
		t.Errorf("second approval %+v, want the first", f2)
	}
	h.must(RoleOperator, FnApproveFirmware, Firmware{Profile: "meter", Hash: sha("m1")}, nil)
	var list []Firmware
	h.must(RoleAnalyst, FnListFirmware, ProfileArgs{Profile: "camera"}, &list)
	if len(list) != 1 {
		t.Errorf("camera firmware %+v", list)
	}
	h.must(RoleAnalyst, FnListFirmware, ProfileArgs{}, &list)
	if len(list) != 2 {
		t.Errorf("all firmware %+v", list)
	}
}

func TestAnchorsAreContiguousAndRetriesAreSafe(t *testing.T) {
	h := newHarness(t)
	a := Anchor{Stream: "iot.flows", Partition: 2, FirstOffset: 0, LastOffset: 99, Count: 100, MerkleRoot: sha("b0")}
	var got, again Anchor
	h.must(RoleService, FnAnchorBatch, a, &got)
	if got.ID != "iot.flows/2/0-99" || got.TxID == "" {
		t.Fatalf("anchor %+v", got)
	}
	h.must(RoleService, FnAnchorBatch, a, &again)
	if again.TxID != got.TxID {
		t.Errorf("retry of the same batch returned tx %s, want the first %s", again.TxID, got.TxID)
	}
	bad := a
	bad.MerkleRoot = sha("other")
	if err := h.call(RoleService, FnAnchorBatch, bad, nil); !errors.Is(err, ErrConflict) {
		t.Errorf("same range, other root: %v", err)
	}
	overlap := Anchor{Stream: "iot.flows", Partition: 2, FirstOffset: 50, LastOffset: 149, Count: 100, MerkleRoot: sha("b1")}
	if err := h.call(RoleService, FnAnchorBatch, overlap, nil); !errors.Is(err, ErrConflict) {
		t.Errorf("overlapping range: %v", err)
	}
	h.must(RoleService, FnAnchorBatch, Anchor{Stream: "iot.flows", Partition: 2, FirstOffset: 100, LastOffset: 199, Count: 100, MerkleRoot: sha("b1")}, nil)
	h.must(RoleService, FnAnchorBatch, Anchor{Stream: "iot.flows", Partition: 3, FirstOffset: 0, LastOffset: 9, Count: 10, MerkleRoot: sha("p3")}, nil)
	var list []Anchor
	h.must(RoleAnalyst, FnListAnchors, ListAnchorsArgs{Stream: "iot.flows", Partition: 2, FromOffset: 120, ToOffset: -1}, &list)
	if len(list) != 1 || list[0].FirstOffset != 100 {
		t.Errorf("anchors overlapping 120.. = %+v", list)
	}
	h.must(RoleAnalyst, FnListAnchors, ListAnchorsArgs{Stream: "iot.flows", Partition: 2, FromOffset: 0, ToOffset: 150}, &list)
	if len(list) != 2 {
		t.Errorf("anchors overlapping 0..150 = %d, want 2", len(list))
	}
	h.must(RoleAnalyst, FnGetAnchor, IDArgs{ID: "iot.flows/2/100-199"}, &got)
	for _, in := range []Anchor{
		{Stream: "iot.flows", Partition: 2, FirstOffset: 300, LastOffset: 299, Count: 1, MerkleRoot: sha("x")},
		{Stream: "iot.flows", Partition: 2, FirstOffset: 300, LastOffset: 309, Count: 11, MerkleRoot: sha("x")},
		{Stream: "iot.flows", Partition: 2, FirstOffset: 300, LastOffset: 309, Count: 10, MerkleRoot: "zz"},
		{Stream: "bad/stream", Partition: 2, FirstOffset: 300, LastOffset: 309, Count: 10, MerkleRoot: sha("x")},
	} {
		if err := h.call(RoleService, FnAnchorBatch, in, nil); !errors.Is(err, ErrInvalid) {
			t.Errorf("anchor %+v accepted: %v", in, err)
		}
	}
}

func TestAlertsAreIdempotentAndTakeVerdicts(t *testing.T) {
	h := newHarness(t)
	id := AlertID(AlertBehaviour, "cam-1", time.Unix(0, 0), time.Unix(60, 0), sha("model"))
	if id != AlertID(AlertBehaviour, "cam-1", time.Unix(0, 0), time.Unix(60, 0), sha("model")) || id == AlertID(AlertBehaviour, "cam-1", time.Unix(60, 0), time.Unix(120, 0), sha("model")) {
		t.Fatal("alert ids are not a function of (kind, device, window, model)")
	}
	a := Alert{ID: id, Kind: AlertBehaviour, DeviceID: "cam-1", Score: 0.8, Confidence: "high"}
	var first, second Alert
	h.must(RoleService, FnRecordAlert, a, &first)
	a.Score = 0.9 // a replay with a different score must not overwrite
	h.must(RoleService, FnRecordAlert, a, &second)
	if second.TxID != first.TxID || second.Score != 0.8 {
		t.Fatalf("second record %+v, want the first (tx %s)", second, first.TxID)
	}
	if err := h.call(RoleAnalyst, FnSetVerdict, VerdictArgs{ID: id, Value: "maybe"}, nil); !errors.Is(err, ErrInvalid) {
		t.Errorf("bad verdict: %v", err)
	}
	var judged Alert
	h.must(RoleAnalyst, FnSetVerdict, VerdictArgs{ID: id, Value: VerdictFalsePositive, Note: "firmware update"}, &judged)
	if judged.Verdict == nil || judged.Verdict.Analyst != "id-analyst" {
		t.Fatalf("verdict %+v", judged.Verdict)
	}
	h.must(RoleService, FnRecordAlert, a, &second)
	if second.Verdict == nil {
		t.Error("re-recording an alert dropped its verdict")
	}
	h.must(RoleAnalyst, FnSetVerdict, VerdictArgs{ID: id, Value: VerdictTruePositive}, nil)
	var history []AlertVersion
	h.must(RoleAnalyst, FnAlertHistory, IDArgs{ID: id}, &history)
	if len(history) != 3 || history[0].Alert.Verdict != nil || history[1].Alert.Verdict.Value != VerdictFalsePositive || history[2].Alert.Verdict.Value != VerdictTruePositive {
		t.Errorf("alert history %+v, want recording, false-positive, true-positive", history)
	}
	if err := h.call(RoleAnalyst, FnAlertHistory, IDArgs{ID: "missing"}, nil); !errors.Is(err, ErrNotFound) {
		t.Errorf("history of an unknown alert: %v", err)
	}
	for _, bad := range []Alert{
		{ID: "x1", Kind: "weird", DeviceID: "d", Score: 0.5},
		{ID: "x2", Kind: AlertBehaviour, Score: 0.5},
		{ID: "x3", Kind: AlertBehaviour, DeviceID: "d", Score: 1.5},
		{ID: "", Kind: AlertBehaviour, DeviceID: "d", Score: 0.5},
	} {
		if err := h.call(RoleService, FnRecordAlert, bad, nil); !errors.Is(err, ErrInvalid) {
			t.Errorf("alert %+v accepted: %v", bad, err)
		}
	}
	h.must(RoleService, FnRecordAlert, Alert{ID: "r1", Kind: AlertRogueDevice, DeviceID: "mac:x", Score: 1}, nil)
	var list []Alert
	h.must(RoleAnalyst, FnListAlerts, ListAlertsArgs{Kind: AlertRogueDevice}, &list)
	if len(list) != 1 {
		t.Errorf("rogue alerts %+v", list)
	}
}

func TestModelsBootstrapAndPromotion(t *testing.T) {
	h := newHarness(t)
	m1, m2 := sha("model-1"), sha("model-2")
	h.must(RoleService, FnRegisterModel, Model{Hash: m1, Profile: "plc"}, nil)
	if err := h.call(RoleAnalyst, FnGetActiveModel, ProfileArgs{Profile: "plc"}, nil); !errors.Is(err, ErrNotFound) {
		t.Errorf("active model before promotion: %v", err)
	}
	h.must(RoleService, FnPromoteModel, HashArgs{Hash: m1}, nil) // bootstrap
	h.must(RoleService, FnRegisterModel, Model{Hash: m2, Profile: "plc"}, nil)
	if err := h.call(RoleService, FnPromoteModel, HashArgs{Hash: m2}, nil); !errors.Is(err, ErrForbidden) {
		t.Errorf("service replacing an active model: %v", err)
	}
	h.must(RoleOperator, FnPromoteModel, HashArgs{Hash: m2}, nil)
	var active Model
	h.must(RoleAnalyst, FnGetActiveModel, ProfileArgs{Profile: "plc"}, &active)
	if active.Hash != m2 || active.PromotedBy != "id-operator" {
		t.Errorf("active %+v", active)
	}
	if err := h.call(RoleOperator, FnPromoteModel, HashArgs{Hash: sha("unregistered")}, nil); !errors.Is(err, ErrNotFound) {
		t.Errorf("promoting an unregistered model: %v", err)
	}
	if err := h.call(RoleService, FnRegisterModel, Model{Hash: "short", Profile: "plc"}, nil); !errors.Is(err, ErrInvalid) {
		t.Errorf("bad hash: %v", err)
	}
}

func TestRoleRefusals(t *testing.T) {
	writes := map[string]Role{ // function → a role that must be refused
		FnRegisterDevice: RoleService, FnUpdateDevice: RoleAnalyst, FnRevokeDevice: RoleService,
		FnApproveFirmware: RoleManufacturer, FnAnchorBatch: RoleOperator, FnRecordAlert: RoleAnalyst,
		FnSetVerdict: RoleService, FnRegisterModel: RoleAnalyst, FnPromoteModel: RoleManufacturer,
	}
	for fn, role := range writes {
		h := newHarness(t)
		if err := h.call(role, fn, struct{}{}, nil); !errors.Is(err, ErrForbidden) {
			t.Errorf("%s as %s: err = %v, want ErrForbidden", fn, role, err)
		}
		if len(h.state) != 0 {
			t.Errorf("%s refused but wrote state", fn)
		}
	}
	h := newHarness(t)
	if err := h.call(Role("janitor"), FnListDevices, struct{}{}, nil); !errors.Is(err, ErrForbidden) {
		t.Errorf("unknown role: %v", err)
	}
	if err := h.call(RoleAdmin, FnRegisterDevice, Device{ID: "d", Profile: "p", Owner: "o"}, nil); err != nil {
		t.Errorf("admin: %v", err)
	}
	if err := h.call(RoleAdmin, "DropTables", struct{}{}, nil); !errors.Is(err, ErrInvalid) {
		t.Errorf("unknown function: %v", err)
	}
	if err := h.call(RoleService, FnAnchorBatch, "not an object", nil); !errors.Is(err, ErrInvalid) {
		t.Errorf("malformed arguments: %v", err)
	}
}

// One period's batches of several partitions in one transaction: each is
// stored and listed as a single anchor would be, the call can be repeated
// after it committed, and overlaps are refused within the call as against
// the ledger.
func TestAnchorBatchesRecordAPeriodInOneTransaction(t *testing.T) {
	h := newHarness(t)
	period := []Anchor{
		{Stream: "iot.flows", Partition: 0, FirstOffset: 0, LastOffset: 99, Count: 100, MerkleRoot: sha("p0a")},
		{Stream: "iot.flows", Partition: 1, FirstOffset: 0, LastOffset: 49, Count: 50, MerkleRoot: sha("p1")},
		{Stream: "iot.flows", Partition: 0, FirstOffset: 100, LastOffset: 149, Count: 50, MerkleRoot: sha("p0b")},
		{Stream: "iot.telemetry", Partition: 0, FirstOffset: 0, LastOffset: 9, Count: 10, MerkleRoot: sha("t0")},
	}
	var got, again []Anchor
	h.must(RoleService, FnAnchorBatches, AnchorsArgs{Anchors: period}, &got)
	if len(got) != 4 || got[0].TxID == "" || got[0].TxID != got[3].TxID {
		t.Fatalf("anchors %+v: want four, from one transaction", got)
	}
	h.must(RoleService, FnAnchorBatches, AnchorsArgs{Anchors: period}, &again)
	for i := range again {
		if again[i].TxID != got[i].TxID {
			t.Errorf("repeated call: anchor %s from tx %s, want the first %s", again[i].ID, again[i].TxID, got[i].TxID)
		}
	}
	var list []Anchor
	h.must(RoleAnalyst, FnListAnchors, ListAnchorsArgs{Stream: "iot.flows", Partition: 0, FromOffset: 0, ToOffset: -1}, &list)
	if len(list) != 2 || list[1].ID != "iot.flows/0/100-149" {
		t.Errorf("partition 0 lists %+v", list)
	}
	// The head moved to the newest batch: the next single anchor follows it.
	h.must(RoleService, FnAnchorBatch, Anchor{Stream: "iot.flows", Partition: 0, FirstOffset: 150, LastOffset: 159, Count: 10, MerkleRoot: sha("p0c")}, nil)
	inCall := []Anchor{
		{Stream: "iot.flows", Partition: 5, FirstOffset: 0, LastOffset: 99, Count: 100, MerkleRoot: sha("a")},
		{Stream: "iot.flows", Partition: 5, FirstOffset: 50, LastOffset: 149, Count: 100, MerkleRoot: sha("b")},
	}
	if err := h.call(RoleService, FnAnchorBatches, AnchorsArgs{Anchors: inCall}, nil); !errors.Is(err, ErrConflict) {
		t.Errorf("overlap within the call: %v", err)
	}
	onLedger := []Anchor{{Stream: "iot.flows", Partition: 1, FirstOffset: 40, LastOffset: 79, Count: 40, MerkleRoot: sha("c")}}
	if err := h.call(RoleService, FnAnchorBatches, AnchorsArgs{Anchors: onLedger}, nil); !errors.Is(err, ErrConflict) {
		t.Errorf("overlap with the ledger: %v", err)
	}
	if err := h.call(RoleAnalyst, FnAnchorBatches, AnchorsArgs{Anchors: period}, nil); !errors.Is(err, ErrForbidden) {
		t.Errorf("an analyst anchoring: %v", err)
	}
}

func TestSealsAreIdempotentAndListInTimeOrder(t *testing.T) {
	h := newHarness(t)
	t0 := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	seal := func(at time.Duration, root string) Seal {
		return Seal{ID: NewSealID(t0.Add(at), "ab12"), Root: sha(root), Batches: 3, Records: 300,
			FirstTimestamp: t0, LastTimestamp: t0.Add(at)}
	}
	var first, again Seal
	h.must(RoleService, FnSealBatches, seal(10*time.Second, "r1"), &first)
	if first.TxID == "" || first.AnchoredBy != "id-service" {
		t.Fatalf("stored seal %+v: want the transaction and caller recorded", first)
	}
	h.must(RoleService, FnSealBatches, seal(10*time.Second, "r1"), &again)
	if again.TxID != first.TxID {
		t.Errorf("a repeated seal came from tx %s, want the first %s", again.TxID, first.TxID)
	}
	if err := h.call(RoleService, FnSealBatches, seal(10*time.Second, "other"), nil); !errors.Is(err, ErrConflict) {
		t.Errorf("the same seal id with another root: %v, want a conflict", err)
	}
	h.must(RoleService, FnSealBatches, seal(5*time.Second, "r0"), nil)
	h.must(RoleService, FnSealBatches, seal(20*time.Second, "r2"), nil)
	var list []Seal
	h.must(RoleAnalyst, FnListSeals, ListSealsArgs{}, &list)
	if len(list) != 3 || list[0].Root != sha("r0") || list[2].Root != sha("r2") {
		t.Fatalf("seals listed %+v: want three in time order", list)
	}
	h.must(RoleAnalyst, FnListSeals, ListSealsArgs{After: list[0].ID, Limit: 1}, &list)
	if len(list) != 1 || list[0].Root != sha("r1") {
		t.Errorf("seals after the first, one at most: %+v", list)
	}
	var got Seal
	h.must(RoleAnalyst, FnGetSeal, IDArgs{ID: first.ID}, &got)
	if got.Root != sha("r1") {
		t.Errorf("GetSeal: %+v", got)
	}
	if err := h.call(RoleAnalyst, FnGetSeal, IDArgs{ID: NewSealID(t0, "none")}, nil); !errors.Is(err, ErrNotFound) {
		t.Errorf("an absent seal: %v", err)
	}
	for _, bad := range []Seal{
		{ID: "no-time", Root: sha("x"), Batches: 1, Records: 1},
		{ID: NewSealID(t0, "x"), Root: "zz", Batches: 1, Records: 1},
		{ID: NewSealID(t0, "x"), Root: sha("x"), Batches: 0, Records: 1},
		{ID: NewSealID(t0, "x"), Root: sha("x"), Batches: 2, Records: 1},
	} {
		if err := h.call(RoleService, FnSealBatches, bad, nil); !errors.Is(err, ErrInvalid) {
			t.Errorf("seal %+v: %v, want invalid", bad, err)
		}
	}
	if err := h.call(RoleAnalyst, FnSealBatches, seal(30*time.Second, "r3"), nil); !errors.Is(err, ErrForbidden) {
		t.Errorf("an analyst sealing: %v", err)
	}
}
