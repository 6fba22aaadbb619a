package fabric_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/chainwatch/chainwatch/ledgerclient"
	"github.com/chainwatch/chainwatch/ledgerclient/contract"
	"github.com/chainwatch/chainwatch/ledgerclient/fabric"
)

// TestAgainstRealFabricNetwork stands up a real Fabric v2.5 network from the
// binaries in FABRIC_BIN with deploy/fabric/network.sh, deploys the
// chaincode as a service, and drives it through the Backend: a device is
// registered, a batch anchored, an alert recorded twice (one record), all
// read back with their transaction ids.
func TestAgainstRealFabricNetwork(t *testing.T) {
	bin := os.Getenv("FABRIC_BIN")
	if bin == "" {
		t.Skip("FABRIC_BIN is not set: this test needs Hyperledger Fabric v2.5 release binaries " +
			"(peer, orderer, configtxgen, osnadmin, cryptogen in FABRIC_BIN; core.yaml and orderer.yaml in " +
			"FABRIC_BIN/../config or FABRIC_CFG; the ccaas builder in FABRIC_BIN/../builders/ccaas or " +
			"FABRIC_CCAAS_BUILDER) and free loopback ports 7050, 7051, 7052, 7053, 9443, 9444 and 9999")
	}
	work := t.TempDir()
	script, _ := filepath.Abs("../../deploy/fabric/network.sh")
	network := func(arg string) {
		cmd := exec.Command(script, arg)
		cmd.Env = append(os.Environ(), "FABRIC_NETWORK_DIR="+work)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("network.sh %s: %v\n%s", arg, err, out)
		}
	}
	t.Cleanup(func() { network("down") })
	network("up")

	var cfg fabric.Config
	raw, err := os.ReadFile(filepath.Join(work, "client", "chainwatch-fabric.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(raw, &cfg); err != nil {
		t.Fatal(err)
	}
	adminCfg := cfg
	adminCfg.Cert, adminCfg.Key = filepath.Join(work, "client", "admin-cert.pem"), filepath.Join(work, "client", "admin-key.pem")

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	serviceBackend, err := fabric.Dial(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer serviceBackend.Close()
	adminBackend, err := fabric.Dial(adminCfg)
	if err != nil {
		t.Fatal(err)
	}
	defer adminBackend.Close()
	service, admin := ledgerclient.New(serviceBackend), ledgerclient.New(adminBackend)
	events, err := serviceBackend.Subscribe(ctx)
	if err != nil {
		t.Fatal(err)
	}

	// Birth certificate, registered by the org admin (who holds every role).
	dev, err := admin.RegisterDevice(ctx, contract.Device{ID: "meter-0001", Profile: "meter", Owner: "acme", MACs: []string{"02:00:0a:14:00:01"}})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := service.GetDevice(ctx, "meter-0001"); err != nil || got.RegisteredAt != dev.RegisteredAt {
		t.Fatalf("device read back: %+v, %v", got, err)
	}
	// The service identity may not register devices.
	if _, err := service.RegisterDevice(ctx, contract.Device{ID: "x", Profile: "meter", Owner: "o"}); !errors.Is(err, contract.ErrForbidden) {
		t.Fatalf("service registering a device: err = %v, want ErrForbidden", err)
	}

	// A batch anchor, with the transaction id Fabric committed it under.
	root := sha256.Sum256([]byte("batch"))
	args, _ := ledgerclient.Marshal(contract.Anchor{Stream: "iot.flows", Partition: 0, FirstOffset: 0, LastOffset: 99, Count: 100, MerkleRoot: hex.EncodeToString(root[:])})
	out, txID, err := serviceBackend.Submit(ctx, contract.FnAnchorBatch, args)
	if err != nil {
		t.Fatal(err)
	}
	var anchor contract.Anchor
	if err := ledgerclient.Unmarshal(out, &anchor); err != nil {
		t.Fatal(err)
	}
	if txID == "" || anchor.TxID != txID {
		t.Fatalf("anchor recorded tx %q, commit reported %q", anchor.TxID, txID)
	}
	if got, err := service.GetAnchor(ctx, anchor.ID); err != nil || got.TxID != txID || got.MerkleRoot != anchor.MerkleRoot {
		t.Fatalf("anchor read back: %+v, %v", got, err)
	}

	// A period's seal: one small record, read back, listed, and the same
	// call repeated returns the first transaction's.
	sealed := time.Now().UTC().Truncate(time.Millisecond)
	seal := contract.Seal{ID: contract.NewSealID(sealed, "fabric"), Root: hex.EncodeToString(root[:]), Batches: 4, Records: 400,
		FirstTimestamp: sealed.Add(-5 * time.Second), LastTimestamp: sealed}
	gotSeal, err := service.SealBatches(ctx, seal)
	if err != nil {
		t.Fatal(err)
	}
	again, err := service.SealBatches(ctx, seal)
	if err != nil || gotSeal.TxID == "" || again.TxID != gotSeal.TxID {
		t.Fatalf("seal recorded under tx %q, then %q (%v): want the first id both times", gotSeal.TxID, again.TxID, err)
	}
	if list, err := service.ListSeals(ctx, "", 0); err != nil || len(list) != 1 || list[0].Root != seal.Root {
		t.Fatalf("seals on Fabric: %+v, %v", list, err)
	}
	if got, err := service.GetSeal(ctx, seal.ID); err != nil || got.TxID != gotSeal.TxID {
		t.Fatalf("seal read back: %+v, %v", got, err)
	}

	// The same alert twice: one record, the first transaction's id.
	alert := contract.Alert{
		ID:   contract.AlertID(contract.AlertBehaviour, "meter-0001", time.Unix(0, 0), time.Unix(60, 0), hex.EncodeToString(root[:])),
		Kind: contract.AlertBehaviour, DeviceID: "meter-0001", Score: 0.83, Confidence: "high",
	}
	first, err := service.RecordAlert(ctx, alert)
	if err != nil {
		t.Fatal(err)
	}
	second, err := service.RecordAlert(ctx, alert)
	if err != nil {
		t.Fatal(err)
	}
	if first.TxID == "" || second.TxID != first.TxID {
		t.Fatalf("alert recorded under tx %q, then %q: want the first id both times", first.TxID, second.TxID)
	}
	all, err := service.ListAlerts(ctx, contract.ListAlertsArgs{DeviceID: "meter-0001"})
	if err != nil || len(all) != 1 || all[0].TxID != first.TxID {
		t.Fatalf("alerts on the ledger: %+v, %v; want exactly one", all, err)
	}

	// A verdict is a new version; the peer's history database keeps both.
	if _, err := admin.SetVerdict(ctx, alert.ID, contract.VerdictFalsePositive, "maintenance window"); err != nil {
		t.Fatal(err)
	}
	versions, err := service.AlertHistory(ctx, alert.ID)
	if err != nil || len(versions) != 2 || versions[0].TxID != first.TxID || versions[1].Alert.Verdict == nil {
		t.Fatalf("alert history on Fabric: %+v, %v", versions, err)
	}

	// Callers of the Fabric backend see the contract's events too.
	for {
		select {
		case ev := <-events:
			if ev.Name == contract.EventAlertRecorded && ev.TxID == first.TxID {
				return
			}
		case <-ctx.Done():
			t.Fatal("no alert.recorded event for the recorded alert")
		}
	}
}
