package eval

import (
	"errors"
	"fmt"
	"os"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// Curve is one model's ROC curve, as ROC returns it, with its AUC.
type Curve struct {
	Title    string
	FPR, TPR []float64
	AUC      float64
}

// PlotROC draws the ROC curve with the chance diagonal and writes it as a
// PNG (the extension of path picks the format gonum/plot writes).
func PlotROC(path, title string, fpr, tpr []float64, auc float64) error {
	return PlotROCs(path, Curve{Title: title, FPR: fpr, TPR: tpr, AUC: auc})
}

// PlotROCs draws each curve in a panel of its own, side by side on one
// image, each with the chance diagonal: how `chainwatch evaluate` shows a
// candidate model next to the active one on the same windows.
func PlotROCs(path string, curves ...Curve) error {
	if len(curves) == 0 {
		return errors.New("plot: no curve")
	}
	panels := make([][]*plot.Plot, 1)
	for _, c := range curves {
		p, err := rocPanel(c)
		if err != nil {
			return err
		}
		panels[0] = append(panels[0], p)
	}
	const side = 5 * vg.Inch
	width := vg.Length(len(curves)) * side
	img := vgimg.New(width, side)
	dc := draw.New(img)
	tiles := draw.Tiles{Rows: 1, Cols: len(curves), PadX: vg.Points(12), PadY: vg.Points(6), PadLeft: vg.Points(6), PadRight: vg.Points(6)}
	canvases := plot.Align(panels, tiles, dc)
	for i, p := range panels[0] {
		p.Draw(canvases[0][i])
	}
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("plot: %w", err)
	}
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(f); err != nil {
		f.Close()
		return fmt.Errorf("plot: save %s: %w", path, err)
	}
	return f.Close()
}

func rocPanel(c Curve) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = fmt.Sprintf("%s (AUC %.3f)", c.Title, c.AUC)
	p.X.Label.Text = "false positive rate"
	p.Y.Label.Text = "true positive rate"
	p.X.Min, p.X.Max, p.Y.Min, p.Y.Max = 0, 1, 0, 1
	pts := make(plotter.XYs, len(c.FPR))
	for i := range c.FPR {
		pts[i].X, pts[i].Y = c.FPR[i], c.TPR[i]
	}
	curve, err := plotter.NewLine(pts)
	if err != nil {
		return nil, fmt.Errorf("plot: %w", err)
	}
	curve.Width = vg.Points(2)
	chance, err := plotter.NewLine(plotter.XYs{{X: 0, Y: 0}, {X: 1, Y: 1}})
	if err != nil {
		return nil, fmt.Errorf("plot: %w", err)
	}
	chance.Dashes = []vg.Length{vg.Points(4), vg.Points(4)}
	p.Add(plotter.NewGrid(), chance, curve)
	p.Legend.Add("model", curve)
	p.Legend.Add("chance", chance)
	p.Legend.Top, p.Legend.Left = false, false
	p.Legend.XOffs, p.Legend.YOffs = -vg.Points(8), vg.Points(8)
	return p, nil
}
