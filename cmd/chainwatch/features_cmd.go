package main

import (
	"fmt"
	"os"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/chainwatch/chainwatch/ledgerclient/contract"
	"github.com/chainwatch/chainwatch/pipeline"
)

// historyFlags select a period of verified history; export, train,
// evaluate and drift share them.
type historyFlags struct {
	since, until    string
	profile, device string
	truth           string
	leadIn          time.Duration
	brokers         []string
}

func (h *historyFlags) register(cmd *cobra.Command, withTruth bool) {
	f := cmd.Flags()
	f.StringVar(&h.since, "since", "", "start of the period, RFC 3339 (windows starting at or after it)")
	f.StringVar(&h.until, "until", "", "end of the period, RFC 3339 (windows ending at or before it)")
	f.StringVar(&h.profile, "profile", "", "only this device profile")
	f.DurationVar(&h.leadIn, "lead-in", time.Hour, "history read before --since to build each device's feature context, not returned")
	f.StringSliceVar(&h.brokers, "brokers", nil, "Kafka brokers (default kafka.brokers, else the embedded broker of a running `chainwatch run`)")
	if withTruth {
		f.StringVar(&h.truth, "ground-truth", "", "ground-truth CSV of simulated data (device_id,profile,scenario,start,end): labels every window; without it, analysts' verdicts label the windows of the alerts they judged")
	}
}

// period parses --since and --until.
func (h *historyFlags) period() (time.Time, time.Time, error) {
	if h.since == "" || h.until == "" {
		return time.Time{}, time.Time{}, usagef("--since and --until are required")
	}
	since, err := time.Parse(time.RFC3339, h.since)
	if err != nil {
		return time.Time{}, time.Time{}, usagef("--since: %q is not RFC 3339 (e.g. 2026-11-20T00:00:00Z)", h.since)
	}
	until, err := time.Parse(time.RFC3339, h.until)
	if err != nil {
		return time.Time{}, time.Time{}, usagef("--until: %q is not RFC 3339 (e.g. 2026-11-21T00:00:00Z)", h.until)
	}
	if !until.After(since) {
		return time.Time{}, time.Time{}, usagef("--until (%s) must be after --since (%s)", h.until, h.since)
	}
	return since, until, nil
}

// verifiedHistory is an open period of history: the request to read it and
// what reading it needs closed afterwards.
type verifiedHistory struct {
	*historyAccess
	req pipeline.HistoryRequest
}

// openVerifiedHistory connects to Kafka and the ledger (as analyst: reading
// history creates nothing) and loads the devices' certificates.
func openVerifiedHistory(cmd *cobra.Command, g *globals, h *historyFlags) (*verifiedHistory, error) {
	since, until, err := h.period()
	if err != nil {
		return nil, err
	}
	acc, err := openHistory(cmd, g, h.brokers, "", contract.RoleAnalyst)
	if err != nil {
		return nil, err
	}
	reg, err := pipeline.SnapshotRegistry(cmd.Context(), acc.ledger)
	if err != nil {
		acc.close()
		return nil, err
	}
	lead := h.leadIn
	if lead == 0 {
		lead = -1 // the flag's zero means none
	}
	return &verifiedHistory{historyAccess: acc, req: pipeline.HistoryRequest{
		Kafka: acc.kafka, Ledger: acc.ledger, Registry: reg, Topic: acc.topic, LeafTopic: acc.cfg.Topics.Leaves,
		Since: since, Until: until, LeadIn: lead, Profile: h.profile, Device: h.device,
		Window: acc.cfg.Window,
	}}, nil
}

