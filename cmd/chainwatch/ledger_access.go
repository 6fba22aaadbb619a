package main

import (
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/chainwatch/chainwatch/ledgerclient"
	"github.com/chainwatch/chainwatch/ledgerclient/contract"
	"github.com/chainwatch/chainwatch/ledgerclient/embedded"
)

// ledgerAs opens the configured ledger as a local identity of the given
// role. When a running `chainwatch run` holds the embedded ledger, it goes
// through that process's loopback gateway instead.
func ledgerAs(cfg Config, role contract.Role) (*ledgerclient.Client, func(), error) {
	caller := embedded.LocalCaller(role)
	l, err := embedded.Open(filepath.Join(cfg.DataDir, "ledger"), embedded.Options{LockTimeout: 200 * time.Millisecond})
	switch {
	case err == nil:
		return ledgerclient.New(l.Client(caller)), func() { l.Close() }, nil
	case errors.Is(err, embedded.ErrInUse):
		if cfg.HTTP.Listen == "off" {
			return nil, nil, fmt.Errorf("%w, and its http.listen is off, so it cannot be reached", err)
		}
		return ledgerclient.New(embedded.Remote("http://"+cfg.HTTP.Listen, caller)), func() {}, nil
	default:
		return nil, nil, err
	}
}
