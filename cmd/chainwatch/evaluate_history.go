package main

import (
	"cmp"
	"fmt"
	"slices"
	"time"

	"github.com/spf13/cobra"

	"github.com/chainwatch/chainwatch/models"
	"github.com/chainwatch/chainwatch/models/eval"
	"github.com/chainwatch/chainwatch/models/features"
	"github.com/chainwatch/chainwatch/pipeline"
	"github.com/chainwatch/chainwatch/pipeline/integrity"
)

// periodWindows are a profile's verified windows of a period, grouped per
// device in time order, with their labels, and the windows just before the
// period that warm each device's baseline.
type periodWindows struct {
	series   []pipeline.OfflineSeries
	labels   [][]pipeline.Label // per series, per window
	windows  int
	excluded []integrity.ReplayRange
	window   time.Duration
}

// readPeriod reads the period [since, until) of vh's profile, and the
// baseline span before it.
func readPeriod(cmd *cobra.Command, vh *verifiedHistory, lab *pipeline.Labels, baselineSpan time.Duration, quiet bool) (*periodWindows, error) {
	since := vh.req.Since
	req := vh.req
	req.Since = since.Add(-baselineSpan)
	report, finish := progress(cmd, "read", quiet)
	req.Progress = report
	byDevice := map[string]int{}
	pw := &periodWindows{window: vh.cfg.Window.Size}
	rep, err := pipeline.ReadHistory(cmd.Context(), req, func(w *pipeline.HistoryWindow) error {
		i, ok := byDevice[w.Device]
		if !ok {
			i = len(pw.series)
			byDevice[w.Device] = i
			pw.series = append(pw.series, pipeline.OfflineSeries{Device: w.Device})
			pw.labels = append(pw.labels, nil)
		}
		s := &pw.series[i]
		if w.Start.Before(since) {
			s.LeadIn = append(s.LeadIn, w.Vector)
			return nil
		}
		s.Vectors = append(s.Vectors, w.Vector)
		s.Index = append(s.Index, w.Start.UnixNano()/int64(pw.window))
		pw.labels[i] = append(pw.labels[i], lab.Of(w.Device, w.Start, w.End))
		pw.windows++
		return nil
	})
	finish()
	if err != nil {
		return nil, err
	}
	pw.excluded = rep.Excluded
	// Devices in id order, each in time order: the same history always
	// judges the same way.
	order := make([]int, len(pw.series))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int { return cmp.Compare(pw.series[a].Device, pw.series[b].Device) })
	series, labs := make([]pipeline.OfflineSeries, 0, len(order)), make([][]pipeline.Label, 0, len(order))
	for _, i := range order {
		if len(pw.series[i].Vectors) > 0 {
			series, labs = append(series, pw.series[i]), append(labs, pw.labels[i])
		}
	}
	pw.series, pw.labels = series, labs
	return pw, nil
}

// trainedBaselines are pipeline.TrainingSeeds for the period's profile,
// with progress; a model without them is said so.
func trainedBaselines(cmd *cobra.Command, vh *verifiedHistory, m *models.Model, quiet bool) map[string]models.DeviceBaseline {
	req := vh.req
	report, finish := progress(cmd, "training windows of "+m.Hash()[:12], quiet)
	req.Progress = report
	seeds, err := pipeline.TrainingSeeds(cmd.Context(), req, m)
	finish()
	if err != nil || seeds == nil {
		fmt.Fprintf(cmd.ErrOrStderr(), "chainwatch: model %s: no baselines from its training data (%v): its devices start from their lead-in\n", m.Hash()[:12], err)
	}
	return seeds
}

