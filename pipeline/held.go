package pipeline

// heldWindows keeps the windows a profile holds while its first model
// waits for verified history, in chunks of heldChunk: a backlog read while
// the warm-up is verified holds a hundred thousand windows of a few hundred
// bytes each, and one growing slice copied them all again at every
// doubling (and cleared each new array), on the detection stage's
// goroutine. A chunk, once full, is never copied.
type heldWindows struct {
	chunks [][]ClosedWindow
	n      int
}

// heldChunk is how many windows a chunk holds: about 300 KB of them.
const heldChunk = 1024

// Len is how many windows are held.
func (h *heldWindows) Len() int { return h.n }

// Add holds a copy of cw.
func (h *heldWindows) Add(cw *ClosedWindow) {
	if k := len(h.chunks); k == 0 || len(h.chunks[k-1]) == heldChunk {
		h.chunks = append(h.chunks, make([]ClosedWindow, 0, heldChunk))
	}
	last := &h.chunks[len(h.chunks)-1]
	*last = append(*last, *cw)
	h.n++
}

// At returns the i-th window held, in the order they were added.
func (h *heldWindows) At(i int) *ClosedWindow { return &h.chunks[i/heldChunk][i%heldChunk] }

// Keep keeps the windows keep says to, in order, and returns how many
// were dropped.
func (h *heldWindows) Keep(keep func(*ClosedWindow) bool) int {
	var kept heldWindows
	for i := range h.n {
		if cw := h.At(i); keep(cw) {
			kept.Add(cw)
		}
	}
	dropped := h.n - kept.n
	*h = kept
	return dropped
}
