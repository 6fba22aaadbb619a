package incidents

import (
	"encoding/binary"
	"fmt"
)

// Fleet groups what a whole profile does at once: when most of a profile's
// devices are raised in the same window, the cause is one thing the
// profile shares — a business-hours schedule, a configuration pushed to
// every device, a network change, or an attack on all of them at once —
// and the analyst's unit is that one episode, not one incident per device.
//
// The per-device rules judge a device against its own normal and its
// profile's as training saw them. A step every device of a profile takes
// together (badge readers going from a report every few minutes at night
// to several a minute at 07:30) moves the profile's normal itself, and
// each device then opens an incident until its baseline has followed: dozens of
// pages for one change. Peer-group analysis judges a device against its
// peers at the same time instead (Bolton & Hand, "Unsupervised profiling
// methods for fraud detection", 2001); the median of the peers, the usual
// reference, is moved only when more than half of them move (its
// breakdown point), so a majority raised at once is where the peers no
// longer vouch for the old normal.
//
// The rule: a fleet episode opens when, in one window, more than half of
// the profile's devices judged in it so far — at least Rule.FleetMin of
// them, and at least half as many as were judged in the window before —
// are raised (anomalous, or elevated to the sustained level). While
// it is open, a device incident that opens on a window the episode
// explains joins it (Reported; the caller decides what is explained — the
// detector asks whether the window's deviations off the direction the
// profile moved in would count towards an incident, and never explains
// hosts new to a device or flood- and scan-shaped flows, pipeline/fleet.go):
// it goes on as any other, so that the
// device does not open again while its baseline catches up, but is not
// reported on its own. The episode closes after M windows in a row in which
// no more than a quarter of the profile's judged devices are raised (the
// hysteresis of datapoints-to-clear, at half the opening share), once none
// of the incidents it absorbed has had a raised window for M windows
// (Hold). A window is counted once it is two windows behind the newest
// seen, when the partitions read at their own pace have judged it.
//
// Fewer than FleetMin devices judged in a window are too few to tell a
// shared cause from a coincidence of two or three devices: a small profile
// is never grouped. The state is checkpointed with the device incidents
// (MarshalBinary), so that a restarted service carries on an open episode;
// without its checkpoint a profile still shifted opens its episode again
// under the id of its new first window, and the device incidents it had
// absorbed stay absorbed (their state is checkpointed) until the caller
// releases them (State.Release).
type Fleet struct {
	counts  [fleetSlots]fleetCount
	newest  int64
	open    bool
	first   int64 // window the episode opened on
	last    int64 // newest window counted raised by a majority or by more than a quarter
	checked int64 // newest window the closing rule has counted
	held    int64 // newest window of a joined incident that was raised
	quiet   int
	seq     int
	// Absorbed counts the device incidents absorbed into the open episode.
	Absorbed int
	// Raised and Judged are the opening window's counts when it opened.
	Raised, Judged int
}

type fleetCount struct {
	index          int64
	judged, raised int
}

// fleetSlots is how many recent windows the tally keeps: the window being
// judged, the one before it (an opening looks at both) and the ones the
// closing rule has still to count.
const fleetSlots = 8

// DefaultFleetMin is Rule.FleetMin's default.
const DefaultFleetMin = 8

// Open reports whether an episode is open: device incidents opened now on
// windows the caller finds explained are absorbed into it (Reported).
func (f *Fleet) Open() bool { return f.open }

func (f *Fleet) count(index int64) fleetCount {
	c := f.counts[uint64(index)%fleetSlots]
	if c.index != index {
		return fleetCount{index: index}
	}
	return c
}

// Observe tallies one judged window of a device of the profile — raised
// when anomalous or elevated — opening or closing the episode if this
// window does, and returns the closing of an episode that was reported
// (one that absorbed an incident: Reported). An episode that absorbs no
// incident is not reported at all: most of a profile raised for a minute,
// with no device opening an incident, is nothing to work on. Events carry
// First (the episode's first window) and Last; Windows is the number of
// device incidents absorbed.
func (f *Fleet) Observe(r Rule, index int64, raised bool, out []Event) []Event {
	r = r.WithDefaults()
	if r.FleetMin < 0 || index <= f.newest-fleetSlots+2 {
		return out // off, or older than the windows still counted
	}
	slot := &f.counts[uint64(index)%fleetSlots]
	if slot.index != index {
		*slot = fleetCount{index: index}
	}
	slot.judged++
	if raised {
		slot.raised++
	}
	f.newest = max(f.newest, index)
	if !f.open {
		for _, m := range []int64{index - 1, index} {
			// A majority of what has been judged of window m so far,
			// once that is at least FleetMin devices and half as many
			// as the window before had: a window's first partition
			// alone does not speak for the profile.
			c := f.count(m)
			if c.judged >= r.FleetMin && 2*c.judged >= f.count(m-1).judged && 2*c.raised > c.judged {
				f.open, f.first, f.last, f.checked, f.held, f.quiet = true, m, m, m, m, 0
				f.seq, f.Absorbed, f.Raised, f.Judged = 0, 0, c.raised, c.judged
				return out
			}
		}
		return out
	}
	for m := f.checked + 1; m <= f.newest-2; m++ {
		f.checked = m
		c := f.count(m)
		if c.judged == 0 {
			continue // no device judged: no evidence either way
		}
		if 4*c.raised > c.judged {
			f.quiet, f.last = 0, m
			continue
		}
		if f.quiet++; f.quiet >= r.M && m-f.held >= int64(r.M) {
			f.open = false
			if f.Absorbed == 0 {
				return out // never reported
			}
			f.seq++
			return append(out, f.event(Closed))
		}
	}
	return out
}

