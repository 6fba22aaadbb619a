package iforest

import (
	"fmt"
	"sync"
)

// scoreBlock is the number of rows walked through one tree before moving to
// the next: enough to amortise loading the tree, few enough that the rows
// stay in L1.
const scoreBlock = 64

// Score returns s(x, ψ) for one row.
func (f *Forest) Score(x []float64) float64 {
	return scoreFromMeanPath(f.PathLength(x), f.cPsi)
}

// PathLength returns E[h(x)], the row's path length averaged over all trees.
func (f *Forest) PathLength(x []float64) float64 {
	x = x[:f.dims]
	sum := 0.0
	if f.steps != nil {
		// The branch-free layout: depth steps per tree, no mispredictions.
		steps, leafPath := f.steps, f.leafPath
		for _, root := range f.roots {
			i := root
			for range f.depth {
				s := &steps[i]
				next := s.next
				if x[s.feature] >= s.threshold {
					next++
				}
				i = next
			}
			sum += leafPath[i]
		}
		return sum / float64(len(f.roots))
	}
	for _, root := range f.roots {
		sum += f.nodes[f.leaf(root, x)].value
	}
	return sum / float64(len(f.roots))
}

// leaf walks one tree from root and returns the index of the leaf x lands in.
func (f *Forest) leaf(root int32, x []float64) int32 {
	nodes := f.nodes
	i := root
	if f.extension == 0 {
		for {
			nd := &nodes[i]
			if nd.feature < 0 {
				return i
			}
			i = nd.left
			if x[nd.feature] >= nd.value {
				i++
			}
		}
	}
	d := f.dims
	for {
		nd := &nodes[i]
		if nd.feature < 0 {
			return i
		}
		off := int(nd.feature) * d
		proj := dot(f.normals[off:off+d], x)
		i = nd.left
		if proj >= nd.value {
			i++
		}
	}
}

// ScoreBatch writes the score of each of the len(dst) rows of data
// (row-major, Features() wide) into dst. It allocates nothing.
func (f *Forest) ScoreBatch(dst, data []float64) error {
	if err := f.checkBatch(dst, data); err != nil {
		return err
	}
	f.scoreRange(dst, data)
	return nil
}

// ScoreBatchParallel is ScoreBatch split over workers goroutines, each taking
// a contiguous run of rows.
func (f *Forest) ScoreBatchParallel(dst, data []float64, workers int) error {
	if err := f.checkBatch(dst, data); err != nil {
		return err
	}
	n := len(dst)
	if workers <= 1 || n < 2*scoreBlock {
		f.scoreRange(dst, data)
		return nil
	}
	chunk := (n + workers - 1) / workers
	chunk = (chunk + scoreBlock - 1) / scoreBlock * scoreBlock
	var wg sync.WaitGroup
	for lo := 0; lo < n; lo += chunk {
		hi := min(lo+chunk, n)
		wg.Add(1)
		go func() {
			defer wg.Done()
			f.scoreRange(dst[lo:hi], data[lo*f.dims:hi*f.dims])
		}()
	}
	wg.Wait()
	return nil
}

func (f *Forest) checkBatch(dst, data []float64) error {
	if len(data) != len(dst)*f.dims {
		return fmt.Errorf("iforest: %d values do not make %d rows of %d features", len(data), len(dst), f.dims)
	}
	return nil
}

// scoreRange scores rows block by block, each block through all trees.
func (f *Forest) scoreRange(dst, data []float64) {
	d := f.dims
	inv := 1 / float64(len(f.roots))
	for lo := 0; lo < len(dst); lo += scoreBlock {
		hi := min(lo+scoreBlock, len(dst))
		block := dst[lo:hi]
		clear(block)
		if f.steps != nil {
			f.scoreAxisBlock(block, data[lo*d:hi*d])
		} else {
			for _, root := range f.roots {
				for k := range block {
					r := lo + k
					block[k] += f.nodes[f.leaf(root, data[r*d:r*d+d])].value
				}
			}
		}
		for k, sum := range block {
			block[k] = scoreFromMeanPath(sum*inv, f.cPsi)
		}
	}
}
