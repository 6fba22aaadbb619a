// Package incidents groups a device's anomalous windows into incidents, the
// unit an analyst works on, with hysteresis in the manner of AWS IoT Device
// Defender's datapoints-to-alarm and datapoints-to-clear: an incident opens
// when K of the last N windows are anomalous, or at once on one extreme
// window, or when a lower level is held for longer (the persistent and
// sustained rules: PK of the last PN windows, SK of the last SN), or when
// the last EN windows' evidence adds up (the evidence rule); it is
// updated while it lasts, when its peak confidence rises; and
// it closes after M of the device's windows judged quiet in a row, or once
// the device has sent nothing for Silence windows.
//
// Quiet is counted in judged windows, not in minutes: a minute in which the
// device sent nothing is no evidence that it is back to normal, and the
// model's thresholds are fitted to incidents counted the same way (its
// training declusters each device's sequence of judged windows, in which a
// minute without traffic does not appear). Counted in minutes, a device
// that sends every few minutes closed its incident during any lull and
// opened a new one — a second alert for the same episode — at its next
// window.
//
// What most of a profile's devices do at once is one fleet episode
// (Fleet, fleet.go): device incidents that open while it lasts, on windows
// it explains, join it and are not reported one by one.
//
// The state kept per device is a fixed-size value, checkpointed with the
// device, so a restart or a partition move carries an open incident on
// under the same deterministic id.
package incidents

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/bits"
)

// Rule is the hysteresis. The zero value means K=2 of N=3 to open, M=5
// quiet windows or an hour (Silence=60 windows) without any to close.
type Rule struct {
	K int `yaml:"k"` // anomalous windows among the last N that open an incident
	N int `yaml:"n"`
	M int `yaml:"m"` // windows judged quiet in a row that close it
	// Silence is how many windows without any traffic from the device
	// close its incident: a device that fell silent. Default 60 (an hour
	// of one-minute windows); at least M.
	Silence int `yaml:"silence"`
	// SK elevated windows among the last SN open an incident too (the
	// sustained rule). The model fits the level of "elevated" to exactly
	// this statistic (models.SustainedK, models.SustainedN), so the
	// detector sets them from the model, not from configuration. Zero
	// turns the rule off.
	SK int `yaml:"-"`
	SN int `yaml:"-"`
	// PK persistent windows among the last PN open an incident too (the
	// persistent rule), at a level between the sustained and the anomalous
	// one, fitted by the model like the sustained rule's
	// (models.PersistentK, models.PersistentN). Zero turns it off.
	PK int `yaml:"-"`
	PN int `yaml:"-"`
	// EN windows whose Window.Evidence shares sum to at least 1 open an
	// incident too, if the newest holds at least 1/EN of it (the evidence
	// rule; models.EvidenceN). At most EvidenceSlots; zero turns it off.
	EN int `yaml:"-"`
	// FleetMin is the fewest devices of a profile judged in one window for
	// a majority of them raised together to open a fleet episode (Fleet).
	// Default DefaultFleetMin (8); negative turns fleet episodes off.
	FleetMin int `yaml:"fleet_min_devices"`
}

// EvidenceSlots is the longest span the evidence rule can sum over.
const EvidenceSlots = 4

// WithDefaults fills zero fields.
func (r Rule) WithDefaults() Rule {
	if r.K == 0 {
		r.K = 2
	}
	if r.N == 0 {
		r.N = 3
	}
	if r.M == 0 {
		r.M = 5
	}
	if r.Silence == 0 {
		r.Silence = DefaultSilence
	}
	if r.FleetMin == 0 {
		r.FleetMin = DefaultFleetMin
	}
	return r
}

