// Package iforest implements the isolation forest of Liu, Ting & Zhou (2008)
// and the extended isolation forest of Hariri, Kind & Brunner (2019).
//
// # Method
//
// Each tree is grown on a subsample of ψ rows drawn without replacement. A
// node splits its rows on a random feature q at a value p drawn uniformly
// between that feature's minimum and maximum in the node (extended variant:
// on a random hyperplane through a point p drawn uniformly in the node's
// bounding box, with normal n ~ N(0, I) of which d−ext−1 coordinates are set
// to zero). Growth stops at height limit l = ⌈log₂ ψ⌉, at a single row, or
// when every row in the node is identical.
//
// The path length h(x) of a row in one tree is the number of edges from the
// root to the leaf it lands in, plus c(size) for the rows that leaf still
// held when growth stopped, where
//
//	c(n) = 2H(n−1) − 2(n−1)/n,  H(i) ≈ ln(i) + γ  (γ = 0.5772156649…)
//
// is the mean unsuccessful-search path length in a binary search tree of n
// nodes (Liu et al., eq. 1; c(2) = 1, c(n ≤ 1) = 0). The anomaly score is
//
//	s(x, ψ) = 2^(−E[h(x)] / c(ψ))
//
// with E[h(x)] the mean over trees: s → 1 for rows isolated near the root,
// s ≈ 0.5 or below for ordinary rows.
//
// # Layout
//
// Trees are flattened into one contiguous slice of 16-byte nodes shared by
// the whole forest; a leaf stores its finished path-length contribution
// (depth + c(size)), so scoring is a pointer-free walk with one comparison
// per level and one addition per tree. Batch scoring walks a block of rows
// through one tree before moving to the next, keeping that tree hot in cache,
// and allocates nothing per row.
//
// # References
//
//   - F. T. Liu, K. M. Ting, Z.-H. Zhou. Isolation Forest. ICDM 2008.
//   - S. Hariri, M. C. Kind, R. J. Brunner. Extended Isolation Forest.
//     IEEE TKDE 33(4), 2019.
//   - M. Carletti, M. Terzi, G. A. Susto. Interpretable Anomaly Detection
//     with DIFFI: Depth-based Feature Importance for the Isolation Forest.
//     2020 (arXiv:2007.11117) — the idea behind Forest.Explain.
package iforest
