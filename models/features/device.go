package features

import (
	"encoding/binary"
	"fmt"
	"math"
	"slices"
)

// RecentSize is how many recently first-contacted hosts a device keeps
// watching for repeat contact.
const RecentSize = 4

// RecentSpan is how many windows a first contact is remembered for: about
// an hour of one-minute windows. It is also the half-life, in windows, of
// the damped count of windows with a first contact (FirstContactWindows1h)
// doubled.
const RecentSpan = 60

// MatureWindows is how many windows of a device must have been observed
// before a destination missing from its history counts as new (NewDst,
// NewInternalDst) or as a first contact: until then the device is still
// showing its usual peers, every one of them new to the history, and none
// of them is news.
const MatureWindows = 30

// SettledWindows lets a device judged by a model mature sooner: once it
// has shown SettledWindows windows, the last SettledWindows in a row with
// no peer of its own it had not shown before (its profile's shared
// destinations aside), it has shown its usual peers. This is a coverage
// rule in the spirit of Good and Turing's estimate of unseen mass ("The
// population frequencies of species", Biometrika 40, 1953): a run of
// windows that found nothing new bounds the chance that the next finds
// something. A device that sends a flow every 15 minutes reaches
// MatureWindows only after 7 hours, blind to new hosts until then; a few
// quiet windows show it settled. Training keeps the 30-window rule (its
// windows have no model): applied there too, every device's rarely used
// peers became first contacts in training and the novelty tails grew too
// heavy for a new host to count (docs/DETECTION.md).
const SettledWindows = 8

// firstContactDecay is the per-window factor of the damped first-contact
// count: a half-life of RecentSpan/2 windows, as Kitsune's damped window
// statistics (Mirsky et al., NDSS 2018) weigh the past by 2^(−λΔt).
var firstContactDecay = math.Exp2(-2.0 / RecentSpan)

// recentDst is a host first contacted within the last RecentSpan windows.
type recentDst struct {
	dst     uint64 // the host's address (Flow.Dst): a recurrence is its own
	peer    uint64 // the peer it belongs to (Flow.Peer), which the history knows
	first   int64  // window index of the first contact
	last    int64  // window index of the newest contact
	gap     int64  // windows between its last two contacts (0: one contact so far)
	repeats int32  // windows after the first in which it was contacted
}

// Device is the per-device context the time features need: the history of
// destinations seen in normal windows, the hosts first contacted recently,
// and the damped count of first contacts. It is a fixed-size value (no
// pointers), so a device's whole state stays well under a kilobyte.
type Device struct {
	History History
	// Ports are the destination ports of its normal windows: its services.
	Ports  Ports
	recent [RecentSize]recentDst
	// firstContacts is the damped count of windows with a first contact,
	// as of window lastWindow.
	firstContacts float64
	lastWindow    int64
	// windows counts the windows observed, up to MatureWindows.
	windows uint32
	// settled counts a young device's windows in a row, up to
	// SettledWindows, that showed no peer of its own it had not shown
	// before.
	settled uint32
	// portWindows counts the windows observed since its port history
	// began, up to MatureWindows: a device restored from a checkpoint that
	// kept no ports shows its services again before a port counts as new.
	portWindows uint32
}

// Profile is what the time features need to know of a device's profile:
// the destinations it shares. A nil *Profile shares nothing.
type Profile struct {
	// Shared are the destinations the profile shares (Peers): one missing
	// from the device's history but shared is neither new nor a first
	// contact.
	Shared Peers
	// warming, when set, stands for Shared: the profile has no model yet,
	// and shares what its training windows so far have shared (Warming).
	warming *PeerCounter
}