// Validate names the first unusable field.
func (r Rule) Validate() error {
	r = r.WithDefaults()
	switch {
	case r.N < 1 || r.N > 16:
		return fmt.Errorf("n: must be in [1, 16], got %d", r.N)
	case r.K < 1 || r.K > r.N:
		return fmt.Errorf("k: must be in [1, n=%d], got %d", r.N, r.K)
	case r.M < 1:
		return fmt.Errorf("m: must be at least 1, got %d", r.M)
	case r.Silence < r.M:
		return fmt.Errorf("silence: must be at least m=%d windows, got %d", r.M, r.Silence)
	case r.SK < 0 || r.SK > r.SN || r.SN > 16:
		return fmt.Errorf("sustained rule: %d of %d windows is not a rule", r.SK, r.SN)
	case r.PK < 0 || r.PK > r.PN || r.PN > 16:
		return fmt.Errorf("persistent rule: %d of %d windows is not a rule", r.PK, r.PN)
	case r.FleetMin > 0 && r.FleetMin < 2:
		return fmt.Errorf("fleet_min_devices: a majority of %d device is not a fleet; at least 2, or negative for off", r.FleetMin)
	case r.EN < 0 || r.EN > EvidenceSlots:
		return fmt.Errorf("evidence rule: a span of %d windows is not in [0, %d]", r.EN, EvidenceSlots)
	}
	return nil
}

// DefaultSilence is Rule.Silence's default: an hour of one-minute windows.
const DefaultSilence = 60

// Status of an incident event.
type Status string

const (
	Opened  Status = "opened"
	Updated Status = "updated"
	Closed  Status = "closed"
)

// Level grades a window: 0 normal, then the confidence bands of an
// anomalous one.
type Level uint8

const (
	Normal Level = iota
	Low
	Medium
	High // extreme: opens an incident on its own
)

// Opening names the rule that opened an incident, so that an analyst reads
// why a run of modest windows became an incident.
type Opening string

const (
	OpenedExtreme    Opening = "extreme"    // one window at the extreme level
	OpenedKOfN       Opening = "k_of_n"     // K anomalous windows among the last N
	OpenedPersistent Opening = "persistent" // PK windows at the persistent level among the last PN
	OpenedSustained  Opening = "sustained"  // SK windows at the elevated level among the last SN
	OpenedEvidence   Opening = "evidence"   // the last EN windows' evidence adding up
)

// Window is one judged window of the device.
type Window struct {
	Index int64 // window number (start / size), increasing per device
	Level Level
	Score float64
	// Elevated marks a window at or above the sustained level: below the
	// anomalous level, but SustainedK of the last SustainedN such windows
	// open an incident too (a moderate anomaly that lasts).
	Elevated bool
	// SustainedK and PersistentK, when above the rule's SK and PK, are
	// how many elevated windows among the last SN, and persistent ones
	// among the last PN, the sustained and persistent rules ask of this
	// device: one more often raised than its profile's usual device is
	// asked for as many more (models.Model.RuleKFor); above SN or PN, the
	// rule is off for it.
	SustainedK, PersistentK int
	// Persistent marks a window at or above the persistent level: PK of
	// the last PN such windows open an incident.
	Persistent bool
	// Evidence is the window's own evidence as a share of the evidence
	// rule's level: the rule opens when the last EN windows' shares sum to
	// at least 1 and the newest window's is at least 1/EN.
	Evidence float64
	// Lingering marks a window anomalous only by what earlier windows
	// left in it (a damped count of past events): it continues an open
	// incident, as its weakest window, but counts towards no opening
	// rule, so that one event is not counted again in every window that
	// remembers it.
	Lingering bool
}

// Event is something to tell the analyst about an incident.
type Event struct {
	Status Status
	// Seq numbers the incident's events from 0 (its opening).
	Seq int
	// First and Last are the indices of its first and newest anomalous
	// windows; First identifies the incident.
	First, Last int64
	// Windows is how many anomalous windows it holds so far.
	Windows   int
	PeakScore float64
	PeakLevel Level
	// OpenedBy is the rule that opened the incident (the opening only).
	OpenedBy Opening
}

