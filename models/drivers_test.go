package models

import (
	"math"
	"testing"

	"github.com/chainwatch/chainwatch/models/features"
)

// TestDriversWeighWindowsByLevel checks Drivers against values worked by
// hand: three windows at levels 2, 6 and 2, the first all new hosts, the
// second all bytes, the third half each, give bytes 7/10 of the run and
// new hosts 3/10, each shown by the window where it stood out most; a
// window raised with no suspicious deviation only dilutes them.
func TestDriversWeighWindowsByLevel(t *testing.T) {
	var d Drivers
	if got := d.Top(3); got != nil {
		t.Fatalf("no window counted: Top = %v, want nil", got)
	}
	var b DeviceBaseline // mean 0: a baseline of 0 in every feature's units
	window := func(newDst, bytes, zNew, zBytes float64) (features.Vector, []float64) {
		var v features.Vector
		v[features.NewDst], v[features.BytesOut] = newDst, bytes
		r := make([]float64, ResidualDims)
		r[features.NewDst], r[features.BytesOut] = zNew, zBytes
		return v, r
	}
	v, r := window(1, 400, 3, -1)
	d.Add(&b, &v, r, 2)
	v, r = window(0, 5000, 0, 4)
	d.Add(&b, &v, r, 6)
	v, r = window(2, 900, 1, 1)
	d.Add(&b, &v, r, 2)
	v, r = window(0, 0, 0, 0)
	d.Add(&b, &v, r, 0) // a window at level 0 counts for nothing
	check := func(got []Contribution, want []Contribution) {
		t.Helper()
		if len(got) != len(want) {
			t.Fatalf("Top = %+v, want %+v", got, want)
		}
		for i := range want {
			if got[i].Feature != want[i].Feature || got[i].Value != want[i].Value || got[i].Baseline != want[i].Baseline ||
				math.Abs(got[i].Share-want[i].Share) > 1e-6 {
				t.Fatalf("Top = %+v, want %+v", got, want)
			}
		}
	}
	check(d.Top(5), []Contribution{{Feature: "bytes_out", Value: 5000, Share: 0.7}, {Feature: "new_dst", Value: 1, Share: 0.3}})
	check(d.Top(1), []Contribution{{Feature: "bytes_out", Value: 5000, Share: 0.7}})
	v, r = window(0, 0, -2, -2) // raised by the forest alone
	d.Add(&b, &v, r, 3)
	check(d.Top(5), []Contribution{{Feature: "bytes_out", Value: 5000, Share: 7.0 / 13}, {Feature: "new_dst", Value: 1, Share: 3.0 / 13}})
}
