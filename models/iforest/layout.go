package iforest

import "math"

// step is a node in the scoring layout of an axis-parallel forest. A split
// sends a row to next when x[feature] < threshold and to next+1 otherwise.
// A leaf is a self-loop: its threshold is NaN, against which every
// comparison is false, and next is its own index. So every row takes exactly
// depth steps through every tree, with no data-dependent branch.
type step struct {
	threshold float64
	feature   int32
	next      int32
}

// lanes is how many rows walk one tree in lockstep. Their load chains are
// independent, so the CPU overlaps them instead of waiting on each level's
// load in turn; 8 keeps the lane state in registers.
const lanes = 8

// prepare derives the scoring layout from the canonical nodes.
func (f *Forest) prepare() {
	f.steps, f.leafPath, f.depth = nil, nil, 0
	if f.extension != 0 {
		return // hyperplane trees walk the canonical nodes
	}
	f.steps = make([]step, len(f.nodes))
	f.leafPath = make([]float64, len(f.nodes))
	for i, nd := range f.nodes {
		if nd.feature == leafFeature {
			f.steps[i] = step{threshold: math.NaN(), feature: 0, next: int32(i)}
			f.leafPath[i] = nd.value
			continue
		}
		f.steps[i] = step{threshold: nd.value, feature: nd.feature, next: nd.left}
	}
	for _, root := range f.roots {
		f.depth = max(f.depth, f.treeDepth(root))
	}
}

func (f *Forest) treeDepth(i int32) int {
	nd := f.nodes[i]
	if nd.feature == leafFeature {
		return 0
	}
	return 1 + max(f.treeDepth(nd.left), f.treeDepth(nd.left+1))
}

// scoreAxisBlock adds, for each row of a block (row-major, d wide), its path
// length in every tree to sums.
func (f *Forest) scoreAxisBlock(sums, block []float64) {
	d := f.dims
	steps, leafPath, depth := f.steps, f.leafPath, f.depth
	n := len(sums)
	for _, root := range f.roots {
		k := 0
		for ; k+lanes <= n; k += lanes {
			rows := block[k*d : (k+lanes)*d]
			var idx [lanes]int32
			for j := range idx {
				idx[j] = root
			}
			for range depth {
				for j := range lanes {
					s := &steps[idx[j]]
					next := s.next
					if rows[j*d+int(s.feature)] >= s.threshold {
						next++
					}
					idx[j] = next
				}
			}
			for j := range lanes {
				sums[k+j] += leafPath[idx[j]]
			}
		}
		for ; k < n; k++ { // the block's tail, one row at a time
			row := block[k*d : (k+1)*d]
			i := root
			for range depth {
				s := &steps[i]
				next := s.next
				if row[s.feature] >= s.threshold {
					next++
				}
				i = next
			}
			sums[k] += leafPath[i]
		}
	}
}
