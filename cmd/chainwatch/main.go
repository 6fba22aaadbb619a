// Command chainwatch watches IoT device data flows on Kafka, anchors their
// history on a ledger and flags anomalous device behaviour with isolation
// forests. `chainwatch run` with no configuration starts the embedded
// default: an in-process Kafka-protocol broker, the embedded ledger, a
// simulated fleet and the detection pipeline.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
)

// globals are the flags every subcommand shares.
type globals struct {
	configPath string
	dataDir    string
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	cmd, err := newRootCommand().ExecuteContextC(ctx)
	if err == nil {
		return
	}
	fmt.Fprintln(os.Stderr, "chainwatch:", err)
	code := exitCode(err)
	if code == 2 && cmd != nil {
		fmt.Fprint(os.Stderr, "\n"+cmd.UsageString())
	}
	stop()
	os.Exit(code)
}

// usageError is a command used wrongly: an unknown command or flag, a
// malformed or missing argument. It exits 2, with the command's usage.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, a ...any) error { return usageError{fmt.Errorf(format, a...)} }

// exitCode is 2 for a usage error, 1 for any other failure.
func exitCode(err error) int {
	var u usageError
	if errors.As(err, &u) {
		return 2
	}
	// Cobra's own words for an unknown command or flag of the root.
	for _, p := range []string{"unknown command", "unknown flag", "unknown shorthand flag", "flag needs an argument", "required flag(s)"} {
		if strings.HasPrefix(err.Error(), p) {
			return 2
		}
	}
	return 1
}

// markUsageErrors makes every argument or flag error of cmd and its
// subcommands a usageError, and a command group called without a known
// subcommand one too (cobra would print the help and exit 0).
func markUsageErrors(cmd *cobra.Command) {
	cmd.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	if args := cmd.Args; args != nil {
		cmd.Args = func(c *cobra.Command, a []string) error {
			if err := args(c, a); err != nil {
				return usageError{err}
			}
			return nil
		}
	}
	if cmd.HasSubCommands() && cmd.Run == nil && cmd.RunE == nil && cmd.HasParent() {
		cmd.Args = cobra.ArbitraryArgs
		cmd.RunE = func(c *cobra.Command, a []string) error {
			if len(a) > 0 {
				return usagef("unknown command %q for %q", a[0], c.CommandPath())
			}
			return usagef("%s needs a subcommand", c.CommandPath())
		}
	}
	for _, sub := range cmd.Commands() {
		markUsageErrors(sub)
	}
}

func newRootCommand() *cobra.Command {
	g := &globals{}
	root := &cobra.Command{
		Use:           "chainwatch",
		Short:         "Ledger-anchored anomaly detection for IoT data flows",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().StringVar(&g.configPath, "config", "", "YAML configuration file (every key also settable as CHAINWATCH_<KEY>)")
	root.PersistentFlags().StringVar(&g.dataDir, "data-dir", "", "directory for all local state (default ./chainwatch-data; config data_dir)")
	root.AddCommand(
		newRunCommand(g),
		newSimulateCommand(g),
		newConfigCommand(g),
		newModelsCommand(g),
		newFeaturesCommand(g),
		newRetrainCommand(g),
		newTrainCommand(g),
		newEvaluateCommand(g),
		newLedgerCommand(g),
		newDevicesCommand(g),
		newFirmwareCommand(g),
		newAlertsCommand(g),
		newReplayCommand(g),
		newProveCommand(g),
		newVerifyProofCommand(g),
	)
	markUsageErrors(root)
	return root
}

// load reads the configuration with the global flags applied on top.
func (g *globals) load() (Config, error) {
	environ := os.Environ()
	if g.dataDir != "" {
		environ = append(environ, envName("data_dir")+"="+g.dataDir)
	}
	return LoadConfig(g.configPath, environ)
}

func newLogger(level string) *slog.Logger {
	var l slog.Level
	_ = l.UnmarshalText([]byte(level))
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: l}))
}
