package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"time"

	"github.com/spf13/cobra"

	"github.com/chainwatch/chainwatch/ledgerclient/contract"
	"github.com/chainwatch/chainwatch/simulator"
)

func newSimulateCommand(g *globals) *cobra.Command {
	var (
		brokers  []string
		duration time.Duration
		noLedger bool
		sc       SimulatorConfig
	)
	cmd := &cobra.Command{
		Use:   "simulate",
		Short: "Produce a simulated IoT fleet's flows, with scheduled attacks and a ground-truth CSV",
		Long: `Produce a simulated fleet's flow records (native JSON schema) to Kafka.

Without --brokers it produces to the configured cluster, or to the embedded broker
of a running 'chainwatch run'. The fleet's birth certificates and approved firmware
are registered on the ledger first, as a manufacturer and operator would.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := g.load()
			if err != nil {
				return err
			}
			mergeSimulatorFlags(cmd, &cfg.Simulator, sc)
			ctx := cmd.Context()
			cluster, err := kafkaFor(cmd, cfg, brokers)
			if err != nil {
				return err
			}
			log := newLogger(cfg.LogLevel)
			simCfg := simulatorConfig(cfg, cluster)
			simCfg.Duration = duration
			sim, err := simulator.New(simCfg, log)
			if err != nil {
				return err
			}
			if !noLedger {
				maker, closeMaker, err := ledgerAs(cfg, contract.RoleManufacturer)
				if err != nil {
					return fmt.Errorf("register fleet: %w (use --no-register to skip)", err)
				}
				defer closeMaker()
				operator, closeOp, err := ledgerAs(cfg, contract.RoleOperator)
				if err != nil {
					return err
				}
				defer closeOp()
				if err := sim.Register(ctx, maker, operator); err != nil {
					return fmt.Errorf("register fleet: %w (use --no-register to skip)", err)
				}
			}
			stats, err := sim.Run(ctx)
			if err != nil {
				return err
			}
			return json.NewEncoder(cmd.OutOrStdout()).Encode(stats)
		},
	}
	f := cmd.Flags()
	f.StringSliceVar(&brokers, "brokers", nil, "Kafka brokers (default: kafka.brokers, else the embedded broker of a running `chainwatch run`)")
	f.DurationVar(&duration, "duration", 0, "live event time to produce, then stop (default: until interrupted)")
	f.BoolVar(&noLedger, "no-register", false, "do not register the fleet on the ledger (its devices then show up as rogue)")
	f.IntVar(&sc.Devices, "devices", 0, "devices in the fleet (default simulator.devices)")
	f.Uint64Var(&sc.Seed, "seed", 0, "seed for the fleet, its traffic and the attack schedule (default simulator.seed)")
	f.Float64Var(&sc.Speed, "speed", 0, "simulated seconds per wall second; negative = as fast as possible (default simulator.speed)")
	f.DurationVar(&sc.History, "history", 0, "attack-free history produced at once before live traffic (default simulator.history)")
	f.DurationVar(&sc.AttackEvery, "attack-every", 0, "event time between attacks (default simulator.attack_every)")
	f.StringVar(&sc.GroundTruth, "ground-truth", "", "ground-truth CSV path (default simulator.ground_truth)")
	return cmd
}

// mergeSimulatorFlags lets flags the user set win over the configuration.
func mergeSimulatorFlags(cmd *cobra.Command, dst *SimulatorConfig, flags SimulatorConfig) {
	set := cmd.Flags().Changed
	if set("devices") {
		dst.Devices = flags.Devices
	}
	if set("seed") {
		dst.Seed = flags.Seed
	}
	if set("speed") {
		dst.Speed = flags.Speed
	}
	if set("history") {
		dst.History = flags.History
		if dst.History == 0 {
			dst.History = -1 // explicit "no history"
		}
	}
	if set("attack-every") {
		dst.AttackEvery = flags.AttackEvery
	}
	if set("ground-truth") {
		dst.GroundTruth = flags.GroundTruth
	}
}

func reachable(ctx context.Context, addr string) error {
	d := net.Dialer{Timeout: 2 * time.Second}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	return conn.Close()
}
