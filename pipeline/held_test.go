package pipeline

import (
	"fmt"
	"testing"
)

// TestHeldWindowsKeepOrderAcrossChunks holds windows over several chunks,
// reads them back in order, keeps every third (as a lengthened warm-up
// takes the others into training) and reads the rest back in order, the
// held copies unaffected by changes to the windows they were made from.
func TestHeldWindowsKeepOrderAcrossChunks(t *testing.T) {
	const n = 3*heldChunk + 17
	var h heldWindows
	var cw ClosedWindow
	for i := range n {
		cw.DeviceID, cw.Index = fmt.Sprintf("d%d", i), int64(i)
		h.Add(&cw)
	}
	cw.Index = -1 // a held window is a copy
	if h.Len() != n || len(h.chunks) != 4 {
		t.Fatalf("%d windows in %d chunks, want %d in 4", h.Len(), len(h.chunks), n)
	}
	for i := range n {
		if w := h.At(i); w.Index != int64(i) || w.DeviceID != fmt.Sprintf("d%d", i) {
			t.Fatalf("window %d reads back as %d (%s)", i, w.Index, w.DeviceID)
		}
	}
	dropped := h.Keep(func(w *ClosedWindow) bool { return w.Index%3 == 0 })
	if want := n - (n+2)/3; dropped != want || h.Len() != n-want {
		t.Fatalf("dropped %d, kept %d: want %d and %d", dropped, h.Len(), want, n-want)
	}
	for i := range h.Len() {
		if w := h.At(i); w.Index != int64(3*i) {
			t.Fatalf("kept window %d is %d, want %d", i, w.Index, 3*i)
		}
	}
	h.Add(&ClosedWindow{Index: 7})
	if w := h.At(h.Len() - 1); w.Index != 7 {
		t.Fatalf("a window held after Keep reads back as %d", w.Index)
	}
}
