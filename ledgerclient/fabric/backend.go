package fabric

import (
	"context"
	"crypto/x509"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/hyperledger/fabric-gateway/pkg/client"
	"github.com/hyperledger/fabric-gateway/pkg/identity"
	"github.com/hyperledger/fabric-protos-go-apiv2/gateway"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/chainwatch/chainwatch/ledgerclient"
	"github.com/chainwatch/chainwatch/ledgerclient/contract"
)

// Config locates the network and the identity this process acts as. Its
// keys are the ledger.fabric.* configuration keys; deploy/fabric/network.sh
// writes a file with them for the network it starts.
type Config struct {
	Channel   string `yaml:"channel"`   // default chainwatch
	Chaincode string `yaml:"chaincode"` // default chainwatch
	MSPID     string `yaml:"msp_id"`
	// PeerEndpoint is the gateway peer's host:port.
	PeerEndpoint string `yaml:"peer_endpoint"`
	// PeerHostOverride is the TLS server name when it differs from the
	// endpoint's host (e.g. peer0.org1.example.com on 127.0.0.1).
	PeerHostOverride string `yaml:"peer_host_override"`
	PeerTLSCA        string `yaml:"peer_tls_ca"` // PEM file of the peer's TLS CA
	Cert             string `yaml:"cert"`        // PEM file of this identity's certificate
	Key              string `yaml:"key"`         // PEM file of its private key
	// Timeout bounds each endorsement, submission and commit wait. Default 30s.
	Timeout time.Duration `yaml:"timeout"`
}

// Validate names the first missing or unreadable key.
func (c Config) Validate() error {
	for _, f := range []struct{ key, v string }{
		{"msp_id", c.MSPID}, {"peer_endpoint", c.PeerEndpoint}, {"peer_tls_ca", c.PeerTLSCA}, {"cert", c.Cert}, {"key", c.Key},
	} {
		if f.v == "" {
			return fmt.Errorf("%s: required for the fabric backend", f.key)
		}
	}
	for _, f := range []struct{ key, path string }{{"peer_tls_ca", c.PeerTLSCA}, {"cert", c.Cert}, {"key", c.Key}} {
		if _, err := os.Stat(f.path); err != nil {
			return fmt.Errorf("%s: %w", f.key, err)
		}
	}
	return nil
}

// WithDefaults fills the keys that have defaults.
func (c Config) WithDefaults() Config {
	if c.Channel == "" {
		c.Channel = "chainwatch"
	}
	if c.Chaincode == "" {
		c.Chaincode = "chainwatch"
	}
	if c.Timeout == 0 {
		c.Timeout = 30 * time.Second
	}
	return c
}

// Backend is a connection to the chaincode as one identity.
type Backend struct {
	cfg      Config
	conn     *grpc.ClientConn
	gw       *client.Gateway
	network  *client.Network
	contract *client.Contract
}

var _ ledgerclient.Backend = (*Backend)(nil)

// Dial connects to the gateway peer. Nothing is sent until the first call.
func Dial(cfg Config) (*Backend, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("ledger.fabric.%w", err)
	}
	cfg = cfg.WithDefaults()
	caPEM, err := os.ReadFile(cfg.PeerTLSCA)
	if err != nil {
		return nil, fmt.Errorf("ledger.fabric.peer_tls_ca: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("ledger.fabric.peer_tls_ca: %s holds no PEM certificate", cfg.PeerTLSCA)
	}
	conn, err := grpc.NewClient(cfg.PeerEndpoint, grpc.WithTransportCredentials(credentials.NewClientTLSFromCert(pool, cfg.PeerHostOverride)))
	if err != nil {
		return nil, fmt.Errorf("fabric: peer %s: %w", cfg.PeerEndpoint, err)
	}
	certPEM, err := os.ReadFile(cfg.Cert)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("ledger.fabric.cert: %w", err)
	}
	cert, err := identity.CertificateFromPEM(certPEM)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("ledger.fabric.cert: %w", err)
	}
	id, err := identity.NewX509Identity(cfg.MSPID, cert)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("ledger.fabric.cert: %w", err)
	}
	keyPEM, err := os.ReadFile(cfg.Key)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("ledger.fabric.key: %w", err)
	}
	key, err := identity.PrivateKeyFromPEM(keyPEM)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("ledger.fabric.key: %w", err)
	}
	sign, err := identity.NewPrivateKeySign(key)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("ledger.fabric.key: %w", err)
	}
	gw, err := client.Connect(id, client.WithSign(sign), client.WithClientConnection(conn),
		client.WithEvaluateTimeout(cfg.Timeout), client.WithEndorseTimeout(cfg.Timeout),
		client.WithSubmitTimeout(cfg.Timeout), client.WithCommitStatusTimeout(cfg.Timeout))
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("fabric: gateway: %w", err)
	}
	network := gw.GetNetwork(cfg.Channel)
	return &Backend{cfg: cfg, conn: conn, gw: gw, network: network, contract: network.GetContract(cfg.Chaincode)}, nil
}

