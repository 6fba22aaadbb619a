package main

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/chainwatch/chainwatch/ledgerclient/contract"
	"github.com/chainwatch/chainwatch/pipeline"
)

func newRetrainCommand(g *globals) *cobra.Command {
	var (
		profiles []string
		every    time.Duration
		brokers  []string
	)
	cmd := &cobra.Command{
		Use:   "retrain [--profile P]... [--every 24h]",
		Short: "Retrain each profile on the latest verified history and promote the candidate when it is not worse (as operator)",
		Long: `One round, for every profile with an active model (or the --profile ones): train a
candidate on retrain.history of verified history ending retrain.holdout before the
newest record; judge it and the active model on the held-back windows, labelled by
analysts' verdicts; register it with the figures and the decision in its ledger
record; promote it when it raises no more false incidents than the active model and
its recall of true positives is no lower by more than retrain.recall_tolerance.
Running services swap a promoted model in within detector.model_poll.

With --every (or retrain.every) it runs a round every period until stopped:
scheduled retraining, off unless asked for. It acts as an operator, since the
ledger lets the service itself promote only a profile's first model.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			acc, err := openHistory(cmd, g, brokers, "", contract.RoleOperator)
			if err != nil {
				return err
			}
			defer acc.close()
			cfg := acc.cfg
			if cmd.Flags().Changed("every") {
				cfg.Retrain.Every = every
			}
			if err := cfg.Retrain.Validate(); err != nil {
				return usagef("retrain.%v", err)
			}
			store, done := modelStoreFor(cmd, cfg)
			defer done()
			store.Ledger = acc.ledger
			enc := json.NewEncoder(cmd.OutOrStdout())
			for {
				reg, err := pipeline.SnapshotRegistry(cmd.Context(), acc.ledger)
				if err != nil {
					return err
				}
				decisions, err := pipeline.RetrainRound(cmd.Context(), pipeline.RetrainRequest{
					Config: cfg.Retrain, Detector: cfg.Detector, Kafka: acc.kafka, Ledger: acc.ledger, Registry: reg,
					Store: store, Topic: acc.topic, LeafTopic: cfg.Topics.Leaves, Window: cfg.Window, Profiles: profiles,
				})
				for _, d := range decisions {
					if err := enc.Encode(d); err != nil {
						return err
					}
				}
				if err != nil {
					if cfg.Retrain.Every == 0 {
						return err
					}
					fmt.Fprintf(cmd.ErrOrStderr(), "chainwatch: retraining round failed: %v; next in %s\n", err, cfg.Retrain.Every)
				}
				if cfg.Retrain.Every == 0 {
					return nil
				}
				select {
				case <-cmd.Context().Done():
					return nil
				case <-time.After(cfg.Retrain.Every):
				}
			}
		},
	}
	cmd.Flags().StringSliceVar(&profiles, "profile", nil, "profiles to retrain (default: every profile with an active model)")
	cmd.Flags().DurationVar(&every, "every", 0, "run a round every period until stopped (default retrain.every; 0: one round)")
	cmd.Flags().StringSliceVar(&brokers, "brokers", nil, "Kafka brokers (default kafka.brokers, else the embedded broker of a running `chainwatch run`)")
	return cmd
}
