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
	var (
		dh        historyFlags
		driftFile string
		quiet     bool
	)
	drift := &cobra.Command{
		Use:   "drift (--profile P | --model FILE) --since T --until T",
		Short: "Population stability index of every feature between a period's verified windows and a model's training data",
		Long: `Reads the profile's verified windows of the period and compares each feature's
distribution with the training distribution the model recorded (deciles), as the
population stability index: below 0.1 stable, 0.1–0.25 a moderate shift, above 0.25
a significant one. The model is the profile's active one, or --model FILE.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return driftOnHistory(cmd, g, &dh, driftFile, quiet)
		},
	}
	dh.register(drift, false)
	drift.Flags().StringVar(&driftFile, "model", "", "model artifact to compare with (default: the profile's active model)")
	drift.Flags().BoolVar(&quiet, "quiet", false, "no progress on stderr")
	cmd.AddCommand(drift)
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

func newTrainCommand(g *globals) *cobra.Command {
	var (
		csvPath, labelColumn, out, profile string
		cfg                                iforest.Config
		contamination                      float64
		h                                  historyFlags
		quiet                              bool
	)
	cmd := &cobra.Command{
		Use:   "train (--since T --until T --profile P | --csv data.csv) --out model.cwm",
		Short: "Train a profile's behaviour model on verified history, or an isolation forest on a CSV",
		Long: `With --since, --until and --profile: train the profile's behaviour model on the
verified history of the period, exactly as the service trains a first model (the
same features, device baselines, forest settings from the detector configuration
and threshold calibrated to detector.false_alerts_per_1000_device_hours). The
artifact records the anchors its training data came from; the same history and
--seed give the same artifact hash. Register and promote it with 'models register'
and 'models promote'.

With --csv: train an isolation forest (extended when --extension > 0) on the numeric
columns of a CSV whose header names the features. A label column, if named, is left
out of the features. The artifact records the CSV's SHA-256 as its training data.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if h.since != "" || h.until != "" {
				if csvPath != "" {
					return usagef("--csv and --since/--until are two ways to train: pick one")
				}
				if out == "" || profile == "" {
					return usagef("--out and --profile are required")
				}
				h.profile = profile
				return trainOnHistory(cmd, g, &h, cfg, cmd.Flags().Changed("trees"), cmd.Flags().Changed("subsample"), cmd.Flags().Changed("extension"), cmd.Flags().Changed("seed"), out, quiet)
			}
			if csvPath == "" || out == "" {
				return usagef("--csv (or --since and --until) and --out are required")
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
	f.Float64Var(&contamination, "contamination", 0.01, "share of training rows assumed anomalous (sets the threshold; CSV training)")
	f.StringVar(&h.since, "since", "", "start of the verified history to train on, RFC 3339")
	f.StringVar(&h.until, "until", "", "end of the verified history to train on, RFC 3339")
	f.DurationVar(&h.leadIn, "lead-in", time.Hour, "history read before --since to build each device's feature context")
	f.StringSliceVar(&h.brokers, "brokers", nil, "Kafka brokers (default kafka.brokers, else the embedded broker of a running `chainwatch run`)")
	f.BoolVar(&quiet, "quiet", false, "no progress on stderr")
	return cmd
}

// trainOnHistory is `train --since --until --profile`: the detector's
// configuration, with the forest flags given on the command line in place
// of its settings.
func trainOnHistory(cmd *cobra.Command, g *globals, h *historyFlags, forest iforest.Config, trees, subsample, extension, seed bool, out string, quiet bool) error {
	vh, err := openVerifiedHistory(cmd, g, h)
	if err != nil {
		return err
	}
	defer vh.close()
	dc := vh.cfg.Detector
	dc.WindowSize = vh.cfg.Window.Size
	if trees {
		dc.Trees = forest.Trees
	}
	if subsample {
		dc.Subsample = forest.Subsample
	}
	if extension {
		dc.Extension = forest.Extension
	}
	if seed {
		dc.Seed = forest.Seed
	}
	report, finish := progress(cmd, "train "+h.profile, quiet)
	vh.req.Progress = report
	started := time.Now()
	m, _, rep, err := pipeline.TrainOnHistory(cmd.Context(), vh.req, dc)
	finish()
	for _, x := range rep.Excluded {
		fmt.Fprintf(cmd.ErrOrStderr(), "excluded: %s/%d offsets %d-%d %s %s\n", vh.topic, x.Partition, x.FirstOffset, x.LastOffset, x.Status, x.Detail)
	}
	if err != nil {
		return err
	}
	if err := m.Save(out); err != nil {
		return err
	}
	return writeJSON(cmd.OutOrStdout(), map[string]any{
		"model": out, "hash": m.Hash(), "profile": m.Profile, "algorithm": m.Algorithm,
		"windows": rep.Windows, "excluded_windows": rep.ExcludedWindows, "excluded_ranges": len(rep.Excluded),
		"training_anchors": len(rep.Anchors), "threshold": m.Calibration.Threshold, "metrics": m.Metrics,
		"budget_false_alerts_per_1000_device_hours": dc.WithDefaults().FalseAlertsPer1000DeviceHours,
		"seed": dc.Seed, "took": time.Since(started).Round(time.Millisecond).String(),
	})
}

func newEvaluateCommand(g *globals) *cobra.Command {
	var modelPath, csvPath, labelColumn, positive, plotPath string
	var k int
	var h historyFlags
	var baselineSpan time.Duration
	var quiet bool
	cmd := &cobra.Command{
		Use:   "evaluate --model model.cwm (--since T --until T [--ground-truth truth.csv] | --csv test.csv --label-column c)",
		Short: "Compare a candidate behaviour model with the active one on a labelled period of verified history, or score a labelled CSV",
		Long: `With --since and --until: judge the verified windows of the model's profile in the
period with the candidate and with the profile's active model, each as the service
would once it is promoted (each device's baseline starting from the model's profile
prior, or warmed on --baseline-span before the period; learning from normal windows;
incidents by the detector's rule), and print for each: ROC AUC,
average precision, precision at k, recall at the false-alert budget, false alerts
and false incidents per 1,000 device-hours. Labels come from --ground-truth or from
analysts' verdicts. --plot draws both ROC curves side by side in one PNG.

With --csv: score a labelled CSV with a model trained from a CSV.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if h.since != "" || h.until != "" {
				if csvPath != "" {
					return usagef("--csv and --since/--until are two ways to evaluate: pick one")
				}
				if modelPath == "" {
					return usagef("--model is required")
				}
				return evaluateOnHistory(cmd, g, &h, modelPath, plotPath, k, baselineSpan, quiet)
			}
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
	f.StringVar(&plotPath, "plot", "", "write the ROC curve(s) to this PNG")
	f.StringVar(&h.since, "since", "", "start of the labelled period, RFC 3339")
	f.StringVar(&h.until, "until", "", "end of the labelled period, RFC 3339")
	f.StringVar(&h.truth, "ground-truth", "", "ground-truth CSV of simulated data (device_id,profile,scenario,start,end); default: analysts' verdicts")
	f.DurationVar(&h.leadIn, "lead-in", time.Hour, "history read before the baseline span to build each device's feature context")
	f.DurationVar(&baselineSpan, "baseline-span", 0, "windows before --since that warm each device's baseline, not judged (default none: each device starts from the model's profile prior, as after a promotion)")
	f.StringSliceVar(&h.brokers, "brokers", nil, "Kafka brokers (default kafka.brokers, else the embedded broker of a running `chainwatch run`)")
	f.BoolVar(&quiet, "quiet", false, "no progress on stderr")
	return cmd
}