// Submit endorses, orders and waits for the commit of one transaction, and
// returns its result and transaction id. A transaction the peers mark
// invalid (an MVCC conflict, say) is an error.
func (b *Backend) Submit(ctx context.Context, fn string, args []byte) ([]byte, string, error) {
	result, commit, err := b.contract.SubmitAsyncWithContext(ctx, fn, client.WithArguments(string(args)))
	if err != nil {
		return nil, "", contractError(fn, err)
	}
	st, err := commit.StatusWithContext(ctx)
	if err != nil {
		return nil, "", fmt.Errorf("fabric: %s %s: commit status: %w", fn, commit.TransactionID(), err)
	}
	if !st.Successful {
		return nil, st.TransactionID, fmt.Errorf("fabric: %s %s: committed invalid (%s)", fn, st.TransactionID, st.Code)
	}
	return result, st.TransactionID, nil
}

// Evaluate runs a read-only function on the gateway peer.
func (b *Backend) Evaluate(ctx context.Context, fn string, args []byte) ([]byte, error) {
	out, err := b.contract.EvaluateWithContext(ctx, fn, client.WithArguments(string(args)))
	if err != nil {
		return nil, contractError(fn, err)
	}
	return out, nil
}

// Subscribe delivers the chaincode's events from now on.
func (b *Backend) Subscribe(ctx context.Context) (<-chan ledgerclient.Event, error) {
	events, err := b.network.ChaincodeEvents(ctx, b.cfg.Chaincode)
	if err != nil {
		return nil, fmt.Errorf("fabric: chaincode events: %w", err)
	}
	out := make(chan ledgerclient.Event, 256)
	go func() {
		defer close(out)
		for ev := range events {
			select {
			case out <- ledgerclient.Event{Name: ev.EventName, TxID: ev.TransactionID, Payload: ev.Payload}:
			case <-ctx.Done():
				return
			}
		}
	}()
	return out, nil
}

// Close ends the gateway connection.
func (b *Backend) Close() error {
	b.gw.Close()
	return b.conn.Close()
}

// contractError turns a gateway error into one that errors.Is matches
// against the contract's sentinels, using the chaincode's message that the
// peers attach to the gRPC status.
func contractError(fn string, err error) error {
	messages := []string{}
	for _, d := range status.Convert(err).Details() {
		if detail, ok := d.(*gateway.ErrorDetail); ok {
			messages = append(messages, detail.GetMessage())
		}
	}
	text := strings.Join(messages, "; ")
	for _, sentinel := range []error{contract.ErrForbidden, contract.ErrNotFound, contract.ErrInvalid, contract.ErrConflict} {
		if strings.Contains(text, sentinel.Error()) {
			return fmt.Errorf("fabric: %s: %w (%s)", fn, sentinel, text)
		}
	}
	if text != "" {
		return fmt.Errorf("fabric: %s: %w (%s)", fn, err, text)
	}
	return fmt.Errorf("fabric: %s: %w", fn, err)
}
