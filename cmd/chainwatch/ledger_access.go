package main

import (
	"errors"
	"fmt"
	"net/http"
	"os"

	"path/filepath"
	"time"

	"github.com/chainwatch/chainwatch/ledgerclient"
	"github.com/chainwatch/chainwatch/ledgerclient/contract"
	"github.com/chainwatch/chainwatch/ledgerclient/embedded"
	"github.com/chainwatch/chainwatch/ledgerclient/fabric"
)

// ledgers are the clients `chainwatch run` uses, one per role it acts in.
type ledgers struct {
	service, manufacturer, operator, analyst *ledgerclient.Client
	// gateway serves the embedded ledger to the other subcommands; nil on Fabric.
	gateway http.Handler
	close   func()
}

// openLedgers opens the configured backend for `chainwatch run`.
func openLedgers(cfg Config) (*ledgers, error) {
	switch cfg.Ledger.Backend {
	case "fabric":
		b, err := fabric.Dial(cfg.Ledger.Fabric)
		if err != nil {
			return nil, err
		}
		c := ledgerclient.New(b)
		return &ledgers{service: c, manufacturer: c, operator: c, analyst: c, close: func() { b.Close() }}, nil
	default:
		l, err := embedded.Open(filepath.Join(cfg.DataDir, "ledger"), embedded.Options{})
		if err != nil {
			return nil, err
		}
		// One token per role the other subcommands act as, readable only
		// by the user running this process (embedded/remote.go).
		tokens := gatewayTokenDir(cfg)
		auth, err := embedded.WriteGatewayTokens(tokens, gatewayRoles...)
		if err != nil {
			l.Close()
			return nil, err
		}
		as := func(r contract.Role) *ledgerclient.Client { return ledgerclient.New(l.Client(embedded.LocalCaller(r))) }
		return &ledgers{
			service: as(contract.RoleService), manufacturer: as(contract.RoleManufacturer), operator: as(contract.RoleOperator), analyst: as(contract.RoleAnalyst),
			gateway: l.Handler(auth), close: func() {
				embedded.RemoveGatewayTokens(tokens, gatewayRoles...)
				l.Close()
			},
		}, nil
	}
}

// gatewayRoles are the roles the subcommands act as through the gateway.
var gatewayRoles = []contract.Role{contract.RoleManufacturer, contract.RoleOperator, contract.RoleAnalyst, contract.RoleService}

// gatewayTokenDir is where a running process writes its gateway tokens.
func gatewayTokenDir(cfg Config) string { return filepath.Join(cfg.DataDir, "gateway") }

// ledgerAs opens the configured ledger to act as the given role. On the
// embedded ledger that is a local identity of the role, and while a running
// `chainwatch run` holds the ledger, the call goes through that process's
// loopback gateway. On Fabric the configured identity is used, and the
// network decides what its role allows.
func ledgerAs(cfg Config, role contract.Role) (*ledgerclient.Client, func(), error) {
	if cfg.Ledger.Backend == "fabric" {
		b, err := fabric.Dial(cfg.Ledger.Fabric)
		if err != nil {
			return nil, nil, err
		}
		return ledgerclient.New(b), func() { b.Close() }, nil
	}
	caller := embedded.LocalCaller(role)
	l, err := embedded.Open(filepath.Join(cfg.DataDir, "ledger"), embedded.Options{LockTimeout: 200 * time.Millisecond})
	switch {
	case err == nil:
		return ledgerclient.New(l.Client(caller)), func() { l.Close() }, nil
	case errors.Is(err, embedded.ErrInUse):
		if cfg.HTTP.Listen == "off" {
			return nil, nil, fmt.Errorf("%w, and its http.listen is off, so it cannot be reached", err)
		}
		token, terr := embedded.ReadGatewayToken(gatewayTokenDir(cfg), role)
		if terr != nil {
			return nil, nil, fmt.Errorf("%w; its gateway needs the token it wrote in %s, which this user cannot read: %v", err, gatewayTokenDir(cfg), terr)
		}
		return ledgerclient.New(embedded.Remote("http://"+cfg.HTTP.Listen, token)), func() {}, nil
	default:
		return nil, nil, err
	}
}

// ledgerToRead is ledgerAs for commands that only read: on the embedded
// backend a missing ledger is an error naming it, and nothing is created
// (ledgerAs would create an empty ledger there).
func ledgerToRead(cfg Config, role contract.Role) (*ledgerclient.Client, func(), error) {
	if cfg.Ledger.Backend != "fabric" {
		if err := embeddedLedgerExists(cfg); err != nil {
			return nil, nil, err
		}
	}
	return ledgerAs(cfg, role)
}

// embeddedLedgerExists names the missing data directory or ledger.
func embeddedLedgerExists(cfg Config) error {
	dir := filepath.Join(cfg.DataDir, "ledger")
	if _, err := os.Stat(cfg.DataDir); err != nil {
		return fmt.Errorf("data directory %s does not exist (data_dir, --data-dir): there is no ledger to read", cfg.DataDir)
	}
	if !embedded.Exists(dir) {
		return fmt.Errorf("no embedded ledger in %s: `chainwatch run` creates it there; nothing to read", dir)
	}
	return nil
}
