// Command chainwatch watches IoT device data flows on Kafka, anchors their
// history on a ledger and flags anomalous device behaviour with isolation
// forests. `chainwatch run` with no configuration starts the embedded
// default: an in-process Kafka-protocol broker, the embedded ledger, a
// simulated fleet and the detection pipeline.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
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
	if err := newRootCommand().ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "chainwatch:", err)
		os.Exit(1)
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
