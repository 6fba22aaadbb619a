package main

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/chainwatch/chainwatch/ledgerclient"
	"github.com/chainwatch/chainwatch/ledgerclient/contract"
	"github.com/chainwatch/chainwatch/ledgerclient/embedded"
)

func newLedgerCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "ledger", Short: "Work with the ledger itself"}
	var pubKey string
	verify := &cobra.Command{
		Use:   "verify",
		Short: "Re-check the embedded ledger offline: block hashes, signatures, chain links and world state",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := g.load()
			if err != nil {
				return err
			}
			if cfg.Ledger.Backend != "embedded" {
				return fmt.Errorf("ledger verify re-checks the embedded ledger's files; a Fabric ledger is validated by its peers (ledger.backend is %s)", cfg.Ledger.Backend)
			}
			if err := embeddedLedgerExists(cfg); err != nil {
				return err
			}
			rep, err := embedded.Verify(filepath.Join(cfg.DataDir, "ledger"), pubKey)
			if err != nil {
				return err
			}
			if err := writeJSON(cmd.OutOrStdout(), rep); err != nil {
				return err
			}
			if !rep.OK {
				return fmt.Errorf("ledger verification failed: %s", rep.Problem)
			}
			return nil
		},
	}
	verify.Flags().StringVar(&pubKey, "public-key", "", "PEM public key to verify signatures with (default: the ledger's signer.pub.pem)")
	cmd.AddCommand(verify)
	return cmd
}

// withLedger runs fn with a client of the given role and closes it after.
func withLedger(g *globals, role contract.Role, fn func(*ledgerclient.Client) error) error {
	return useLedger(g, role, ledgerAs, fn)
}

// readLedger is withLedger for commands that only read: a missing ledger
// is an error, and nothing is created.
func readLedger(g *globals, role contract.Role, fn func(*ledgerclient.Client) error) error {
	return useLedger(g, role, ledgerToRead, fn)
}

func useLedger(g *globals, role contract.Role, open func(Config, contract.Role) (*ledgerclient.Client, func(), error), fn func(*ledgerclient.Client) error) error {
	cfg, err := g.load()
	if err != nil {
		return err
	}
	c, closeFn, err := open(cfg, role)
	if err != nil {
		return err
	}
	defer closeFn()
	return fn(c)
}

func newDevicesCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "devices", Short: "Device birth certificates on the ledger"}
	var d contract.Device
	var pub string
	register := &cobra.Command{
		Use:   "register --id ID --profile P --owner O",
		Short: "Register a device's birth certificate (as manufacturer)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if pub != "" {
				key, err := decodeKey(pub)
				if err != nil {
					return fmt.Errorf("--public-key: %w", err)
				}
				d.PublicKey = key
			}
			return withLedger(g, contract.RoleManufacturer, func(c *ledgerclient.Client) error {
				got, err := c.RegisterDevice(cmd.Context(), d)
				if err != nil {
					return err
				}
				return writeJSON(cmd.OutOrStdout(), got)
			})
		},
	}
	f := register.Flags()
	f.StringVar(&d.ID, "id", "", "device id")
	f.StringVar(&d.Profile, "profile", "", "device profile (meter, camera, plc, gateway, …)")
	f.StringVar(&d.Owner, "owner", "", "owning organisation")
	f.StringSliceVar(&d.MACs, "mac", nil, "hardware address (repeatable)")
	f.StringSliceVar(&d.IPs, "ip", nil, "IP address (repeatable)")
	f.StringVar(&d.Firmware, "firmware", "", "hex SHA-256 of the installed firmware")
	f.StringVar(&pub, "public-key", "", "Ed25519 public key, hex or base64")
	for _, name := range []string{"id", "profile", "owner"} {
		_ = register.MarkFlagRequired(name)
	}

	var reason, effective string
	revoke := &cobra.Command{
		Use:   "revoke ID --reason R [--effective TIME]",
		Short: "Revoke a device (as operator), from now or from an earlier time",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var from time.Time
			if effective != "" {
				var err error
				if from, err = time.Parse(time.RFC3339, effective); err != nil {
					return fmt.Errorf("--effective: %q is not RFC 3339", effective)
				}
			}
			return withLedger(g, contract.RoleOperator, func(c *ledgerclient.Client) error {
				got, err := c.RevokeDeviceFrom(cmd.Context(), args[0], reason, from)
				if err != nil {
					return err
				}
				return writeJSON(cmd.OutOrStdout(), got)
			})
		},
	}
	revoke.Flags().StringVar(&reason, "reason", "", "why the device is revoked")
	revoke.Flags().StringVar(&effective, "effective", "", "RFC 3339 time the revocation takes effect, e.g. when the device was stolen (default: now)")
	_ = revoke.MarkFlagRequired("reason")
	list := &cobra.Command{
		Use: "list", Short: "List registered devices", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return readLedger(g, contract.RoleAnalyst, func(c *ledgerclient.Client) error {
				got, err := c.ListDevices(cmd.Context())
				if err != nil {
					return err
				}
				return writeJSON(cmd.OutOrStdout(), got)
			})
		},
	}
	cmd.AddCommand(register, revoke, list)
	return cmd
}

