package pipeline

import "testing"

// The promotion rule on known figures: more false incidents, or a recall
// lower by more than the tolerance, is worse; ties are not.
func TestRetrainPromotionRule(t *testing.T) {
	r := func(x float64) *float64 { return &x }
	for _, c := range []struct {
		name         string
		cand, active Figures
		want         bool
	}{
		{"fewer false incidents", Figures{FalseIncidents: 0}, Figures{FalseIncidents: 4}, true},
		{"as many", Figures{FalseIncidents: 2}, Figures{FalseIncidents: 2}, true},
		{"more false incidents", Figures{FalseIncidents: 3}, Figures{FalseIncidents: 2}, false},
		{"recall within tolerance", Figures{Recall: r(0.86)}, Figures{Recall: r(0.90)}, true},
		{"recall lower than tolerance", Figures{Recall: r(0.80)}, Figures{Recall: r(0.90)}, false},
		{"no verdicts: recall unknown", Figures{}, Figures{Recall: r(0.9)}, true},
	} {
		if got, why := notWorse(c.cand, c.active, 0.05); got != c.want {
			t.Errorf("%s: promoted %v (%s), want %v", c.name, got, why, c.want)
		}
	}
}
