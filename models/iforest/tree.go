package iforest

import (
	"math"
	"math/rand/v2"
)

// leafFeature marks a node as a leaf in node.feature.
const leafFeature = -1

// node is one flattened tree node, 16 bytes so four share a cache line.
//
// For a split node, a row goes to child left when its value (axis-parallel:
// x[feature]; hyperplane: the dot product of x with normal number feature) is
// below value, and to left+1 otherwise. For a leaf (feature == leafFeature),
// value is the finished path-length contribution depth + c(size).
type node struct {
	value   float64
	feature int32
	left    int32
}

// treeBuilder grows one tree over a private copy of its subsample. Its
// buffers are reused for every node, so growing a tree allocates only the
// node and normal slices it returns.
type treeBuilder struct {
	rng       *rand.Rand
	dims      int
	extension int
	limit     int

	rows    []float64 // subsample, row-major ψ×dims
	order   []int32   // permutation of subsample rows, partitioned in place
	proj    []float64 // per-row projection on the current hyperplane
	featIdx []int     // scratch permutation of feature indices
	lo, hi  []float64 // scratch bounding box

	nodes   []node
	normals []float64
}

func newTreeBuilder(dims, psi, extension int, rng *rand.Rand) *treeBuilder {
	b := &treeBuilder{
		rng:       rng,
		dims:      dims,
		extension: extension,
		limit:     HeightLimit(psi),
		rows:      make([]float64, psi*dims),
		order:     make([]int32, psi),
		featIdx:   make([]int, dims),
		lo:        make([]float64, dims),
		hi:        make([]float64, dims),
	}
	if extension > 0 {
		b.proj = make([]float64, psi)
	}
	return b
}

// grow builds a tree over the n = len(sample) rows of data (row-major,
// b.dims wide) named by sample, and returns its nodes with child indices
// relative to the tree's own root at 0.
func (b *treeBuilder) grow(data []float64, sample []int) ([]node, []float64) {
	d := b.dims
	for i, r := range sample {
		copy(b.rows[i*d:(i+1)*d], data[r*d:(r+1)*d])
		b.order[i] = int32(i)
	}
	b.nodes = make([]node, 1, 2*len(sample))
	b.normals = nil
	b.split(0, 0, len(sample), 0)
	return b.nodes, b.normals
}

// split turns node at into a subtree over order[lo:hi] at the given depth.
func (b *treeBuilder) split(at, lo, hi, depth int) {
	n := hi - lo
	if depth >= b.limit || n <= 1 {
		b.nodes[at] = node{value: float64(depth) + AveragePathLength(n), feature: leafFeature}
		return
	}
	var mid int
	var ok bool
	if b.extension == 0 {
		mid, ok = b.splitAxis(at, lo, hi)
	} else {
		mid, ok = b.splitHyperplane(at, lo, hi)
	}
	if !ok { // every row identical: nothing left to isolate
		b.nodes[at] = node{value: float64(depth) + AveragePathLength(n), feature: leafFeature}
		return
	}
	left := len(b.nodes)
	b.nodes = append(b.nodes, node{}, node{})
	b.nodes[at].left = int32(left)
	b.split(left, lo, mid, depth+1)
	b.split(left+1, mid, hi, depth+1)
}

// splitAxis draws features in random order until one varies within the node,
// splits at a uniform value between its minimum and maximum, partitions
// order[lo:hi] and returns the boundary. It reports false when no feature
// varies.
func (b *treeBuilder) splitAxis(at, lo, hi int) (int, bool) {
	d := b.dims
	for i := range b.featIdx {
		b.featIdx[i] = i
	}
	for remaining := d; remaining > 0; remaining-- {
		j := b.rng.IntN(remaining)
		f := b.featIdx[j]
		b.featIdx[j] = b.featIdx[remaining-1]

		minV, maxV := math.Inf(1), math.Inf(-1)
		for _, r := range b.order[lo:hi] {
			v := b.rows[int(r)*d+f]
			minV = min(minV, v)
			maxV = max(maxV, v)
		}
		if !(maxV > minV) {
			continue
		}
		p := minV + b.rng.Float64()*(maxV-minV)
		if p <= minV { // keep both children non-empty despite rounding
			p = math.Nextafter(minV, maxV)
		}
		mid := lo
		for k := lo; k < hi; k++ {
			if r := b.order[k]; b.rows[int(r)*d+f] < p {
				b.order[k], b.order[mid] = b.order[mid], r
				mid++
			}
		}
		b.nodes[at] = node{value: p, feature: int32(f)}
		return mid, true
	}
	return 0, false
}

// splitHyperplane draws a random normal with extension+1 non-zero
// coordinates and an intercept uniform in the node's bounding box, then
// partitions order[lo:hi] by the side of the hyperplane each row falls on.
func (b *treeBuilder) splitHyperplane(at, lo, hi int) (int, bool) {
	d := b.dims
	for f := 0; f < d; f++ {
		b.lo[f], b.hi[f] = math.Inf(1), math.Inf(-1)
	}
	for _, r := range b.order[lo:hi] {
		row := b.rows[int(r)*d : int(r)*d+d]
		for f, v := range row {
			b.lo[f] = min(b.lo[f], v)
			b.hi[f] = max(b.hi[f], v)
		}
	}
	varies := false
	for f := 0; f < d; f++ {
		if b.hi[f] > b.lo[f] {
			varies = true
			break
		}
	}
	if !varies {
		return 0, false
	}

	normalAt := len(b.normals)
	b.normals = append(b.normals, make([]float64, d)...)
	normal := b.normals[normalAt : normalAt+d]
	for f := range normal {
		normal[f] = b.rng.NormFloat64()
	}
	// Zero d−ext−1 coordinates chosen at random (Hariri et al., Alg. 2).
	for i := range b.featIdx {
		b.featIdx[i] = i
	}
	for k := 0; k < d-b.extension-1; k++ {
		j := k + b.rng.IntN(d-k)
		b.featIdx[k], b.featIdx[j] = b.featIdx[j], b.featIdx[k]
		normal[b.featIdx[k]] = 0
	}
	threshold := 0.0
	for f, w := range normal {
		if w != 0 {
			threshold += w * (b.lo[f] + b.rng.Float64()*(b.hi[f]-b.lo[f]))
		}
	}
	mid := lo
	for k := lo; k < hi; k++ {
		r := b.order[k]
		if dot(normal, b.rows[int(r)*d:int(r)*d+d]) < threshold {
			b.order[k], b.order[mid] = b.order[mid], r
			mid++
		}
	}
	b.nodes[at] = node{value: threshold, feature: int32(normalAt / d)}
	return mid, true
}

// dot is the plain loop: with d ≈ 10–20 it beats an assembly kernel's call
// overhead and keeps the hot scoring loop inlinable.
func dot(a, b []float64) float64 {
	b = b[:len(a)]
	s := 0.0
	for i, v := range a {
		s += v * b[i]
	}
	return s
}
