package iforest

import "math"

// Explain writes into importance (length Features()) how much each feature
// drove the isolation of x, normalised to sum to 1.
//
// Every split on x's path in tree t credits its feature with 1/h_t(x), the
// inverse of x's path length in that tree: splits that isolate x quickly are
// the ones that make it anomalous, so short paths weigh most. This is the
// depth-weighted split count at the core of DIFFI (Carletti et al. 2020)
// without its induced-imbalance factor, which needs per-node training
// counts the flattened trees do not keep. A hyperplane split shares its
// credit among features in proportion to |n_f·(x_f − μ_f)|, each feature's
// part in moving x's projection away from that of the training mean μ.
// Explain allocates nothing.
func (f *Forest) Explain(x []float64, importance []float64) {
	x = x[:f.dims]
	importance = importance[:f.dims]
	clear(importance)
	d := f.dims
	for _, root := range f.roots {
		leaf := f.leaf(root, x)
		weight := 1 / math.Max(f.nodes[leaf].value, 1)
		for i := root; i != leaf; {
			nd := &f.nodes[i]
			var side float64
			if f.extension == 0 {
				importance[nd.feature] += weight
				side = x[nd.feature]
			} else {
				normal := f.normals[int(nd.feature)*d : int(nd.feature)*d+d]
				l1 := 0.0
				for j, w := range normal {
					l1 += math.Abs(w * (x[j] - f.center[j]))
				}
				if l1 > 0 {
					for j, w := range normal {
						importance[j] += weight * math.Abs(w*(x[j]-f.center[j])) / l1
					}
				}
				side = dot(normal, x)
			}
			i = nd.left
			if side >= nd.value {
				i++
			}
		}
	}
	total := 0.0
	for _, v := range importance {
		total += v
	}
	if total > 0 {
		for j := range importance {
			importance[j] /= total
		}
	}
}
