package features

import (
	"math"
	"slices"
)

// Flow is what the feature extractor needs of one flow record, seen from the
// device: it initiated the flow towards Dst:DstPort.
type Flow struct {
	// Dst identifies the destination address (a hash of it is enough, but
	// a stable one: device histories are checkpointed).
	Dst uint64
	// Peer identifies the peer the address belongs to, by which a
	// device's history knows its destinations: the address for a host on
	// the site, its network for one on the internet (decode.PeerKey).
	// Zero: the address is a peer of its own (Dst).
	Peer    uint64
	DstPort uint16
	// Internal marks a destination of the device's site rather than the
	// internet (decode.OnSite): a private, link-local or loopback address,
	// or one in the device's own /24 (/48 for IPv6).
	Internal   bool
	BytesOut   uint64
	BytesIn    uint64
	PacketsOut uint64
	PacketsIn  uint64
	// Failed marks a flow that was refused or never answered (for TCP: no
	// reply packets, or a reset with no payload back).
	Failed bool
	// Inbound marks the reply leg of a unidirectional flow record
	// (NetFlow, IPFIX): traffic the device received, which adds to its
	// bytes and packets in but is no flow or destination of its own.
	Inbound bool
}

// Window accumulates one device's flows for one window. Its maps are kept
// between uses, so recycle Windows through Reset rather than allocating.
type Window struct {
	flows, failed, small                   uint64
	bytesOut, bytesIn, packetsOut, packets uint64
	dsts                                   map[uint64]dstInfo // destination address → its peer
	ports                                  map[uint16]uint32
	counts                                 []uint32 // scratch for the entropy
	fresh                                  []uint64 // scratch: first contacts (Device.Observe)
}

// dstInfo is what a window keeps of a destination address.
type dstInfo struct {
	peer     uint64 // Flow.Peer, or the address's key
	internal bool
}

// NewWindow returns an empty window.
func NewWindow() *Window {
	return &Window{dsts: make(map[uint64]dstInfo, 8), ports: make(map[uint16]uint32, 8)}
}

// Reset empties the window for reuse. Maps that a burst (a port scan, say)
// grew large are dropped so that one burst does not pin memory forever.
func (w *Window) Reset() {
	*w = Window{dsts: w.dsts, ports: w.ports}
	if len(w.dsts) > 256 {
		w.dsts = make(map[uint64]dstInfo, 8)
	} else {
		clear(w.dsts)
	}
	if len(w.ports) > 256 {
		w.ports = make(map[uint16]uint32, 8)
	} else {
		clear(w.ports)
	}
}

// Add counts one flow.
func (w *Window) Add(f Flow) {
	if f.Inbound {
		w.bytesIn += f.BytesIn
		w.packets += f.PacketsIn
		return
	}
	w.flows++
	if f.Failed {
		w.failed++
	}
	if f.PacketsOut > 0 && f.BytesOut < SmallPacketBytes*f.PacketsOut {
		w.small++
	}
	w.bytesOut += f.BytesOut
	w.bytesIn += f.BytesIn
	w.packets += f.PacketsOut + f.PacketsIn
	peer := f.Peer
	if peer == 0 {
		peer = f.Dst
	}
	w.dsts[f.Dst] = dstInfo{peer: peer, internal: f.Internal}
	w.ports[f.DstPort]++
}

// Merge adds the flows of o, another part of the same device's window (its
// records read from another partition), as if each had been added here:
// every count of a window is a sum over its flows, and its destinations and
// ports are sets, so the order in which parts are merged does not matter.
func (w *Window) Merge(o *Window) {
	w.flows += o.flows
	w.failed += o.failed
	w.small += o.small
	w.bytesOut += o.bytesOut
	w.bytesIn += o.bytesIn
	w.packetsOut += o.packetsOut
	w.packets += o.packets
	for d, info := range o.dsts {
		w.dsts[d] = info
	}
	for port, c := range o.ports {
		w.ports[port] += c
	}
}

// Flows is the number of flows added since the last Reset.
func (w *Window) Flows() uint64 { return w.flows }

// EachPeer calls fn for the peer of every distinct destination address in
// the window: a peer the window reached at several addresses comes once
// for each.
func (w *Window) EachPeer(fn func(peer uint64)) {
	for _, info := range w.dsts {
		fn(info.peer)
	}
}

// vector computes the features that depend on the window alone; Device.
// Observe adds those that need the device's context.
func (w *Window) vector() Vector {
	var v Vector
	flows := float64(w.flows)
	v[Flows] = flows
	v[BytesOut] = float64(w.bytesOut)
	v[BytesIn] = float64(w.bytesIn)
	v[Packets] = float64(w.packets)
	v[DistinctDst] = float64(len(w.dsts))
	v[DistinctDstPorts] = float64(len(w.ports))
	v[FailedFlows] = float64(w.failed)
	v[SmallPacketFlows] = float64(w.small)
	if w.packets > 0 {
		v[BytesPerPacket] = float64(w.bytesOut+w.bytesIn) / float64(w.packets)
	}
	if w.flows == 0 { // inbound traffic only: no flow of the device's own
		return v
	}
	// H = −Σ p_i log₂ p_i over the share of flows to each destination port,
	// summed in ascending order of count: a map's order varies from run to
	// run, and a float sum in another order can differ in its last bit, so
	// that replaying the same history would not give the same features.
	w.counts = w.counts[:0]
	for _, c := range w.ports {
		w.counts = append(w.counts, c)
	}
	slices.Sort(w.counts)
	entropy := 0.0
	for _, c := range w.counts {
		p := float64(c) / flows
		entropy -= p * math.Log2(p)
	}
	v[DstPortEntropy] = entropy + 0 // +0 turns −0 into 0 for a single port
	return v
}
