package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"time"

	"github.com/spf13/cobra"

	"github.com/chainwatch/chainwatch/ledgerclient"
	"github.com/chainwatch/chainwatch/ledgerclient/contract"
	"github.com/chainwatch/chainwatch/models"
	"github.com/chainwatch/chainwatch/models/eval"
	"github.com/chainwatch/chainwatch/models/iforest"
	"github.com/chainwatch/chainwatch/pipeline"
)

func newModelsCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "models", Short: "Inspect, register and promote model artifacts"}
	cmd.AddCommand(&cobra.Command{
		Use:   "register FILE",
		Short: "Put a behaviour model artifact in the model store and register its hash on the ledger (as operator)",
		Long: `Copies the artifact into <data_dir>/models/<hash>.cwm, where the service loads
models from, and registers its hash, profile, algorithm, metrics and training anchors
on the ledger. Registering does not activate it: promote it with 'models promote'.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			m, err := models.Load(args[0])
			if err != nil {
				return err
			}
			if m.Profile == "" || m.Behaviour == nil {
				return fmt.Errorf("%s is not a behaviour model of a device profile (trained from a CSV?): the service scores windows only with those", args[0])
			}
			if err := m.CheckSchema(); err != nil {
				return err
			}
			cfg, err := g.load()
			if err != nil {
				return err
			}
			store, done := modelStoreFor(cmd, cfg)
			defer done()
			if err := store.Save(cmd.Context(), m); err != nil {
				if store.Share == nil {
					return err
				}
				fmt.Fprintf(cmd.ErrOrStderr(), "chainwatch: %s is in %s but not in topic %s (%v): the instances that do not share that directory load it once an instance that does loads it\n",
					m.Hash(), store.Dir, cfg.Topics.Models, err)
			}
			return withLedger(g, contract.RoleOperator, func(c *ledgerclient.Client) error {
				got, err := c.RegisterModel(cmd.Context(), contract.Model{Hash: m.Hash(), Profile: m.Profile, Algorithm: m.Algorithm,
					TrainingAnchors: m.TrainingData, Metrics: m.Metrics})
				if err != nil {
					return err
				}
				return writeJSON(cmd.OutOrStdout(), got)
			})
		},
	})
	var profile string
	list := &cobra.Command{
		Use:   "list [--profile P]",
		Short: "List the registered models, with their metrics, training anchors and whether each is its profile's active one",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return readLedger(g, contract.RoleAnalyst, func(c *ledgerclient.Client) error {
				got, err := c.ListModels(cmd.Context(), profile)
				if err != nil {
					return err
				}
				return writeJSON(cmd.OutOrStdout(), got)
			})
		},
	}
	list.Flags().StringVar(&profile, "profile", "", "only this profile")
	cmd.AddCommand(list)
	cmd.AddCommand(&cobra.Command{
		Use:   "promote HASH",
		Short: "Make a registered model its profile's active model (as operator); running services swap it in",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := g.load()
			if err != nil {
				return err
			}
			store, done := modelStoreFor(cmd, cfg)
			defer done()
			if _, err := store.Load(cmd.Context(), args[0]); err != nil {
				return fmt.Errorf("model %s: %w (register it first with 'models register FILE')", args[0], err)
			}
			return withLedger(g, contract.RoleOperator, func(c *ledgerclient.Client) error {
				got, err := c.PromoteModel(cmd.Context(), args[0])
				if err != nil {
					return err
				}
				return writeJSON(cmd.OutOrStdout(), got)
			})
		},
	})
	cmd.AddCommand(&cobra.Command{
		Use:   "show FILE",
		Short: "Print an artifact's metadata and hash as JSON (the hash equals sha256sum FILE)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			m, err := models.Load(args[0])
			if err != nil {
				return err
			}
			return writeJSON(cmd.OutOrStdout(), struct {
				Hash  string `json:"hash"`
				Trees int    `json:"trees"`
				Nodes int    `json:"nodes"`
				models.Metadata
			}{m.Hash(), m.Forest().Trees(), m.Forest().Nodes(), m.Metadata})
		},
	})
	return cmd
}

// modelStoreFor is the model store of the configuration's data directory,
// sharing artifacts through the model topic when a broker answers (the
// embedded one runs only inside `chainwatch run`). done releases it.
func modelStoreFor(cmd *cobra.Command, cfg Config) (*pipeline.ModelStore, func()) {
	store := &pipeline.ModelStore{Dir: filepath.Join(cfg.DataDir, "models")}
	ctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Second)
	defer cancel()
	cluster, err := kafkaFor(cmd, cfg, nil)
	if err == nil {
		err = pipeline.EnsureStateTopic(ctx, cluster, cfg.Kafka.Replication, cfg.Topics.Models)
	}
	if err != nil {
		fmt.Fprintf(cmd.ErrOrStderr(), "chainwatch: model topic not used (%v): only %s is read and written\n", err, store.Dir)
		return store, func() {}
	}
	topic := pipeline.NewModelTopic(cluster, cfg.Topics.Models)
	store.Share = topic
	return store, func() { _ = topic.Close() }
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func readDataset(path, labelColumn, positive string) (*models.Dataset, string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, "", err
	}
	defer f.Close()
	h := sha256.New()
	ds, err := models.ReadCSV(io.TeeReader(f, h), labelColumn, positive)
	if err != nil {
		return nil, "", fmt.Errorf("%s: %w", path, err)
	}
	_, _ = io.Copy(h, f) // hash any tail the CSV reader left unread
	return ds, hex.EncodeToString(h.Sum(nil)), nil
}

func newTrainCommand(*globals) *cobra.Command {
	var (
		csvPath, labelColumn, out, profile string
		cfg                                iforest.Config
		contamination                      float64
	)
	cmd := &cobra.Command{
		Use:   "train --csv data.csv --out model.cwm",
		Short: "Train an isolation forest on a CSV and write a model artifact",
		Long: `Train an isolation forest (extended when --extension > 0) on the numeric columns of a
CSV whose header names the features. A label column, if named, is left out of the
features. The artifact records the CSV's SHA-256 as its training data.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if csvPath == "" || out == "" {
				return usagef("--csv and --out are required")
			}
			ds, digest, err := readDataset(csvPath, labelColumn, "")
			if err != nil {
				return err
			}
			m, err := models.Train(ds.X, ds.Names, models.TrainOptions{
				Forest: cfg, Contamination: contamination, Profile: profile,
				TrainingData: []string{"sha256:" + digest},
			})
			if err != nil {
				return err
			}
			if ds.Labels != nil {
				// Labels never train the forest; with them the artifact also
				// records how well it ranks its own training rows.
				scores := make([]float64, ds.Rows())
				if err := m.Forest().ScoreBatchParallel(scores, ds.X, cfg.Workers); err != nil {
					return err
				}
				if res, err := eval.Evaluate(scores, ds.Labels, 0); err == nil {
					m.Metrics["train_auc"] = res.AUC
					m.Metrics["train_average_precision"] = res.AP
				}
			}
			if err := m.Save(out); err != nil {
				return err
			}
			return writeJSON(cmd.OutOrStdout(), map[string]any{
				"model": out, "hash": m.Hash(), "rows": ds.Rows(), "features": len(ds.Names),
				"algorithm": m.Algorithm, "threshold": m.Calibration.Threshold, "metrics": m.Metrics,
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&csvPath, "csv", "", "training CSV (header row names the features)")
	f.StringVar(&labelColumn, "label-column", "", "column to leave out of the features (labels)")
	f.StringVar(&out, "out", "", "artifact path to write")
	f.StringVar(&profile, "profile", "", "device profile the model is for")
	f.IntVar(&cfg.Trees, "trees", 100, "number of trees")
	f.IntVar(&cfg.Subsample, "subsample", 256, "rows per tree (ψ)")
	f.IntVar(&cfg.Extension, "extension", 0, "extension level (0 = classic isolation forest)")
	f.Uint64Var(&cfg.Seed, "seed", 0, "random seed")
	f.IntVar(&cfg.Workers, "workers", runtime.GOMAXPROCS(0), "goroutines building trees")
	f.Float64Var(&contamination, "contamination", 0.01, "share of training rows assumed anomalous (sets the threshold)")
	return cmd
}

func newEvaluateCommand(*globals) *cobra.Command {
	var modelPath, csvPath, labelColumn, positive, plotPath string
	var k int
	cmd := &cobra.Command{
		Use:   "evaluate --model model.cwm --csv test.csv --label-column c",
		Short: "Score a labelled CSV with a model and print ROC AUC, average precision and precision at k as JSON",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if modelPath == "" || csvPath == "" || labelColumn == "" {
				return usagef("--model, --csv and --label-column are required")
			}
			m, err := models.Load(modelPath)
			if err != nil {
				return err
			}
			if m.Behaviour != nil {
				// Its forest scores deviations from each device's own
				// baseline, which a table of raw feature rows does not carry.
				return fmt.Errorf("%s is a behaviour model (%s): it judges each device's windows against that device's baseline, so rows of a CSV cannot be scored with it; evaluate models trained from a CSV here", modelPath, m.Profile)
			}
			ds, _, err := readDataset(csvPath, labelColumn, positive)
			if err != nil {
				return err
			}
			if len(ds.Names) != len(m.Features) {
				return fmt.Errorf("%s has %d feature columns %v, the model expects %d %v", csvPath, len(ds.Names), ds.Names, len(m.Features), m.Features)
			}
			for i := range ds.Names {
				if ds.Names[i] != m.Features[i] {
					return fmt.Errorf("%s column %d is %q, the model expects %q there", csvPath, i+1, ds.Names[i], m.Features[i])
				}
			}
			scores := make([]float64, ds.Rows())
			if err := m.Forest().ScoreBatchParallel(scores, ds.X, runtime.GOMAXPROCS(0)); err != nil {
				return err
			}
			res, err := eval.Evaluate(scores, ds.Labels, k)
			if err != nil {
				return err
			}
			flagged := 0
			for _, s := range scores {
				if m.Calibration.Anomalous(s) {
					flagged++
				}
			}
			if plotPath != "" {
				fpr, tpr := eval.ROC(scores, ds.Labels)
				if err := eval.PlotROC(plotPath, filepath.Base(csvPath), fpr, tpr, res.AUC); err != nil {
					return err
				}
			}
			return writeJSON(cmd.OutOrStdout(), struct {
				eval.Result
				Model   string `json:"model"`
				Flagged int    `json:"flagged_at_threshold"`
				Plot    string `json:"plot,omitempty"`
			}{res, m.Hash(), flagged, plotPath})
		},
	}
	f := cmd.Flags()
	f.StringVar(&modelPath, "model", "", "model artifact")
	f.StringVar(&csvPath, "csv", "", "labelled CSV with the model's feature columns")
	f.StringVar(&labelColumn, "label-column", "", "column holding the labels")
	f.StringVar(&positive, "positive", "", `label value of an anomaly (default: 1, true, yes, anomaly or anomalous)`)
	f.IntVar(&k, "k", 0, "k for precision at k (default: the number of anomalies)")
	f.StringVar(&plotPath, "plot", "", "write the ROC curve to this PNG")
	return cmd
}