// State is one device's incident state. Its zero value has no incident.
type State struct {
	recent    uint16 // bit i: the window i before lastIndex was anomalous
	elevated  uint16 // bit i: the window i before lastIndex was elevated (or anomalous)
	persist   uint16 // bit i: the window i before lastIndex was persistent (or anomalous)
	lastIndex int64
	open      bool
	first     int64 // first anomalous window of the open incident, or of the run that may open one
	last      int64 // newest anomalous window
	windows   uint32
	peak      float32
	peakLevel Level
	seq       uint16
	quiet     uint16 // windows judged quiet since last (saturating)
	// evidence[i] is the Window.Evidence of the window i before lastIndex
	// (the largest, when a window's minute was judged twice).
	evidence [EvidenceSlots]float32
	// absorbed marks the open incident as part of a fleet episode (Fleet):
	// its events are not reported.
	absorbed bool
}

// Open reports whether an incident is open.
func (s *State) Open() bool { return s.open }

// Quiet reports whether no incident is open and none of the windows the
// opening rules still look back on counts towards one: none anomalous,
// elevated or persistent among the last 16, none holding its even share
// of the evidence rule's among the last EN.
func (s *State) Quiet(r Rule) bool {
	if s.open || s.recent|s.elevated|s.persist != 0 {
		return false
	}
	for _, e := range s.evidence[:min(max(r.EN, 0), EvidenceSlots)] {
		if float64(e)*float64(r.EN) >= 1 {
			return false
		}
	}
	return true
}

// Absorb marks the open incident as part of a fleet episode: it goes on as
// any other, so the device does not open again while the episode lasts,
// but the caller reports none of its events (Absorbed). Closing it ends
// the mark.
func (s *State) Absorb() {
	if s.open {
		s.absorbed = true
	}
}

// Absorbed reports whether the open incident belongs to a fleet episode.
func (s *State) Absorbed() bool { return s.open && s.absorbed }

// Release ends an absorbed incident without a report, once its episode no
// longer explains the device's windows (an extreme one, or one that moved
// where its peers did not): the device is judged on its own again, and
// windows still raised open an incident of its own (the windows of its
// last N, PN, SN and EN still count).
func (s *State) Release() {
	if s.open && s.absorbed {
		s.open, s.absorbed = false, false
		s.seq++
	}
}