// Warming is the view of a profile whose training windows are being
// observed: it shares the destinations that two or more of its devices
// have used in the windows counted so far. Each training window is counted
// (PeerCounter.Add) before it is observed with this view.
//
// Why: the model judges live windows with the profile's shared
// destinations left out of what is new (Shared), so its training windows
// are to be observed the same way, or the novelty features' training tails
// count events no live window can show. Observed as if nothing were
// shared, a device's first use of the site's NTP server or a vendor
// endpoint its peers use was a new host, a first contact and then a
// recurrence in training; on the campus fleet 9 of 8,206 thermostat
// windows had a new host and 34 a recurring one that way, none with the
// shared destinations left out (docs/DETECTION.md). Those few events made
// a live thermostat's new host a one-in-a-thousand event rather than one
// never seen, and a beacon on it took five windows to open an incident.
// Sharing is known only as the training goes, so a device's use of a
// destination before a second device used it still counts as new: the
// training then errs towards more novelty, and fewer alerts.
func Warming(c *PeerCounter) *Profile { return &Profile{warming: c} }

// shares reports whether the profile shares destination (or service) key.
func (p *Profile) shares(key uint64) bool {
	switch {
	case p == nil:
		return false
	case p.warming != nil:
		return p.warming.sharedSoFar(key)
	}
	return p.Shared.Contains(key)
}

// judged reports whether a model judges the profile's devices.
func (p *Profile) judged() bool { return p != nil && p.warming == nil }

// Observe computes the window's vector for a device and advances the
// device's context past it. index numbers windows (start / size), so that
// gaps between a device's windows decay its damped counts correctly.
// Windows are observed in increasing index order, but for a device whose
// records arrive on several partitions, whose windows there close each at
// its partition's pace: a window older than the newest observed is judged
// with the damped count as it stands, which is not decayed backwards.
//
// profile is what the model that judges the device says of its profile,
// or, while the profile has no model (its warm-up, a read of history to
// train on), its Warming view; nil shares nothing.
func (d *Device) Observe(w *Window, index int64, profile *Profile) Vector {
	if d.lastWindow != 0 && index > d.lastWindow {
		d.firstContacts *= math.Pow(firstContactDecay, float64(index-d.lastWindow))
	}
	d.lastWindow = max(d.lastWindow, index)
	if profile.judged() && d.windows >= SettledWindows && d.windows < MatureWindows && d.settled >= SettledWindows {
		d.windows = MatureWindows // settled: mature from now on, with a model or without
		d.portWindows = MatureWindows
	}
	mature := d.windows >= MatureWindows
	if !mature {
		d.windows++
	}
	portsMature := mature && d.portWindows >= MatureWindows
	if d.portWindows < MatureWindows {
		d.portWindows++
	}
	v := w.vector()
	if w.flows == 0 {
		v[FirstContactWindows1h] = d.firstContacts
		return v
	}
	// A destination is known by its peer (an internet host by its
	// network: decode.PeerKey), and recurs by its address.
	newDst, newInternal, recurrence, firstContact, discovered := 0, 0, int32(0), false, false
	for dst, info := range w.dsts {
		known := d.History.Contains(info.peer) || mature && profile.shares(info.peer)
		if !known && !mature && !profile.shares(info.peer) {
			discovered = true // a peer of its own it had not shown yet
		}
		if !known && mature { // a young device's peers are all new, and none is news
			newDst++
			if info.internal {
				newInternal++
			}
		}
		if r := d.recentOf(dst, index); r != nil {
			if r.last < index {
				r.repeats++
				r.gap = index - r.last
				r.last = index
			}
			// A host the profile shares is no news, nor is its
			// recurrence: its first contact may have been remembered
			// before the profile shared it (early in the warm-up, before
			// a second device used it).
			if !profile.shares(info.peer) {
				recurrence = max(recurrence, r.repeats)
			}
			continue
		}
		if !known && mature { // a first contact
			firstContact = true
			w.fresh = append(w.fresh, dst)
		}
	}
	// Remembered after every lookup and in address order, so that which
	// entry an eviction drops never depends on the map's order: the same
	// history always gives the same features.
	slices.Sort(w.fresh)
	for _, dst := range w.fresh {
		d.remember(dst, w.dsts[dst].peer, index)
	}
	w.fresh = w.fresh[:0]
	if firstContact {
		d.firstContacts++
	}
	if !mature {
		d.settled = min(d.settled+1, SettledWindows)
		if discovered {
			d.settled = 0
		}
	}
	// A recurring host the device's history has not accepted (its
	// contacts came in windows too unusual to learn), not contacted in
	// this window but not yet overdue by the gap between its last two
	// contacts, still recurs: a beacon every few minutes raises every
	// window of its cadence, not one in a few, and stops raising them one
	// gap after its last contact.
	for i := range d.recent {
		r := &d.recent[i]
		if r.first != 0 && index-r.first < RecentSpan && r.gap > 0 && r.last < index && index-r.last < r.gap && !d.History.has(r.peer) && !profile.shares(r.peer) {
			recurrence = max(recurrence, r.repeats)
		}
	}
	newPorts := 0
	if portsMature {
		for port := range w.ports {
			if !d.Ports.Contains(port) && !profile.shares(ServiceKey(port)) {
				newPorts++
			}
		}
	}
	v[NewDst] = float64(newDst)
	v[NewInternalDst] = float64(newInternal)
	v[NewDstPorts] = float64(newPorts)
	v[FirstContactWindows1h] = d.firstContacts
	v[NewDstRecurrence] = float64(recurrence)
	return v
}