func decodeKey(s string) ([]byte, error) {
	for _, dec := range []func(string) ([]byte, error){hex.DecodeString, base64.StdEncoding.DecodeString} {
		if b, err := dec(strings.TrimSpace(s)); err == nil && len(b) == ed25519.PublicKeySize {
			return b, nil
		}
	}
	return nil, fmt.Errorf("not a %d-byte Ed25519 key in hex or base64", ed25519.PublicKeySize)
}

func newFirmwareCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "firmware", Short: "Approved firmware on the ledger"}
	var fw contract.Firmware
	approve := &cobra.Command{
		Use:   "approve --profile P --hash H",
		Short: "Approve a firmware hash for a profile (as operator)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withLedger(g, contract.RoleOperator, func(c *ledgerclient.Client) error {
				got, err := c.ApproveFirmware(cmd.Context(), fw)
				if err != nil {
					return err
				}
				return writeJSON(cmd.OutOrStdout(), got)
			})
		},
	}
	approve.Flags().StringVar(&fw.Profile, "profile", "", "device profile")
	approve.Flags().StringVar(&fw.Hash, "hash", "", "hex SHA-256 of the firmware image")
	approve.Flags().StringVar(&fw.Version, "version", "", "firmware version label")
	_ = approve.MarkFlagRequired("profile")
	_ = approve.MarkFlagRequired("hash")
	var profile string
	list := &cobra.Command{
		Use: "list", Short: "List approved firmware", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return readLedger(g, contract.RoleAnalyst, func(c *ledgerclient.Client) error {
				got, err := c.ListFirmware(cmd.Context(), profile)
				if err != nil {
					return err
				}
				return writeJSON(cmd.OutOrStdout(), got)
			})
		},
	}
	list.Flags().StringVar(&profile, "profile", "", "only this profile")
	cmd.AddCommand(approve, list)
	return cmd
}

func newAlertsCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "alerts", Short: "Alerts recorded on the ledger"}
	var filter contract.ListAlertsArgs
	list := &cobra.Command{
		Use: "list", Short: "List alerts", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return readLedger(g, contract.RoleAnalyst, func(c *ledgerclient.Client) error {
				got, err := c.ListAlerts(cmd.Context(), filter)
				if err != nil {
					return err
				}
				return writeJSON(cmd.OutOrStdout(), got)
			})
		},
	}
	list.Flags().StringVar(&filter.DeviceID, "device", "", "only this device")
	list.Flags().StringVar(&filter.Kind, "kind", "", "only this kind (behaviour, rogue-device, …)")
	list.Flags().IntVar(&filter.Limit, "limit", 0, "at most this many")
	var note string
	verdict := &cobra.Command{
		Use:   "verdict ID true-positive|false-positive|benign",
		Short: "Record an analyst's verdict on an alert (as analyst)",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return readLedger(g, contract.RoleAnalyst, func(c *ledgerclient.Client) error {
				got, err := c.SetVerdict(cmd.Context(), args[0], args[1], note)
				if err != nil {
					return err
				}
				return writeJSON(cmd.OutOrStdout(), got)
			})
		},
	}
	verdict.Flags().StringVar(&note, "note", "", "free-text note")
	history := &cobra.Command{
		Use:   "history ID",
		Short: "Every committed version of an alert: its recording and each verdict since",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return readLedger(g, contract.RoleAnalyst, func(c *ledgerclient.Client) error {
				got, err := c.AlertHistory(cmd.Context(), args[0])
				if err != nil {
					return err
				}
				return writeJSON(cmd.OutOrStdout(), got)
			})
		},
	}
	cmd.AddCommand(list, verdict, history)
	return cmd
}
