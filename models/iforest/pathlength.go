package iforest

import "math"

// eulerGamma is the Euler–Mascheroni constant used in the harmonic-number
// approximation H(i) ≈ ln(i) + γ.
const eulerGamma = 0.5772156649015329

// AveragePathLength returns c(n), the average path length of an unsuccessful
// search in a binary search tree built from n points (Liu et al. 2008, eq. 1).
// It normalises path lengths in the score and stands in for the subtree a
// leaf would have grown had the height limit not stopped it.
func AveragePathLength(n int) float64 {
	switch {
	case n <= 1:
		return 0
	case n == 2:
		return 1
	}
	fn := float64(n)
	return 2*(math.Log(fn-1)+eulerGamma) - 2*(fn-1)/fn
}

// HeightLimit returns ⌈log₂ ψ⌉, the depth at which tree growth stops: below
// it, rows are already "ordinary" and refining their depth buys nothing.
func HeightLimit(psi int) int {
	if psi <= 1 {
		return 0
	}
	return int(math.Ceil(math.Log2(float64(psi))))
}

// scoreFromMeanPath maps a mean path length to s(x, ψ) = 2^(−E[h]/c(ψ)).
func scoreFromMeanPath(meanPath, cPsi float64) float64 {
	if cPsi == 0 {
		return 0.5
	}
	return math.Exp2(-meanPath / cPsi)
}
