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
func (h *History) Contains(dst uint64) bool { return clockContains(h.dsts[:h.n], h.used[:], dst) }

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
func (h *History) Add(dst uint64) { clockAdd(h.dsts[:], h.used[:], &h.n, &h.hand, dst) }

// clockContains reports whether x is among items, and marks it used.
func clockContains[T comparable](items []T, used []bool, x T) bool {
	for i, v := range items {
		if v == x {
			used[i] = true
			return true
		}
	}
	return false
}

// clockAdd adds x to the set items[:*n] of capacity len(items), full or
// not: a full set evicts the first item not used since the clock hand
// last passed it, clearing the used marks it passes (second chance,
// Corbató's clock algorithm).
func clockAdd[T comparable](items []T, used []bool, n, hand *int, x T) {
	if clockContains(items[:*n], used, x) {
		return
	}
	if *n < len(items) {
		items[*n] = x
		*n++
		return
	}
	for used[*hand] {
		used[*hand] = false
		*hand = (*hand + 1) % len(items)
	}
	items[*hand] = x
	*hand = (*hand + 1) % len(items)
}

// Len is the number of remembered destinations.
func (h *History) Len() int { return h.n }

// historyEncodingSize is 1 count + 1 hand + HistorySize × (8 hash + 1 used).
const historyEncodingSize = 2 + HistorySize*9

// MarshalBinary encodes the history for a checkpoint.
func (h *History) MarshalBinary() ([]byte, error) {
	b := make([]byte, 0, historyEncodingSize)
	return appendClock(b, h.dsts[:], h.used[:], h.n, h.hand, binary.BigEndian.AppendUint64), nil
}

// UnmarshalBinary restores a checkpointed history.
func (h *History) UnmarshalBinary(b []byte) error {
	var g History
	if err := readClock(b, g.dsts[:], g.used[:], &g.n, &g.hand, 8, binary.BigEndian.Uint64); err != nil {
		return fmt.Errorf("features: history checkpoint: %w", err)
	}
	*h = g
	return nil
}

// appendClock encodes a clock set: its count and hand (a byte each), then
// each slot's item (put) and used mark (a byte).
func appendClock[T any](b []byte, items []T, used []bool, n, hand int, put func([]byte, T) []byte) []byte {
	b = append(b, byte(n), byte(hand))
	for i, x := range items {
		b = put(b, x)
		mark := byte(0)
		if used[i] {
			mark = 1
		}
		b = append(b, mark)
	}
	return b
}

// readClock decodes appendClock's encoding of items of size bytes each.
func readClock[T any](b []byte, items []T, used []bool, n, hand *int, size int, get func([]byte) T) error {
	if len(b) != 2+len(items)*(size+1) || int(b[0]) > len(items) || int(b[1]) >= len(items) {
		return fmt.Errorf("%d bytes, damaged", len(b))
	}
	*n, *hand = int(b[0]), int(b[1])
	for i := range items {
		off := 2 + i*(size+1)
		items[i] = get(b[off:])
		used[i] = b[off+size] == 1
	}
	return nil
}

// PortHistorySize is how many destination ports a device remembers. An IoT
// device's services number a few (MQTT, HTTPS, NTP, DNS, its fieldbus); a
// device that uses more than this keeps the ones it uses most, as History
// does its hosts.
const PortHistorySize = 16

// Ports is the set of destination ports a device used in windows that were
// judged normal: its services. Like History, a fixed array with
// second-chance (clock) eviction.
type Ports struct {
	ports [PortHistorySize]uint16
	used  [PortHistorySize]bool
	n     int
	hand  int
}

// Contains reports whether port is remembered, and marks it recently used.
func (s *Ports) Contains(port uint16) bool { return clockContains(s.ports[:s.n], s.used[:], port) }

// Add remembers port, evicting the first port not used since the clock
// hand last passed it.
func (s *Ports) Add(port uint16) { clockAdd(s.ports[:], s.used[:], &s.n, &s.hand, port) }

// Len is the number of remembered ports.
func (s *Ports) Len() int { return s.n }

// portsEncodingSize is 1 count + 1 hand + PortHistorySize × (2 port + 1 used).
const portsEncodingSize = 2 + PortHistorySize*3

func (s *Ports) appendBinary(b []byte) []byte {
	return appendClock(b, s.ports[:], s.used[:], s.n, s.hand, binary.BigEndian.AppendUint16)
}

func (s *Ports) unmarshalBinary(b []byte) error {
	var g Ports
	if err := readClock(b, g.ports[:], g.used[:], &g.n, &g.hand, 2, binary.BigEndian.Uint16); err != nil {
		return fmt.Errorf("features: port history checkpoint: %w", err)
	}
	*s = g
	return nil
}