// ForgetPeers drops what the context knows of the device's destinations —
// its history of hosts, the hosts it first contacted recently and the
// damped count of those first contacts — and has it show its usual peers
// again before a destination counts as new (MatureWindows windows, or
// settled), keeping its ports. A checkpoint written before feature schema
// 4 holds a history of addresses, where this build's holds peers (an
// internet host's network): restored as it is, every peer on the internet
// would be a new host to a device taken for mature.
func (d *Device) ForgetPeers() {
	d.History = History{}
	d.recent = [RecentSize]recentDst{}
	d.firstContacts = 0
	d.windows, d.settled = 0, 0
}

// Learn adds a window judged normal to the device's history: its
// destinations' peers and its destination ports.
func (d *Device) Learn(w *Window) {
	for _, info := range w.dsts {
		d.History.Add(info.peer)
	}
	for port := range w.ports {
		d.Ports.Add(port)
	}
}

// recentOf returns the live entry for dst, if any.
func (d *Device) recentOf(dst uint64, index int64) *recentDst {
	for i := range d.recent {
		r := &d.recent[i]
		if r.dst == dst && r.first != 0 && index-r.first < RecentSpan {
			return r
		}
	}
	return nil
}

// remember watches host dst, of peer, from window index on, replacing an
// expired entry or else the one contacted least recently.
func (d *Device) remember(dst, peer uint64, index int64) {
	victim := 0
	for i := range d.recent {
		r := &d.recent[i]
		if r.first == 0 || index-r.first >= RecentSpan {
			victim = i
			break
		}
		if r.last < d.recent[victim].last {
			victim = i
		}
	}
	d.recent[victim] = recentDst{dst: dst, peer: peer, first: index, last: index}
}

// deviceEncodingSize is the history, RecentSize × (8+8+8+4), the damped
// count with its window index, the windows observed, RecentSize gaps of 4
// bytes, the settled windows (4 bytes), the port history and its windows
// observed (4 bytes), and the recent hosts' peers (RecentSize × 8).
const deviceEncodingSize = deviceEncodingSizeV8 + RecentSize*8

// deviceEncodingSizeV8 is the encoding of feature schema 3 (device
// checkpoints of version 8), whose history knew hosts by address and
// whose recent hosts kept no peer: UnmarshalBinary reads it with each
// recent host its own peer; a checkpoint this old is restored without
// its destinations (ForgetPeers).
const deviceEncodingSizeV8 = deviceEncodingSizeV6 + portsEncodingSize + 4

// deviceEncodingSizeV6 is the encoding before the port history was kept
// (device checkpoints before version 8); UnmarshalBinary reads it with an
// empty port history, which shows the device's services again for
// MatureWindows windows before a port counts as new.
const deviceEncodingSizeV6 = deviceEncodingSizeV2 + RecentSize*4 + 4