// Observe takes the device's next judged window and returns the event it
// causes, if any: an opening, an update (a higher peak level) or a closing
// (the window is the M-th quiet one in a row; or it came after Silence
// windows without traffic, when the incident closes before the window is
// considered, and the window may then open the next one).
func (s *State) Observe(r Rule, w Window, out []Event) []Event {
	r = r.WithDefaults()
	out = s.expire(r, w.Index-1, out)
	// bit is the window's place among the last 16: 1 for the newest. A
	// device seen on two partitions (a victim's reply legs, records not
	// keyed by device) has its windows judged as each partition closes
	// them, so one may come after a newer one, or with the same index; it
	// takes its own place, and the rules are read as of the newest. Quiet
	// is counted in places too: a quiet window where another of the same
	// minute was seen already, or an older one, adds none.
	bit, newer, older := uint16(1), true, false
	switch gap := w.Index - s.lastIndex; {
	case s.lastIndex == 0 || gap >= 16:
		s.recent, s.elevated, s.persist = 0, 0, 0
		s.evidence = [EvidenceSlots]float32{}
		s.lastIndex = w.Index
	case gap == 0:
		newer = false
	case gap > 0:
		s.recent <<= uint(gap)
		s.elevated <<= uint(gap)
		s.persist <<= uint(gap)
		for i := EvidenceSlots - 1; i >= 0; i-- {
			s.evidence[i] = 0
			if i >= int(gap) {
				s.evidence[i] = s.evidence[i-int(gap)]
			}
		}
		s.lastIndex = w.Index
	case gap <= -16:
		return out // older than anything the rules look at
	case gap < 0:
		bit <<= uint(-gap)
		newer, older = false, true
	}
	place := bits.TrailingZeros16(bit)
	if place < EvidenceSlots {
		s.evidence[place] = max(s.evidence[place], float32(w.Evidence))
	}
	// The evidence rule's windows: its span's shares add up to 1, the
	// newest holding at least its even share of it (of the newest minute's
	// parts, the largest).
	evident := false
	if r.EN > 0 && !older && float64(s.evidence[0])*float64(r.EN) >= 1 {
		sum := 0.0
		for _, e := range s.evidence[:r.EN] {
			sum += float64(e)
		}
		evident = sum >= 1
	}
	if w.Level == Normal && !w.Elevated && !w.Persistent && !w.Lingering && !evident {
		if s.open && newer {
			s.quiet = min(s.quiet+1, math.MaxUint16)
			if int(s.quiet) >= r.M {
				s.open, s.absorbed = false, false
				s.seq++
				out = append(out, s.event(Closed))
			}
		}
		return out
	}
	s.quiet = 0
	if w.Level != Normal || w.Elevated {
		s.elevated |= bit
	}
	if w.Level != Normal || w.Persistent {
		s.persist |= bit
	}
	if w.Level == Normal {
		// Elevated, persistent, evident or lingering only: it continues an
		// open incident as its weakest window, and counts towards the
		// sustained and persistent rules when elevated or persistent.
		w.Level = Low
	} else {
		s.recent |= bit
	}
	window := uint16(1)<<uint(r.N) - 1
	sustained := s.elevated & (uint16(1)<<uint(r.SN) - 1)
	persistent := s.persist & (uint16(1)<<uint(r.PN) - 1)
	if !s.open && older {
		// It counts towards the next window's rules, but opens nothing
		// in the past: an incident opened there could begin where the
		// last one did, under its id.
		return out
	}
	if !s.open {
		// The run that may open an incident starts at the oldest anomalous
		// window still among the last N (or, for a persistent or sustained
		// opening, the oldest such window among the last PN or SN). Each
		// rule opens only on a window that meets its own level.
		run := s.recent & window
		var by Opening
		switch {
		case s.recent&bit != 0 && w.Level == High:
			by = OpenedExtreme
		case s.recent&bit != 0 && bits.OnesCount16(run) >= r.K:
			by = OpenedKOfN
		case r.PK > 0 && s.persist&bit != 0 && bits.OnesCount16(persistent) >= max(r.PK, w.PersistentK):
			run, by = persistent, OpenedPersistent
		case r.SK > 0 && s.elevated&bit != 0 && bits.OnesCount16(sustained) >= max(r.SK, w.SustainedK):
			run, by = sustained, OpenedSustained
		case evident:
			run, by = s.evidentRun(r.EN), OpenedEvidence
		default:
			return out
		}
		s.first = s.lastIndex - int64(15-bits.LeadingZeros16(run))
		s.open, s.absorbed, s.seq, s.windows = true, false, 0, uint32(bits.OnesCount16(run))
		s.last, s.peak, s.peakLevel = s.lastIndex-int64(bits.TrailingZeros16(run)), float32(w.Score), w.Level
		ev := s.event(Opened)
		ev.OpenedBy = by
		return append(out, ev)
	}
	s.windows++
	s.last = max(s.last, w.Index)
	s.peak = max(s.peak, float32(w.Score))
	if w.Level > s.peakLevel {
		s.peakLevel = w.Level
		s.seq++
		return append(out, s.event(Updated))
	}
	return out
}

// evidentRun is the run an evidence opening starts with: the newest
// window and those among the last en that were elevated (or anomalous),
// as bits of the last 16 like s.recent. A window of ordinary traffic adds
// a little to every sum; it is not where the episode began.
func (s *State) evidentRun(en int) uint16 {
	return 1 | s.elevated&(uint16(1)<<uint(en)-1)
}

// Expire closes the open incident if the device has sent nothing in the
// Silence windows through index: for devices that fell silent, whose next
// window may never come.
func (s *State) Expire(r Rule, index int64, out []Event) []Event {
	return s.expire(r.WithDefaults(), index, out)
}

// Silent reports whether a device whose newest judged window was last has
// been silent long enough, through window index, for its incident to close.
func (r Rule) Silent(last, index int64) bool {
	return index-last >= int64(r.WithDefaults().Silence)
}

// LastWindow is the index of the device's newest judged window.
func (s *State) LastWindow() int64 { return s.lastIndex }

