// Command chaincode is chainwatch's ledger contract as Hyperledger Fabric
// chaincode. The logic is ledgerclient/contract, the same code the embedded
// ledger runs; this program only adapts Fabric's stub (state, transaction id
// and time, caller identity, events) to it.
//
// It runs as chaincode-as-a-service: with CHAINCODE_SERVER_ADDRESS and
// CORE_CHAINCODE_ID_NAME set, it listens for the peer instead of dialling
// it, so no Docker is needed (deploy/fabric/README.md).
//
// It is its own Go module because fabric-contract-api-go links
// fabric-protos-go-apiv2, whose types clash with the older fabric-protos-go
// that the service's Fabric client links.
package main

import (
	"fmt"
	"log"
	"slices"
	"strings"

	"github.com/hyperledger/fabric-chaincode-go/v2/pkg/cid"
	"github.com/hyperledger/fabric-chaincode-go/v2/shim"
	"github.com/hyperledger/fabric-contract-api-go/v2/contractapi"

	"github.com/chainwatch/chainwatch/ledgerclient/contract"
)

// RoleAttribute is the X.509 attribute (issued by a Fabric CA) that carries
// an identity's chainwatch role.
const RoleAttribute = "chainwatch.role"

// keyRole prefixes role assignments made with AssignRole.
const keyRole = "role/"

// Chainwatch exposes every contract function as a transaction taking and
// returning JSON, named as in ledgerclient/contract.
type Chainwatch struct {
	contractapi.Contract
}

func (c *Chainwatch) call(ctx contractapi.TransactionContextInterface, fn, args string) (string, error) {
	stub := ctx.GetStub()
	caller, err := callerOf(ctx)
	if err != nil {
		return "", err
	}
	ts, err := stub.GetTxTimestamp()
	if err != nil {
		return "", fmt.Errorf("transaction timestamp: %w", err)
	}
	out, err := contract.Invoke(contract.Tx{
		State: stubState{stub}, Caller: caller, ID: stub.GetTxID(), Time: ts.AsTime(),
	}, fn, []byte(args))
	if err != nil {
		return "", err
	}
	if name := contract.EventFor(fn); name != "" {
		if err := stub.SetEvent(name, out); err != nil {
			return "", fmt.Errorf("set event: %w", err)
		}
	}
	return string(out), nil
}

// callerOf resolves the invoking identity's role: the chainwatch.role
// certificate attribute when a Fabric CA issued one; otherwise the role an
// admin assigned with AssignRole; an identity whose certificate carries the
// "admin" organisational unit (NodeOUs) is an admin.
func callerOf(ctx contractapi.TransactionContextInterface) (contract.Caller, error) {
	ci := ctx.GetClientIdentity()
	id, err := identityKey(ci)
	if err != nil {
		return contract.Caller{}, err
	}
	if role, ok, err := ci.GetAttributeValue(RoleAttribute); err == nil && ok {
		return contract.Caller{ID: id, Role: contract.Role(role)}, nil
	}
	assigned, err := ctx.GetStub().GetState(keyRole + id)
	if err != nil {
		return contract.Caller{}, err
	}
	if assigned != nil {
		return contract.Caller{ID: id, Role: contract.Role(assigned)}, nil
	}
	if isAdmin(ci) {
		return contract.Caller{ID: id, Role: contract.RoleAdmin}, nil
	}
	return contract.Caller{ID: id, Role: ""}, nil
}

// identityKey names an identity by MSP and certificate subject, which stays
// stable across certificate renewals.
func identityKey(ci cid.ClientIdentity) (string, error) {
	msp, err := ci.GetMSPID()
	if err != nil {
		return "", err
	}
	cert, err := ci.GetX509Certificate()
	if err != nil {
		return "", err
	}
	return msp + "::" + cert.Subject.CommonName, nil
}

