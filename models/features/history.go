package features

// HistorySize is how many destinations a device remembers. Usual IoT peers
// number a handful; 48 leaves room for gateways while keeping a device's
// whole state well under a kilobyte.
const HistorySize = 48

// History is the set of destinations a device has talked to in windows that
// were judged normal. It is a fixed array with second-chance (clock)
// eviction: destinations seen again survive, one-off ones age out.
type History struct {
	dsts [HistorySize]uint64
	used [HistorySize]bool // second-chance bit
	n    int
	hand int
}

// Contains reports whether dst is remembered, and marks it recently used.
func (h *History) Contains(dst uint64) bool {
	for i := 0; i < h.n; i++ {
		if h.dsts[i] == dst {
			h.used[i] = true
			return true
		}
	}
	return false
}

// Add remembers dst, evicting the first destination not used since the
// clock hand last passed it.
func (h *History) Add(dst uint64) {
	if h.Contains(dst) {
		return
	}
	if h.n < HistorySize {
		h.dsts[h.n] = dst
		h.n++
		return
	}
	for h.used[h.hand] {
		h.used[h.hand] = false
		h.hand = (h.hand + 1) % HistorySize
	}
	h.dsts[h.hand] = dst
	h.hand = (h.hand + 1) % HistorySize
}

// Len is the number of remembered destinations.
func (h *History) Len() int { return h.n }
