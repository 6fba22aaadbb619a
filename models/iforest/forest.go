package iforest

import (
	"fmt"
	"math/rand/v2"
	"sync"
)

// Forest is a trained isolation forest. It is immutable after Fit and safe
// for concurrent scoring.
type Forest struct {
	dims      int
	psi       int
	extension int
	cPsi      float64

	roots   []int32   // index of each tree's root in nodes
	nodes   []node    // all trees, flattened
	normals []float64 // hyperplane normals, dims each (extended forests only)
	center  []float64 // per-feature training mean, the origin for hyperplane credit in Explain

	// The scoring layout of axis-parallel forests (see prepare).
	steps    []step
	leafPath []float64
	depth    int
}

// Features is the number of features the forest was trained on.
func (f *Forest) Features() int { return f.dims }

// Trees is the number of trees.
func (f *Forest) Trees() int { return len(f.roots) }

// Subsample is the ψ each tree was grown on.
func (f *Forest) Subsample() int { return f.psi }

// Extension is the extension level (0 for axis-parallel trees).
func (f *Forest) Extension() int { return f.extension }

// Nodes is the total number of nodes in all trees.
func (f *Forest) Nodes() int { return len(f.nodes) }

// Fit grows a forest on n rows of data laid out row-major, features wide.
// Trees are grown in parallel; tree i draws from a PCG stream keyed by
// (cfg.Seed, i), so the result does not depend on the number of workers.
func Fit(data []float64, features int, cfg Config) (*Forest, error) {
	if err := cfg.Validate(features); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	if len(data)%features != 0 {
		return nil, fmt.Errorf("iforest: data length %d is not a multiple of %d features", len(data), features)
	}
	n := len(data) / features
	if n < 2 {
		return nil, fmt.Errorf("iforest: need at least 2 rows, got %d", n)
	}
	psi := min(cfg.Subsample, n)

	type grown struct {
		nodes   []node
		normals []float64
	}
	trees := make([]grown, cfg.Trees)
	var wg sync.WaitGroup
	next := make(chan int, cfg.Trees)
	for t := range cfg.Trees {
		next <- t
	}
	close(next)
	for range min(cfg.Workers, cfg.Trees) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var b *treeBuilder
			sample := make([]int, psi)
			var seen sampleSet
			for t := range next {
				rng := rand.New(rand.NewPCG(cfg.Seed, uint64(t)))
				if b == nil {
					b = newTreeBuilder(features, psi, cfg.Extension, rng)
				}
				b.rng = rng
				sampleWithoutReplacement(sample, n, rng, &seen)
				nodes, normals := b.grow(data, sample)
				trees[t] = grown{nodes, normals}
			}
		}()
	}
	wg.Wait()

	f := &Forest{dims: features, psi: psi, extension: cfg.Extension, cPsi: AveragePathLength(psi)}
	f.center = make([]float64, features)
	for r := range n {
		for j, v := range data[r*features : (r+1)*features] {
			f.center[j] += v
		}
	}
	for j := range f.center {
		f.center[j] /= float64(n)
	}
	total, totalNormals := 0, 0
	for _, t := range trees {
		total += len(t.nodes)
		totalNormals += len(t.normals)
	}
	f.roots = make([]int32, 0, cfg.Trees)
	f.nodes = make([]node, 0, total)
	if totalNormals > 0 {
		f.normals = make([]float64, 0, totalNormals)
	}
	for _, t := range trees {
		base := int32(len(f.nodes))
		normalBase := int32(len(f.normals) / features)
		f.roots = append(f.roots, base)
		for _, nd := range t.nodes {
			if nd.feature != leafFeature {
				nd.left += base
				if cfg.Extension > 0 {
					nd.feature += normalBase
				}
			}
			f.nodes = append(f.nodes, nd)
		}
		f.normals = append(f.normals, t.normals...)
	}
	f.prepare()
	return f, nil
}

// sampleSet is an open-addressed set of row indices for Floyd's sampling,
// reused across trees so that sampling ψ of n rows costs O(ψ), not O(n).
type sampleSet struct{ slots []int }

func (s *sampleSet) reset(k int) {
	size := 1
	for size < 2*k {
		size <<= 1
	}
	if cap(s.slots) < size {
		s.slots = make([]int, size)
	}
	s.slots = s.slots[:size]
	for i := range s.slots {
		s.slots[i] = -1
	}
}

// insert adds v and reports whether it was absent.
func (s *sampleSet) insert(v int) bool {
	mask := len(s.slots) - 1
	for i := (v * 0x9E3779B1) & mask; ; i = (i + 1) & mask {
		switch s.slots[i] {
		case v:
			return false
		case -1:
			s.slots[i] = v
			return true
		}
	}
}

// sampleWithoutReplacement fills dst with len(dst) distinct indices in [0, n)
// by Floyd's algorithm (Bentley & Floyd, CACM 30(9), 1987).
func sampleWithoutReplacement(dst []int, n int, rng *rand.Rand, seen *sampleSet) {
	k := len(dst)
	if k == n {
		for i := range dst {
			dst[i] = i
		}
		return
	}
	seen.reset(k)
	i := 0
	for j := n - k; j < n; j++ {
		t := rng.IntN(j + 1)
		if !seen.insert(t) {
			t = j
			seen.insert(t)
		}
		dst[i] = t
		i++
	}
}