// deviceEncodingSizeV2 is the encoding before the recent hosts' gaps and
// the settled windows were kept (device checkpoints before version 6);
// UnmarshalBinary reads it with every gap and the settled count 0, so a
// restored host is held again from its next contact on, and a young
// device settles afresh.
const deviceEncodingSizeV2 = historyEncodingSize + RecentSize*28 + 16 + 4

// MarshalBinary encodes the device context for a checkpoint.
func (d *Device) MarshalBinary() ([]byte, error) {
	b, _ := d.History.MarshalBinary()
	for _, r := range d.recent {
		b = binary.BigEndian.AppendUint64(b, r.dst)
		b = binary.BigEndian.AppendUint64(b, uint64(r.first))
		b = binary.BigEndian.AppendUint64(b, uint64(r.last))
		b = binary.BigEndian.AppendUint32(b, uint32(r.repeats))
	}
	b = binary.BigEndian.AppendUint64(b, math.Float64bits(d.firstContacts))
	b = binary.BigEndian.AppendUint64(b, uint64(d.lastWindow))
	b = binary.BigEndian.AppendUint32(b, d.windows)
	for _, r := range d.recent {
		b = binary.BigEndian.AppendUint32(b, uint32(r.gap))
	}
	b = binary.BigEndian.AppendUint32(b, d.settled)
	b = d.Ports.appendBinary(b)
	b = binary.BigEndian.AppendUint32(b, d.portWindows)
	for _, r := range d.recent {
		b = binary.BigEndian.AppendUint64(b, r.peer)
	}
	return b, nil
}

// UnmarshalBinary restores a checkpointed device context. A bare history
// (the checkpoint of schema 1) restores the history alone.
func (d *Device) UnmarshalBinary(b []byte) error {
	var g Device
	if len(b) == historyEncodingSize {
		if err := g.History.UnmarshalBinary(b); err != nil {
			return err
		}
		g.windows = MatureWindows // a device with a history is known
		*d = g
		return nil
	}
	if len(b) != deviceEncodingSize && len(b) != deviceEncodingSizeV8 && len(b) != deviceEncodingSizeV6 && len(b) != deviceEncodingSizeV2 {
		return fmt.Errorf("features: device checkpoint of %d bytes is damaged", len(b))
	}
	if err := g.History.UnmarshalBinary(b[:historyEncodingSize]); err != nil {
		return err
	}
	off := historyEncodingSize
	for i := range g.recent {
		g.recent[i] = recentDst{
			dst:     binary.BigEndian.Uint64(b[off:]),
			first:   int64(binary.BigEndian.Uint64(b[off+8:])),
			last:    int64(binary.BigEndian.Uint64(b[off+16:])),
			repeats: int32(binary.BigEndian.Uint32(b[off+24:])),
		}
		g.recent[i].peer = g.recent[i].dst
		off += 28
	}
	g.firstContacts = math.Float64frombits(binary.BigEndian.Uint64(b[off:]))
	g.lastWindow = int64(binary.BigEndian.Uint64(b[off+8:]))
	g.windows = binary.BigEndian.Uint32(b[off+16:])
	if len(b) >= deviceEncodingSizeV6 {
		off += 20
		for i := range g.recent {
			g.recent[i].gap = int64(binary.BigEndian.Uint32(b[off:]))
			off += 4
		}
		g.settled = binary.BigEndian.Uint32(b[off:])
		off += 4
	}
	if len(b) >= deviceEncodingSizeV8 {
		if err := g.Ports.unmarshalBinary(b[off : off+portsEncodingSize]); err != nil {
			return err
		}
		g.portWindows = binary.BigEndian.Uint32(b[off+portsEncodingSize:])
		off += portsEncodingSize + 4
	}
	if len(b) == deviceEncodingSize {
		for i := range g.recent {
			g.recent[i].peer = binary.BigEndian.Uint64(b[off:])
			off += 8
		}
	}
	*d = g
	return nil
}