func isAdmin(ci cid.ClientIdentity) bool {
	cert, err := ci.GetX509Certificate()
	if err != nil || cert == nil {
		return false
	}
	for _, ou := range cert.Subject.OrganizationalUnit {
		if strings.EqualFold(ou, "admin") {
			return true
		}
	}
	return false
}

// AssignRole gives an identity ("MSPID::CommonName") a chainwatch role.
// Only admins may call it.
func (c *Chainwatch) AssignRole(ctx contractapi.TransactionContextInterface, identity, role string) error {
	caller, err := callerOf(ctx)
	if err != nil {
		return err
	}
	if caller.Role != contract.RoleAdmin {
		return fmt.Errorf("%w: only an admin assigns roles", contract.ErrForbidden)
	}
	if !contract.Role(role).Valid() || !strings.Contains(identity, "::") {
		return fmt.Errorf("%w: identity %q role %q", contract.ErrInvalid, identity, role)
	}
	return ctx.GetStub().PutState(keyRole+identity, []byte(role))
}

// WhoAmI returns the caller's identity key and role.
func (c *Chainwatch) WhoAmI(ctx contractapi.TransactionContextInterface) (string, error) {
	caller, err := callerOf(ctx)
	if err != nil {
		return "", err
	}
	return caller.ID + " " + string(caller.Role), nil
}

// The contract's functions, one transaction each.

func (c *Chainwatch) RegisterDevice(ctx contractapi.TransactionContextInterface, args string) (string, error) {
	return c.call(ctx, contract.FnRegisterDevice, args)
}
func (c *Chainwatch) UpdateDevice(ctx contractapi.TransactionContextInterface, args string) (string, error) {
	return c.call(ctx, contract.FnUpdateDevice, args)
}
func (c *Chainwatch) RevokeDevice(ctx contractapi.TransactionContextInterface, args string) (string, error) {
	return c.call(ctx, contract.FnRevokeDevice, args)
}
func (c *Chainwatch) GetDevice(ctx contractapi.TransactionContextInterface, args string) (string, error) {
	return c.call(ctx, contract.FnGetDevice, args)
}
func (c *Chainwatch) ListDevices(ctx contractapi.TransactionContextInterface, args string) (string, error) {
	return c.call(ctx, contract.FnListDevices, args)
}
func (c *Chainwatch) ApproveFirmware(ctx contractapi.TransactionContextInterface, args string) (string, error) {
	return c.call(ctx, contract.FnApproveFirmware, args)
}
func (c *Chainwatch) ListFirmware(ctx contractapi.TransactionContextInterface, args string) (string, error) {
	return c.call(ctx, contract.FnListFirmware, args)
}
func (c *Chainwatch) AnchorBatch(ctx contractapi.TransactionContextInterface, args string) (string, error) {
	return c.call(ctx, contract.FnAnchorBatch, args)
}
func (c *Chainwatch) AnchorBatches(ctx contractapi.TransactionContextInterface, args string) (string, error) {
	return c.call(ctx, contract.FnAnchorBatches, args)
}
func (c *Chainwatch) SealBatches(ctx contractapi.TransactionContextInterface, args string) (string, error) {
	return c.call(ctx, contract.FnSealBatches, args)
}
func (c *Chainwatch) GetSeal(ctx contractapi.TransactionContextInterface, args string) (string, error) {
	return c.call(ctx, contract.FnGetSeal, args)
}
func (c *Chainwatch) ListSeals(ctx contractapi.TransactionContextInterface, args string) (string, error) {
	return c.call(ctx, contract.FnListSeals, args)
}
func (c *Chainwatch) GetAnchor(ctx contractapi.TransactionContextInterface, args string) (string, error) {
	return c.call(ctx, contract.FnGetAnchor, args)
}
func (c *Chainwatch) ListAnchors(ctx contractapi.TransactionContextInterface, args string) (string, error) {
	return c.call(ctx, contract.FnListAnchors, args)
}
func (c *Chainwatch) RecordAlert(ctx contractapi.TransactionContextInterface, args string) (string, error) {
	return c.call(ctx, contract.FnRecordAlert, args)
}
func (c *Chainwatch) SetVerdict(ctx contractapi.TransactionContextInterface, args string) (string, error) {
	return c.call(ctx, contract.FnSetVerdict, args)
}
func (c *Chainwatch) GetAlert(ctx contractapi.TransactionContextInterface, args string) (string, error) {
	return c.call(ctx, contract.FnGetAlert, args)
}
func (c *Chainwatch) ListAlerts(ctx contractapi.TransactionContextInterface, args string) (string, error) {
	return c.call(ctx, contract.FnListAlerts, args)
}
func (c *Chainwatch) AlertHistory(ctx contractapi.TransactionContextInterface, args string) (string, error) {
	return c.call(ctx, contract.FnAlertHistory, args)
}
func (c *Chainwatch) RegisterModel(ctx contractapi.TransactionContextInterface, args string) (string, error) {
	return c.call(ctx, contract.FnRegisterModel, args)
}
func (c *Chainwatch) PromoteModel(ctx contractapi.TransactionContextInterface, args string) (string, error) {
	return c.call(ctx, contract.FnPromoteModel, args)
}
func (c *Chainwatch) GetModel(ctx contractapi.TransactionContextInterface, args string) (string, error) {
	return c.call(ctx, contract.FnGetModel, args)
}
func (c *Chainwatch) GetActiveModel(ctx contractapi.TransactionContextInterface, args string) (string, error) {
	return c.call(ctx, contract.FnGetActiveModel, args)
}
func (c *Chainwatch) ListModels(ctx contractapi.TransactionContextInterface, args string) (string, error) {
	return c.call(ctx, contract.FnListModels, args)
}

