package features

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
)

// Peers is a profile's shared destinations: hosts that at least two
// devices of the profile talked to in its training history
// (the NTP and DNS servers of a site, a vendor's cloud endpoints): one
// device's host is its own habit, two devices using it make it the
// profile's. A
// destination a device has not talked to yet but its profile shares is no
// news: it is neither a new destination nor a first contact, nor does it
// recur (Observe) — even when its first contact was remembered in the
// warm-up, before the model that shares it judged the device.
//
// Why: a device learns its own peers from its own windows, and a device
// that sends a flow every few minutes may take hours to show a peer it uses
// one time in ten (its NTP server). Judged against its own history alone,
// that peer's first appearance after the device's first MatureWindows
// windows is a first contact with a new host — the evidence a beacon or an
// exfiltration gives — and, its window anomalous and so not learnt, it stays
// new at every later contact. Its profile, whose other devices use it, says
// otherwise: peer-group baselines, as AWS IoT Device Defender's ML Detect
// and UEBA products keep, are the standard remedy for a single entity's
// short history.
//
// Peers also holds the profile's shared service ports, as ServiceKey(port):
// a port two or more of its devices used is no new port for any of them
// (NewDstPorts), for the same reason.
//
// Peers is sorted ascending; its zero value shares nothing.
type Peers []uint64

// serviceTag marks a key of Peers as a destination port rather than a
// destination address. Address keys are 64-bit hashes, so that one of a
// profile's at most MaxPeers of them falls among the 65,536 service keys
// has a chance of about 4,096 · 2¹⁶ / 2⁶⁴ ≈ 10⁻¹¹.
const serviceTag = 0xfffe_5e41_ce00_0000

// ServiceKey is the key of destination port port in Peers.
func ServiceKey(port uint16) uint64 { return serviceTag | uint64(port) }

// Contains reports whether dst is a shared destination.
func (p Peers) Contains(dst uint64) bool {
	_, ok := slices.BinarySearch(p, dst)
	return ok
}

// MarshalJSON encodes the keys as one base64 string of 8-byte big-endian
// keys: a third of the size of a list of decimal numbers in an artifact's
// metadata, and one line, not thousands, in `chainwatch models show`.
func (p Peers) MarshalJSON() ([]byte, error) {
	b := make([]byte, 0, 8*len(p))
	for _, k := range p {
		b = binary.BigEndian.AppendUint64(b, k)
	}
	return json.Marshal(base64.StdEncoding.EncodeToString(b))
}

// UnmarshalJSON decodes MarshalJSON's encoding, refusing keys out of order
// (Contains searches them).
func (p *Peers) UnmarshalJSON(data []byte) error {
	var s string
	if err := json.Unmarshal(data, &s); err != nil {
		return fmt.Errorf("features: shared destinations: %w", err)
	}
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil || len(b)%8 != 0 {
		return fmt.Errorf("features: shared destinations: not a base64 string of 8-byte keys (%d bytes, %v)", len(b), err)
	}
	out := make(Peers, len(b)/8)
	for i := range out {
		out[i] = binary.BigEndian.Uint64(b[8*i:])
		if i > 0 && out[i] <= out[i-1] {
			return fmt.Errorf("features: shared destinations: key %d out of order", i)
		}
	}
	*p = out
	return nil
}

// MaxPeers bounds a profile's shared destinations (8 bytes each in the
// model artifact). A profile sharing more keeps its shared ports and the
// destinations of the lowest keys: an arbitrary choice, but the same for
// the same windows.
const MaxPeers = 4096

// PeerCounter collects, from a profile's training windows, which
// destinations are shared by two devices or more. Windows are numbered in
// the order they are added, and Shared(n) answers for the first n — the
// detector trains on a prefix of the windows it collected — with one entry
// per destination: the device of its earliest window, and the earliest
// window of any other device. Which destinations are shared depends only
// on which windows were added, not on their order.
type PeerCounter struct {
	dsts map[uint64]peerUse
	rows int
}

type peerUse struct {
	first  uint64 // the device of the earliest window with it
	second int    // the earliest window of another device with it, +1; 0: none yet
}

// Add counts the next window, of device (a stable key of its id); a nil
// window counts as a window without destinations.
func (c *PeerCounter) Add(device uint64, w *Window) {
	c.rows++
	if w == nil {
		return
	}
	if c.dsts == nil {
		c.dsts = make(map[uint64]peerUse, 64)
	}
	for port := range w.ports {
		c.use(device, ServiceKey(port))
	}
	for _, info := range w.dsts {
		c.use(device, info.peer)
	}
}

// use counts key dst in the current window, of device.
func (c *PeerCounter) use(device, dst uint64) {
	u, ok := c.dsts[dst]
	switch {
	case !ok:
		c.dsts[dst] = peerUse{first: device}
	case u.second == 0 && u.first != device:
		u.second = c.rows
		c.dsts[dst] = u
	}
}

// sharedSoFar reports whether two devices or more used key in the windows
// added so far.
func (c *PeerCounter) sharedSoFar(key uint64) bool {
	u, ok := c.dsts[key]
	return ok && u.second > 0
}

// Rows is how many windows were added.
func (c *PeerCounter) Rows() int { return c.rows }

// Shared returns the destinations that two devices or more used in the
// first n windows added (n < 0: all of them), at most MaxPeers of them.
func (c *PeerCounter) Shared(n int) Peers {
	if n < 0 {
		n = c.rows
	}
	var out Peers
	for dst, u := range c.dsts {
		if u.second > 0 && u.second <= n {
			out = append(out, dst)
		}
	}
	slices.Sort(out)
	if len(out) > MaxPeers {
		// The service keys sort at and above serviceTag, with the few
		// address hashes as high: keep that block whole (up to the cap)
		// and the lowest addresses below it.
		first := sort.Search(len(out), func(i int) bool { return out[i] >= serviceTag })
		services := min(len(out)-first, MaxPeers)
		out = append(out[:MaxPeers-services], out[first:first+services]...)
	}
	return out
}
