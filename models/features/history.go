package features

import (
	"encoding/binary"
	"fmt"
)

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

// has reports whether dst is remembered, without marking it used.
func (h *History) has(dst uint64) bool {
	for i := 0; i < h.n; i++ {
		if h.dsts[i] == dst {
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

// historyEncodingSize is 1 count + 1 hand + HistorySize × (8 hash + 1 used).
const historyEncodingSize = 2 + HistorySize*9

// MarshalBinary encodes the history for a checkpoint.
func (h *History) MarshalBinary() ([]byte, error) {
	b := make([]byte, 0, historyEncodingSize)
	b = append(b, byte(h.n), byte(h.hand))
	for i := range HistorySize {
		b = binary.BigEndian.AppendUint64(b, h.dsts[i])
		used := byte(0)
		if h.used[i] {
			used = 1
		}
		b = append(b, used)
	}
	return b, nil
}

// UnmarshalBinary restores a checkpointed history.
func (h *History) UnmarshalBinary(b []byte) error {
	if len(b) != historyEncodingSize || int(b[0]) > HistorySize || int(b[1]) >= HistorySize {
		return fmt.Errorf("features: history checkpoint of %d bytes is damaged", len(b))
	}
	var g History
	g.n, g.hand = int(b[0]), int(b[1])
	for i := range HistorySize {
		off := 2 + i*9
		g.dsts[i] = binary.BigEndian.Uint64(b[off:])
		g.used[i] = b[off+8] == 1
	}
	*h = g
	return nil
}