// stubState adapts Fabric's stub to contract.State.
type stubState struct{ stub shim.ChaincodeStubInterface }

func (s stubState) Get(key string) ([]byte, error)     { return s.stub.GetState(key) }
func (s stubState) Put(key string, value []byte) error { return s.stub.PutState(key, value) }
func (s stubState) Range(start, end string, fn func(string, []byte) bool) error {
	it, err := s.stub.GetStateByRange(start, end)
	if err != nil {
		return err
	}
	defer it.Close()
	for it.HasNext() {
		kv, err := it.Next()
		if err != nil {
			return err
		}
		if !fn(kv.Key, kv.Value) {
			break
		}
	}
	return nil
}

// History reads the peer's history database (core.yaml
// ledger.history.enableHistoryDatabase, on by default). The peer returns
// the newest version first; contract.State promises the oldest first.
func (s stubState) History(key string) ([]contract.HistoryEntry, error) {
	it, err := s.stub.GetHistoryForKey(key)
	if err != nil {
		return nil, err
	}
	defer it.Close()
	var out []contract.HistoryEntry
	for it.HasNext() {
		m, err := it.Next()
		if err != nil {
			return nil, err
		}
		if m.GetIsDelete() {
			continue
		}
		out = append(out, contract.HistoryEntry{TxID: m.GetTxId(), Time: m.GetTimestamp().AsTime(), Value: m.GetValue()})
	}
	slices.Reverse(out)
	return out, nil
}

// newChaincode builds the contract chaincode.
func newChaincode() (*contractapi.ContractChaincode, error) {
	cw := &Chainwatch{}
	cw.Name = "chainwatch"
	cw.Info.Version = "1.0.0"
	cw.Info.Title = "chainwatch ledger contract"
	cc, err := contractapi.NewChaincode(cw)
	if err != nil {
		return nil, err
	}
	cc.DefaultContract = cw.GetName()
	return cc, nil
}

func main() {
	cc, err := newChaincode()
	if err != nil {
		log.Fatalf("chainwatch chaincode: %v", err)
	}
	if err := cc.Start(); err != nil {
		log.Fatalf("chainwatch chaincode: %v", err)
	}
}
