package eval

import (
	"fmt"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
)

// PlotROC draws the ROC curve with the chance diagonal and writes it as a
// PNG (the extension of path picks the format gonum/plot writes).
func PlotROC(path, title string, fpr, tpr []float64, auc float64) error {
	p := plot.New()
	p.Title.Text = fmt.Sprintf("%s (AUC %.3f)", title, auc)
	p.X.Label.Text = "false positive rate"
	p.Y.Label.Text = "true positive rate"
	p.X.Min, p.X.Max, p.Y.Min, p.Y.Max = 0, 1, 0, 1
	pts := make(plotter.XYs, len(fpr))
	for i := range fpr {
		pts[i].X, pts[i].Y = fpr[i], tpr[i]
	}
	curve, err := plotter.NewLine(pts)
	if err != nil {
		return fmt.Errorf("plot: %w", err)
	}
	curve.Width = vg.Points(2)
	chance, err := plotter.NewLine(plotter.XYs{{X: 0, Y: 0}, {X: 1, Y: 1}})
	if err != nil {
		return fmt.Errorf("plot: %w", err)
	}
	chance.Dashes = []vg.Length{vg.Points(4), vg.Points(4)}
	p.Add(plotter.NewGrid(), chance, curve)
	p.Legend.Add("model", curve)
	p.Legend.Add("chance", chance)
	p.Legend.Top, p.Legend.Left = false, false
	p.Legend.XOffs, p.Legend.YOffs = -vg.Points(8), vg.Points(8)
	if err := p.Save(5*vg.Inch, 5*vg.Inch, path); err != nil {
		return fmt.Errorf("plot: save %s: %w", path, err)
	}
	return nil
}