// evaluateOnHistory is `evaluate --model FILE --since --until`.
func evaluateOnHistory(cmd *cobra.Command, g *globals, h *historyFlags, modelPath, plotPath string, k int, baselineSpan time.Duration, quiet bool) error {
	cand, err := models.Load(modelPath)
	if err != nil {
		return err
	}
	if err := cand.CheckSchema(); err != nil {
		return fmt.Errorf("%s: %w", modelPath, err)
	}
	h.profile = cand.Profile
	vh, err := openVerifiedHistory(cmd, g, h)
	if err != nil {
		return err
	}
	defer vh.close()
	store, done := modelStoreFor(cmd, vh.cfg)
	defer done()
	store.Ledger = vh.ledger
	active, err := store.Active(cmd.Context(), cand.Profile)
	if err != nil {
		return fmt.Errorf("the active model to compare with: %w", err)
	}
	lab, err := pipeline.LoadLabels(cmd.Context(), vh.ledger, h.truth)
	if err != nil {
		return err
	}
	p, err := readPeriod(cmd, vh, lab, baselineSpan, quiet)
	if err != nil {
		return err
	}
	for _, x := range p.excluded {
		fmt.Fprintf(cmd.ErrOrStderr(), "excluded: %s/%d offsets %d-%d %s %s\n", vh.topic, x.Partition, x.FirstOffset, x.LastOffset, x.Status, x.Detail)
	}
	if p.windows == 0 {
		return fmt.Errorf("no verified window of %s between %s and %s", cand.Profile, h.since, h.until)
	}
	dc := vh.cfg.Detector
	dc.WindowSize = vh.cfg.Window.Size
	rule := pipeline.IncidentRule(dc)
	out := struct {
		Profile   string             `json:"profile"`
		Windows   int                `json:"windows"`
		Devices   int                `json:"devices"`
		Labelled  string             `json:"labels"`
		Models    []pipeline.Figures `json:"models"`
		Plot      string             `json:"plot,omitempty"`
		Excluded  int                `json:"excluded_ranges"`
		Candidate string             `json:"candidate"`
		Active    string             `json:"active,omitempty"`
	}{Profile: cand.Profile, Windows: p.windows, Devices: len(p.series), Excluded: len(p.excluded), Candidate: cand.Hash()}
	out.Labelled = "analysts' verdicts (unlabelled windows count as normal)"
	if h.truth != "" {
		out.Labelled = "ground truth " + h.truth
	}
	cf, err := pipeline.MeasureOffline(cand, "candidate", rule, p.series, p.labels, trainedBaselines(cmd, vh, cand, quiet), p.window, k)
	if err != nil {
		return err
	}
	out.Models = append(out.Models, cf)
	curves := []eval.Curve{cf.Curve()}
	if active != nil {
		out.Active = active.Hash()
		af, err := pipeline.MeasureOffline(active, "active", rule, p.series, p.labels, trainedBaselines(cmd, vh, active, quiet), p.window, k)
		if err != nil {
			return err
		}
		out.Models = append(out.Models, af)
		curves = append(curves, af.Curve())
	}
	if plotPath != "" {
		drawn := curves[:0]
		for _, c := range curves {
			if c.FPR != nil {
				drawn = append(drawn, c)
			}
		}
		if len(drawn) == 0 {
			fmt.Fprintln(cmd.ErrOrStderr(), "chainwatch: no ROC curve: the period's labels hold one class only")
		} else {
			if err := eval.PlotROCs(plotPath, drawn...); err != nil {
				return err
			}
			out.Plot = plotPath
		}
	}
	return writeJSON(cmd.OutOrStdout(), out)
}

// driftOnHistory is `models drift`: the PSI of every feature of a period's
// windows against a model's training distribution.
func driftOnHistory(cmd *cobra.Command, g *globals, h *historyFlags, modelPath string, quiet bool) error {
	if h.profile == "" && modelPath == "" {
		return usagef("--profile (its active model) or --model FILE is required")
	}
	var m *models.Model
	var err error
	if modelPath != "" {
		if m, err = models.Load(modelPath); err != nil {
			return err
		}
		h.profile = m.Profile
	}
	vh, err := openVerifiedHistory(cmd, g, h)
	if err != nil {
		return err
	}
	defer vh.close()
	if m == nil {
		store, done := modelStoreFor(cmd, vh.cfg)
		defer done()
		store.Ledger = vh.ledger
		if m, err = store.Active(cmd.Context(), h.profile); err != nil {
			return err
		}
		if m == nil {
			return fmt.Errorf("profile %s has no active model on the ledger", h.profile)
		}
	}
	var vs []features.Vector
	report, finish := progress(cmd, "drift", quiet)
	vh.req.Progress = report
	_, err = pipeline.ReadHistory(cmd.Context(), vh.req, func(w *pipeline.HistoryWindow) error {
		vs = append(vs, w.Vector)
		return nil
	})
	finish()
	if err != nil {
		return err
	}
	psi := m.Drift(vs)
	if psi == nil {
		return fmt.Errorf("no drift: %d windows in the period, or model %s carries no training distribution", len(vs), m.Hash())
	}
	type feature struct {
		Feature string  `json:"feature"`
		PSI     float64 `json:"psi"`
		Reading string  `json:"reading"`
	}
	rows := make([]feature, 0, len(psi))
	worst := 0.0
	for j, v := range psi {
		reading := "stable"
		switch {
		case v > 0.25:
			reading = "significant shift"
		case v > 0.1:
			reading = "moderate shift"
		}
		rows = append(rows, feature{features.Names[j], pipeline.Round3(v), reading})
		worst = max(worst, v)
	}
	slices.SortStableFunc(rows, func(a, b feature) int { return cmp.Compare(b.PSI, a.PSI) })
	return writeJSON(cmd.OutOrStdout(), map[string]any{
		"profile": m.Profile, "model": m.Hash(), "windows": len(vs), "max_psi": pipeline.Round3(worst), "features": rows,
	})
}