func (s *State) expire(r Rule, index int64, out []Event) []Event {
	if s.open && r.Silent(s.lastIndex, index) {
		s.open, s.absorbed = false, false
		s.seq++
		return append(out, s.event(Closed))
	}
	return out
}

func (s *State) event(st Status) Event {
	return Event{Status: st, Seq: int(s.seq), First: s.first, Last: s.last, Windows: int(s.windows),
		PeakScore: float64(s.peak), PeakLevel: s.peakLevel}
}

// EncodingSize is the length of MarshalBinary's output.
const EncodingSize = 2 + 8 + 1 + 8 + 8 + 4 + 4 + 1 + 2 + 2 + 2 + 2 + 4*EvidenceSlots

// EncodingSizeV1, EncodingSizeV2, EncodingSizeV3 and EncodingSizeV4 are
// the sizes before the elevated windows, the persistent windows, the quiet
// count and the windows' evidence were kept; UnmarshalBinary still reads
// them (a restored state's evidence starts at none).
const (
	EncodingSizeV4 = EncodingSize - 4*EvidenceSlots
	EncodingSizeV1 = EncodingSizeV4 - 6
	EncodingSizeV2 = EncodingSizeV4 - 4
	EncodingSizeV3 = EncodingSizeV4 - 2
)

// MarshalBinary encodes the state for a checkpoint.
func (s *State) MarshalBinary() ([]byte, error) {
	b := make([]byte, 0, EncodingSize)
	b = binary.BigEndian.AppendUint16(b, s.recent)
	b = binary.BigEndian.AppendUint64(b, uint64(s.lastIndex))
	open := byte(0)
	switch {
	case s.open && s.absorbed:
		open = 2
	case s.open:
		open = 1
	}
	b = append(b, open)
	b = binary.BigEndian.AppendUint64(b, uint64(s.first))
	b = binary.BigEndian.AppendUint64(b, uint64(s.last))
	b = binary.BigEndian.AppendUint32(b, s.windows)
	b = binary.BigEndian.AppendUint32(b, math.Float32bits(s.peak))
	b = append(b, byte(s.peakLevel))
	b = binary.BigEndian.AppendUint16(b, s.seq)
	b = binary.BigEndian.AppendUint16(b, s.elevated)
	b = binary.BigEndian.AppendUint16(b, s.persist)
	b = binary.BigEndian.AppendUint16(b, s.quiet)
	for _, e := range s.evidence {
		b = binary.BigEndian.AppendUint32(b, math.Float32bits(e))
	}
	return b, nil
}

// UnmarshalBinary restores a checkpointed state.
func (s *State) UnmarshalBinary(b []byte) error {
	switch len(b) {
	case EncodingSize, EncodingSizeV1, EncodingSizeV2, EncodingSizeV3, EncodingSizeV4:
	default:
		return fmt.Errorf("incidents: state checkpoint of %d bytes is damaged", len(b))
	}
	*s = State{
		recent:    binary.BigEndian.Uint16(b),
		lastIndex: int64(binary.BigEndian.Uint64(b[2:])),
		open:      b[10] == 1 || b[10] == 2,
		absorbed:  b[10] == 2,
		first:     int64(binary.BigEndian.Uint64(b[11:])),
		last:      int64(binary.BigEndian.Uint64(b[19:])),
		windows:   binary.BigEndian.Uint32(b[27:]),
		peak:      math.Float32frombits(binary.BigEndian.Uint32(b[31:])),
		peakLevel: Level(b[35]),
		seq:       binary.BigEndian.Uint16(b[36:]),
	}
	if len(b) >= EncodingSizeV2 {
		s.elevated = binary.BigEndian.Uint16(b[38:])
	}
	if len(b) >= EncodingSizeV3 {
		s.persist = binary.BigEndian.Uint16(b[40:])
	}
	if len(b) >= EncodingSizeV4 {
		s.quiet = binary.BigEndian.Uint16(b[42:])
	}
	if len(b) == EncodingSize {
		for i := range s.evidence {
			s.evidence[i] = math.Float32frombits(binary.BigEndian.Uint32(b[44+4*i:]))
		}
	}
	return nil
}
