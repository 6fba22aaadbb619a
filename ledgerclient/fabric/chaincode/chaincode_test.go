package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/hyperledger/fabric-chaincode-go/v2/shim"
	"github.com/hyperledger/fabric-protos-go-apiv2/ledger/queryresult"
	"github.com/hyperledger/fabric-protos-go-apiv2/msp"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/chainwatch/chainwatch/ledgerclient/contract"
)

// peerStub stands in for the peer, the one part absent without a network:
// world state, the creator's identity, transaction id and time, events. The
// chaincode, contractapi's routing and serialisation, and the contract all
// run for real through ContractChaincode.Invoke. Methods the chaincode does
// not use panic through the nil embedded interface.
type peerStub struct {
	shim.ChaincodeStubInterface
	state   map[string][]byte
	args    [][]byte
	creator []byte
	txID    string
	events  map[string][]byte
}

func (s *peerStub) GetArgs() [][]byte { return s.args }
func (s *peerStub) GetStringArgs() []string {
	out := make([]string, len(s.args))
	for i, a := range s.args {
		out[i] = string(a)
	}
	return out
}
func (s *peerStub) GetFunctionAndParameters() (string, []string) {
	a := s.GetStringArgs()
	return a[0], a[1:]
}
func (s *peerStub) GetCreator() ([]byte, error) { return s.creator, nil }
func (s *peerStub) GetTxID() string             { return s.txID }
func (s *peerStub) GetChannelID() string        { return "chainwatch" }
func (s *peerStub) GetTxTimestamp() (*timestamppb.Timestamp, error) {
	return timestamppb.New(time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)), nil
}
func (s *peerStub) GetState(k string) ([]byte, error)          { return s.state[k], nil }
func (s *peerStub) PutState(k string, v []byte) error          { s.state[k] = v; return nil }
func (s *peerStub) SetEvent(name string, payload []byte) error { s.events[name] = payload; return nil }
func (s *peerStub) GetStateByRange(start, end string) (shim.StateQueryIteratorInterface, error) {
	var keys []string
	for k := range s.state {
		if k >= start && k < end {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	it := &rangeIter{}
	for _, k := range keys {
		it.kvs = append(it.kvs, &queryresult.KV{Key: k, Value: s.state[k]})
	}
	return it, nil
}

func (s *peerStub) GetHistoryForKey(k string) (shim.HistoryQueryIteratorInterface, error) {
	// The peer keeps history of committed blocks; here, of this key's
	// current value only.
	it := &historyIter{}
	if v, ok := s.state[k]; ok {
		it.mods = append(it.mods, &queryresult.KeyModification{TxId: s.txID, Value: v})
	}
	return it, nil
}

type historyIter struct {
	mods []*queryresult.KeyModification
}

func (it *historyIter) HasNext() bool { return len(it.mods) > 0 }
func (it *historyIter) Close() error  { return nil }
func (it *historyIter) Next() (*queryresult.KeyModification, error) {
	m := it.mods[0]
	it.mods = it.mods[1:]
	return m, nil
}

type rangeIter struct{ kvs []*queryresult.KV }

func (it *rangeIter) HasNext() bool { return len(it.kvs) > 0 }
func (it *rangeIter) Close() error  { return nil }
func (it *rangeIter) Next() (*queryresult.KV, error) {
	kv := it.kvs[0]
	it.kvs = it.kvs[1:]
	return kv, nil
}

// identity makes a serialized Fabric identity with the given common name and
// organisational unit, as cryptogen would issue it.
func identity(t *testing.T, cn, ou string) []byte {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn, OrganizationalUnit: []string{ou}},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	b, err := proto.Marshal(&msp.SerializedIdentity{Mspid: "Org1MSP", IdBytes: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

type world struct {
	t     *testing.T
	state map[string][]byte
	n     int
}

func (w *world) invoke(creator []byte, fn string, args ...string) (string, map[string][]byte, int32, string) {
	w.t.Helper()
	cc, err := newChaincode()
	if err != nil {
		w.t.Fatal(err)
	}
	w.n++
	stub := &peerStub{state: w.state, creator: creator, txID: "tx" + strings.Repeat("0", w.n), events: map[string][]byte{}}
	stub.args = [][]byte{[]byte(fn)}
	for _, a := range args {
		stub.args = append(stub.args, []byte(a))
	}
	resp := cc.Invoke(stub)
	return string(resp.GetPayload()), stub.events, resp.GetStatus(), resp.GetMessage()
}

func TestChaincodeThroughContractAPI(t *testing.T) {
	w := &world{t: t, state: map[string][]byte{}}
	admin := identity(t, "Admin@org1.example.com", "admin")
	user := identity(t, "User1@org1.example.com", "client")

	// An unassigned client identity has no role.
	if _, _, status, msg := w.invoke(user, "AnchorBatch", `{}`); status != shim.ERROR || !strings.Contains(msg, contract.ErrForbidden.Error()) {
		t.Fatalf("unassigned user: status %d %q", status, msg)
	}
	if _, _, status, msg := w.invoke(user, "AssignRole", "Org1MSP::User1@org1.example.com", "service"); status != shim.ERROR || !strings.Contains(msg, "only an admin") {
		t.Fatalf("user assigning a role: status %d %q", status, msg)
	}
	if _, _, status, msg := w.invoke(admin, "AssignRole", "Org1MSP::User1@org1.example.com", "service"); status != shim.OK {
		t.Fatalf("admin assigning a role: %s", msg)
	}
	who, _, _, _ := w.invoke(user, "WhoAmI")
	if who != "Org1MSP::User1@org1.example.com service" {
		t.Fatalf("WhoAmI = %q", who)
	}

	root := sha256.Sum256([]byte("b"))
	anchor := `{"stream":"iot.flows","partition":0,"first_offset":0,"last_offset":9,"count":10,"merkle_root":"` + hex.EncodeToString(root[:]) + `"}`
	out, events, status, msg := w.invoke(user, "AnchorBatch", anchor)
	if status != shim.OK {
		t.Fatalf("AnchorBatch: %s", msg)
	}
	var a contract.Anchor
	if err := json.Unmarshal([]byte(out), &a); err != nil || a.TxID == "" || a.AnchoredBy != "Org1MSP::User1@org1.example.com" {
		t.Fatalf("anchor %s (%v)", out, err)
	}
	if _, ok := events[contract.EventBatchAnchored]; !ok {
		t.Errorf("no %s event set", contract.EventBatchAnchored)
	}
	// Reads, by range, through the stub.
	list, _, status, _ := w.invoke(user, "ListAnchors", `{"stream":"iot.flows","partition":0,"from_offset":0,"to_offset":-1}`)
	if status != shim.OK || !strings.Contains(list, a.ID) {
		t.Fatalf("ListAnchors = %s", list)
	}
	// Every contract function is a transaction of the chaincode.
	for _, fn := range []string{
		contract.FnRegisterDevice, contract.FnUpdateDevice, contract.FnRevokeDevice, contract.FnGetDevice, contract.FnListDevices,
		contract.FnApproveFirmware, contract.FnListFirmware, contract.FnAnchorBatch, contract.FnGetAnchor, contract.FnListAnchors,
		contract.FnAnchorBatches, contract.FnSealBatches, contract.FnGetSeal, contract.FnListSeals,
		contract.FnRecordAlert, contract.FnSetVerdict, contract.FnGetAlert, contract.FnListAlerts, contract.FnAlertHistory,
		contract.FnRegisterModel, contract.FnPromoteModel, contract.FnGetModel, contract.FnGetActiveModel,
	} {
		if _, _, _, msg := w.invoke(admin, fn, `{}`); strings.Contains(msg, "not found in contract") {
			t.Errorf("contract function %s is not a chaincode transaction: %s", fn, msg)
		}
	}
}