// Newest is the newest window the episode has counted (0: none yet).
func (f *Fleet) Newest() int64 { return f.newest }

// Hold tells the open episode that a device incident it absorbed had a
// raised window: the episode lasts while its devices are raised, so that a
// device slower than its peers to settle is not left to open an incident
// of its own the minute the rest of the profile is quiet.
func (f *Fleet) Hold(index int64) {
	if f.open {
		f.held = max(f.held, index)
	}
}

func (f *Fleet) event(st Status) Event {
	return Event{Status: st, Seq: f.seq, First: f.first, Last: max(f.last, f.held), Windows: f.Absorbed}
}

// Opening is the event that reports the open episode's opening.
func (f *Fleet) Opening() Event { return f.event(Opened) }

// Reported returns, of the events a device's window gave (st.Observe),
// those to report: the events of an incident absorbed into an episode
// before the window (absorbed: st.Absorbed() before Observe) are left out,
// through its closing; and an incident the window opens while f's episode
// is open joins the episode if join is true — the caller found the window
// explained by the episode — counted in Absorbed (joined true), and is left
// out too. The first incident to join makes the episode reported: opening
// is then true, and the caller reports Opening.
func (f *Fleet) Reported(st *State, absorbed, join bool, events []Event) (reported []Event, joined, opening bool) {
	if absorbed {
		i := 0
		for i < len(events) && events[i].Status != Closed {
			i++
		}
		events = events[min(i+1, len(events)):]
	}
	if join && f.open && len(events) > 0 && events[0].Status == Opened && st.Open() {
		st.Absorb()
		f.Absorbed++
		return nil, true, f.Absorbed == 1
	}
	return events, false, false
}

// FleetEncodingSize is the length of Fleet.MarshalBinary's output.
const FleetEncodingSize = 1 + fleetSlots*(8+4+4) + 8 + 1 + 8*4 + 4*5

// fleetEncodingVersion heads Fleet.MarshalBinary's output.
const fleetEncodingVersion = 1

// MarshalBinary encodes the episode's state for a checkpoint, so that a
// restarted service carries on an open episode rather than opening it
// again and releasing the device incidents it had absorbed.
func (f *Fleet) MarshalBinary() ([]byte, error) {
	b := make([]byte, 0, FleetEncodingSize)
	b = append(b, fleetEncodingVersion)
	for _, c := range f.counts {
		b = binary.BigEndian.AppendUint64(b, uint64(c.index))
		b = binary.BigEndian.AppendUint32(b, uint32(c.judged))
		b = binary.BigEndian.AppendUint32(b, uint32(c.raised))
	}
	b = binary.BigEndian.AppendUint64(b, uint64(f.newest))
	open := byte(0)
	if f.open {
		open = 1
	}
	b = append(b, open)
	for _, v := range []int64{f.first, f.last, f.checked, f.held} {
		b = binary.BigEndian.AppendUint64(b, uint64(v))
	}
	for _, v := range []int{f.quiet, f.seq, f.Absorbed, f.Raised, f.Judged} {
		b = binary.BigEndian.AppendUint32(b, uint32(v))
	}
	return b, nil
}

// UnmarshalBinary restores a checkpointed episode state.
func (f *Fleet) UnmarshalBinary(b []byte) error {
	if len(b) != FleetEncodingSize || b[0] != fleetEncodingVersion {
		return fmt.Errorf("incidents: fleet checkpoint of %d bytes is damaged or of another version", len(b))
	}
	*f = Fleet{}
	p := b[1:]
	u64 := func() int64 { v := int64(binary.BigEndian.Uint64(p)); p = p[8:]; return v }
	u32 := func() int { v := int(binary.BigEndian.Uint32(p)); p = p[4:]; return v }
	for i := range f.counts {
		f.counts[i] = fleetCount{index: u64(), judged: u32(), raised: u32()}
	}
	f.newest = u64()
	f.open, p = p[0] == 1, p[1:]
	f.first, f.last, f.checked, f.held = u64(), u64(), u64(), u64()
	f.quiet, f.seq, f.Absorbed, f.Raised, f.Judged = u32(), u32(), u32(), u32(), u32()
	return nil
}