// progress reports records read: a bar on a terminal, a line every tenth
// otherwise (logs, CI), nothing when quiet.
func progress(cmd *cobra.Command, what string, quiet bool) (func(read, total int64), func()) {
	if quiet {
		return nil, func() {}
	}
	out := cmd.ErrOrStderr()
	if f, ok := out.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		var bar *progressbar.ProgressBar
		return func(read, total int64) {
				if bar == nil {
					bar = progressbar.NewOptions64(total, progressbar.OptionSetWriter(out), progressbar.OptionSetDescription(what),
						progressbar.OptionShowCount(), progressbar.OptionShowIts(), progressbar.OptionSetItsString("records"),
						progressbar.OptionThrottle(100*time.Millisecond), progressbar.OptionClearOnFinish())
				}
				_ = bar.Set64(read)
			}, func() {
				if bar != nil {
					_ = bar.Finish()
				}
			}
	}
	next := int64(-1)
	return func(read, total int64) {
		if total <= 0 || read < next {
			return
		}
		fmt.Fprintf(out, "%s: %d of %d records (%d%%)\n", what, read, total, read*100/total)
		next = read + max(total/10, 1)
	}, func() {}
}

func newFeaturesCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "features", Short: "Export what the service saw: device windows of verified history as features"}
	var (
		h     historyFlags
		out   string
		quiet bool
	)
	export := &cobra.Command{
		Use:   "export --since T --until T --out FILE.parquet|FILE.csv",
		Short: "Replay verified history through the service's feature code: one row per device window, with anchors and labels",
		Long: `Re-reads the flows topic over a period, proves every record against its anchor
on the ledger, and runs the records through exactly the decoding, identity and
windowing code of the detection stage. Writes one row per device window: device,
profile, window start and end, partition and offsets (of the window's records on
its lowest partition, when a producer that keys nothing spread them over several
and they were joined into one window, as the service joins them), the ids of the
anchors that hold all its records, a label (1 anomalous, 0 normal, empty when unknown) and the
feature schema's columns. Windows with a record in a range that does not verify
are left out, and the ranges listed on stderr. Labels come from --ground-truth
(simulated data) or from analysts' verdicts on the ledger. The same history
always gives byte-identical files.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if out == "" {
				return usagef("--out is required")
			}
			vh, err := openVerifiedHistory(cmd, g, &h)
			if err != nil {
				return err
			}
			defer vh.close()
			lab, err := pipeline.LoadLabels(cmd.Context(), vh.ledger, h.truth)
			if err != nil {
				return err
			}
			tmp := out + ".partial"
			table, err := newTableWriter(out, tmp)
			if err != nil {
				return err
			}
			defer os.Remove(tmp)
			report, finish := progress(cmd, "export", quiet)
			vh.req.Progress = report
			labelled := 0
			rep, err := pipeline.ReadHistory(cmd.Context(), vh.req, func(w *pipeline.HistoryWindow) error {
				l := lab.Of(w.Device, w.Start, w.End)
				if l.OK {
					labelled++
				}
				return table.Write(windowRow{w: w, label: l})
			})
			finish()
			if err != nil {
				table.Close()
				return err
			}
			if err := table.Close(); err != nil {
				return err
			}
			if err := os.Rename(tmp, out); err != nil {
				return err
			}
			for _, x := range rep.Excluded {
				fmt.Fprintf(cmd.ErrOrStderr(), "excluded: %s/%d offsets %d-%d %s %s\n", vh.topic, x.Partition, x.FirstOffset, x.LastOffset, x.Status, x.Detail)
			}
			return writeJSON(cmd.OutOrStdout(), map[string]any{
				"out": out, "windows": rep.Windows, "labelled": labelled, "records_read": rep.Records,
				"excluded_windows": rep.ExcludedWindows, "excluded_ranges": len(rep.Excluded), "anchors": len(rep.Anchors),
			})
		},
	}
	h.register(export, true)
	export.Flags().StringVar(&h.device, "device", "", "only this device")
	export.Flags().StringVar(&out, "out", "", "file to write: .parquet or .csv")
	export.Flags().BoolVar(&quiet, "quiet", false, "no progress on stderr")
	cmd.AddCommand(export)
	return cmd
}
