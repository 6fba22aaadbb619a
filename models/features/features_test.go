package features

import (
	"math"
	"slices"
	"testing"
)

func TestVectorOfKnownWindow(t *testing.T) {
	w := NewWindow()
	// Four flows: two to port 443 on dst 1, one to 53 on dst 2, one failed
	// SYN to 22 on dst 3, an internal host.
	w.Add(Flow{Dst: 1, DstPort: 443, BytesOut: 100, BytesIn: 300, PacketsOut: 2, PacketsIn: 2})
	w.Add(Flow{Dst: 1, DstPort: 443, BytesOut: 100, BytesIn: 300, PacketsOut: 2, PacketsIn: 2})
	w.Add(Flow{Dst: 2, DstPort: 53, BytesOut: 60, BytesIn: 120, PacketsOut: 1, PacketsIn: 1})
	w.Add(Flow{Dst: 3, DstPort: 22, BytesOut: 60, PacketsOut: 1, Failed: true, Internal: true})
	d := Device{windows: MatureWindows, portWindows: MatureWindows}
	d.History.Add(1)
	d.History.Add(2)
	d.Ports.Add(443)
	d.Ports.Add(53)
	v := d.Observe(w, 1000, nil)
	want := Vector{
		Flows: 4, BytesOut: 320, BytesIn: 720, Packets: 11,
		DistinctDst: 3, DistinctDstPorts: 3,
		DstPortEntropy:        1.5, // p = ½, ¼, ¼ → ½·1 + 2·¼·2
		NewDst:                1,
		NewInternalDst:        1,
		NewDstPorts:           1, // 22
		FailedFlows:           1,
		SmallPacketFlows:      4, // 50, 50, 60 and 60 bytes per packet sent
		BytesPerPacket:        1040.0 / 11,
		FirstContactWindows1h: 1,
	}
	for i := range v {
		if math.Abs(v[i]-want[i]) > 1e-12 {
			t.Errorf("%s = %v, want %v", Names[i], v[i], want[i])
		}
	}
	w.Reset()
	if w.Flows() != 0 || w.vector() != (Vector{}) {
		t.Error("Reset left state behind")
	}
	// The reply leg of a unidirectional record only adds traffic received.
	w.Add(Flow{Inbound: true, BytesIn: 900, PacketsIn: 3})
	if v := w.vector(); v[Flows] != 0 || v[BytesIn] != 900 || v[Packets] != 3 || v[BytesPerPacket] != 300 || v[DistinctDst] != 0 {
		t.Errorf("inbound-only window %v", v)
	}
}

// A beacon: the same new host contacted window after window. Its first
// contact counts once, its recurrence grows, and both fade after an hour;
// the damped first-contact count halves every RecentSpan/2 windows.
func TestRecurrenceAndDampedFirstContacts(t *testing.T) {
	d := Device{windows: MatureWindows}
	w := NewWindow()
	for i := int64(0); i < 5; i++ {
		w.Reset()
		w.Add(Flow{Dst: 99, DstPort: 4444, BytesOut: 300, PacketsOut: 4})
		v := d.Observe(w, 100+i, nil)
		wantNew := 0.0
		if i == 0 {
			wantNew = 1
		}
		if v[NewDstRecurrence] != float64(i) || v[NewDst] != wantNew {
			t.Fatalf("window %d: recurrence %v new %v, want %d and %v", i, v[NewDstRecurrence], v[NewDst], i, wantNew)
		}
		d.History.Add(99) // judged normal and learnt: recurrence still counts
	}
	w.Reset()
	w.Add(Flow{Dst: 7, DstPort: 443, BytesOut: 300, PacketsOut: 4})
	v := d.Observe(w, 100+RecentSpan/2, nil)
	if math.Abs(v[FirstContactWindows1h]-(0.5+1)) > 1e-9 {
		t.Errorf("damped first contacts %v, want 1.5 (one halved, one new)", v[FirstContactWindows1h])
	}
	w.Reset()
	w.Add(Flow{Dst: 99, DstPort: 4444, BytesOut: 300, PacketsOut: 4})
	if v := d.Observe(w, 100+RecentSpan+1, nil); v[NewDstRecurrence] != 0 {
		t.Errorf("recurrence %v after the host's first contact expired", v[NewDstRecurrence])
	}
	b, _ := d.MarshalBinary()
	var g Device
	if err := g.UnmarshalBinary(b); err != nil || g != d {
		t.Fatalf("device checkpoint round trip changed it (%v)", err)
	}
	h, _ := d.History.MarshalBinary()
	if err := g.UnmarshalBinary(h); err != nil || g.History != d.History || g.windows != MatureWindows {
		t.Fatalf("schema-1 history checkpoint not restored (%v)", err)
	}
}

// A beacon every 3 windows on a device that sends other traffic in
// between, its windows too unusual to learn: its recurrence is held in the
// windows between contacts while the next is not overdue by the gap
// between the last two — none before its second contact (no gap yet), none
// once a contact is missed — and the gaps survive a checkpoint. A
// recurring host the history has accepted is not held.
func TestRecurrenceHeldBetweenABeaconsContacts(t *testing.T) {
	d := Device{windows: MatureWindows}
	w := NewWindow()
	observe := func(index int64, dst uint64) Vector {
		w.Reset()
		w.Add(Flow{Dst: 7, DstPort: 123, BytesOut: 90, PacketsOut: 1}) // its NTP server, every window
		if dst != 0 {
			w.Add(Flow{Dst: dst, DstPort: 4444, BytesOut: 300, PacketsOut: 4})
		}
		return d.Observe(w, index, nil)
	}
	d.History.Add(7)
	// Contacts at 100, 103, 106, 109, then none: the recurrence each
	// window should show.
	want := map[int64]float64{100: 0, 101: 0, 102: 0, 103: 1, 104: 1, 105: 1, 106: 2, 107: 2, 108: 2, 109: 3, 110: 3, 111: 3, 112: 0, 113: 0}
	for i := int64(100); i <= 113; i++ {
		dst := uint64(0)
		if i <= 109 && (i-100)%3 == 0 {
			dst = 99
		}
		if i == 105 {
			b, _ := d.MarshalBinary()
			var g Device
			if err := g.UnmarshalBinary(b); err != nil || g != d {
				t.Fatalf("checkpoint with gaps did not round-trip (%v)", err)
			}
		}
		if v := observe(i, dst); v[NewDstRecurrence] != want[i] {
			t.Fatalf("window %d (contact %v): recurrence %v, want %v", i, dst != 0, v[NewDstRecurrence], want[i])
		}
	}
	// Another host, its first contact's window learnt: it recurs where
	// contacted, and is not held in between.
	observe(200, 55)
	d.History.Add(55)
	observe(202, 55)
	if v := observe(203, 0); v[NewDstRecurrence] != 0 {
		t.Fatalf("a recurring host the history accepted is held (%v)", v[NewDstRecurrence])
	}
	// A checkpoint of schema 2, without gaps, is still read: the hosts
	// are held again from their next contacts.
	b, _ := d.MarshalBinary()
	var g Device
	if err := g.UnmarshalBinary(b[:deviceEncodingSizeV2]); err != nil {
		t.Fatalf("schema-2 device checkpoint refused: %v", err)
	}
	for _, r := range g.recent {
		if r.gap != 0 {
			t.Fatal("a schema-2 checkpoint restored a gap")
		}
	}
}

// A sparse device judged by a model: its two peers in its first windows,
// then SettledWindows windows in a row with nothing it had not shown, and it
// is mature long before MatureWindows — a new host counts. A window with a
// peer of its own it had not shown starts the run again; the profile's
// shared destinations do not. Without a model (training's view) it stays
// young until MatureWindows. The settled count survives a checkpoint.
func TestJudgedDeviceMaturesOnceSettled(t *testing.T) {
	w := NewWindow()
	profile := &Profile{Shared: Peers{123}}
	run := func(p *Profile, dsts []uint64) (Device, Vector) {
		var d Device
		var v Vector
		for i, dst := range dsts {
			w.Reset()
			w.Add(Flow{Dst: dst, DstPort: 443, BytesOut: 300, PacketsOut: 1})
			v = d.Observe(w, int64(100+i), p)
			w.EachPeer(d.History.Add)
		}
		return d, v
	}
	// Peers 1 and 2, then 1, 2 and the shared 123 in turn for
	// SettledWindows windows, then a stranger.
	dsts := []uint64{1, 2}
	for i := range SettledWindows {
		dsts = append(dsts, []uint64{1, 2, 123}[i%3])
	}
	dsts = append(dsts, 99)
	d, v := run(profile, dsts)
	if v[NewDst] != 1 || v[FirstContactWindows1h] != 1 {
		t.Fatalf("after %d settled windows a stranger is no news: new %v, first contacts %v", SettledWindows, v[NewDst], v[FirstContactWindows1h])
	}
	if _, v := run(nil, dsts); v[NewDst] != 0 {
		t.Fatal("without a model the device matured before MatureWindows")
	}
	// A peer of its own first shown in the run: the run starts again.
	late := slices.Clone(dsts)
	late[len(late)-3] = 3
	if _, v := run(profile, late); v[NewDst] != 0 {
		t.Fatal("matured although a peer of its own showed two windows before")
	}
	b, _ := d.MarshalBinary()
	var g Device
	if err := g.UnmarshalBinary(b); err != nil || g != d || g.settled == 0 {
		t.Fatalf("settled count lost in a checkpoint (%v, %d)", err, g.settled)
	}
}

func TestHistoryEvictsUnusedFirst(t *testing.T) {
	var h History
	for d := uint64(0); d < HistorySize; d++ {
		h.Add(d)
	}
	h.Contains(0) // used again: survives the next eviction
	h.Add(1000)
	if !h.Contains(0) || !h.Contains(1000) || h.Len() != HistorySize {
		t.Fatalf("clock eviction dropped a used destination (len %d)", h.Len())
	}
	if h.Contains(1) {
		t.Fatal("unused destination 1 should have been evicted")
	}
}

func TestHistoryCheckpointRoundTrip(t *testing.T) {
	var h History
	for d := uint64(0); d < HistorySize+5; d++ {
		h.Add(d * 7)
	}
	h.Contains(14)
	b, _ := h.MarshalBinary()
	var g History
	if err := g.UnmarshalBinary(b); err != nil || g != h {
		t.Fatalf("round trip changed the history (%v)", err)
	}
	if err := g.UnmarshalBinary(b[:10]); err == nil {
		t.Fatal("damaged checkpoint accepted")
	}
}

// A device's usual peers, seen in its first windows, are no first contacts:
// only once it has a history does a missing destination count as news.
func TestYoungDeviceHasNoFirstContacts(t *testing.T) {
	var d Device
	w := NewWindow()
	for i := int64(1); i <= MatureWindows+5; i++ {
		w.Reset()
		w.Add(Flow{Dst: uint64(1 + i%3), DstPort: 443, BytesOut: 300, PacketsOut: 1})
		v := d.Observe(w, i, nil)
		if v[NewDstRecurrence] != 0 || v[FirstContactWindows1h] != 0 || v[NewDst] != 0 {
			t.Fatalf("window %d: new %v, recurrence %v, first contacts %v from the usual peers", i, v[NewDst], v[NewDstRecurrence], v[FirstContactWindows1h])
		}
		w.EachPeer(d.History.Add)
	}
	w.Reset()
	w.Add(Flow{Dst: 99, DstPort: 4444, BytesOut: 300, PacketsOut: 1})
	if v := d.Observe(w, MatureWindows+6, nil); v[FirstContactWindows1h] != 1 || v[NewDst] != 1 {
		t.Fatalf("a new host after maturity: %v", v)
	}
}

// A window read as parts from several partitions and merged has the vector
// of the window read whole.
func TestMergedPartsMakeTheWholeWindow(t *testing.T) {
	whole := NewWindow()
	parts := []*Window{NewWindow(), NewWindow(), NewWindow()}
	for i := range 60 {
		f := Flow{Dst: uint64(i % 7), DstPort: uint16(80 + i%5), Internal: i%3 == 0, BytesOut: uint64(100 + i), BytesIn: uint64(40 * i),
			PacketsOut: 2, PacketsIn: uint64(i % 4), Failed: i%11 == 0, Inbound: i%13 == 0}
		whole.Add(f)
		parts[(i*7)%3].Add(f)
	}
	merged := parts[0]
	merged.Merge(parts[2])
	merged.Merge(parts[1])
	if got, want := merged.vector(), whole.vector(); got != want {
		t.Fatalf("merged parts give\n%v\nwant\n%v", got, want)
	}
}

// A host the device has never used but its profile shares (two devices
// used it in training) is no news; a host nobody shares still is.
func TestSharedPeerIsNoFirstContact(t *testing.T) {
	var c PeerCounter
	w := NewWindow()
	for dev, dsts := range [][]uint64{{1, 2, 123}, {1, 3, 123}, {4, 123}, {7}} {
		w.Reset()
		for _, dst := range dsts {
			w.Add(Flow{Dst: dst, DstPort: 443, BytesOut: 300, PacketsOut: 1})
		}
		c.Add(uint64(100+dev), w)
		c.Add(uint64(100+dev), w) // a device's second window adds no device
	}
	shared := c.Shared(-1)
	if !slices.Equal(shared, Peers{1, 123, ServiceKey(443)}) {
		t.Fatalf("shared %v, want [1 123 port 443]", shared)
	}

	var d Device
	profile := &Profile{Shared: shared}
	for i := int64(1); i <= MatureWindows; i++ {
		w.Reset()
		w.Add(Flow{Dst: 1, DstPort: 443, BytesOut: 300, PacketsOut: 1})
		d.Observe(w, i, profile)
		w.EachPeer(d.History.Add)
	}
	w.Reset()
	w.Add(Flow{Dst: 123, DstPort: 123, BytesOut: 76, PacketsOut: 1})
	if v := d.Observe(w, MatureWindows+1, profile); v[NewDst] != 0 || v[FirstContactWindows1h] != 0 {
		t.Fatalf("the profile's NTP server, first used: new %v, first contacts %v", v[NewDst], v[FirstContactWindows1h])
	}
	w.Reset()
	w.Add(Flow{Dst: 7, DstPort: 4444, BytesOut: 300, PacketsOut: 1})
	if v := d.Observe(w, MatureWindows+2, profile); v[NewDst] != 1 || v[FirstContactWindows1h] != 1 {
		t.Fatalf("another device's own host: new %v, first contacts %v", v[NewDst], v[FirstContactWindows1h])
	}
}

// TestSharedPeerDoesNotRecur: a host a device first contacted before any
// model judged it (early in a warm-up, before a second device used it) and then
// contacts again under a model whose profile shares the host does not
// recur — as the host is no first contact under that model, its contacts
// are no beacon — while a host of its own it met the same way does.
func TestSharedPeerDoesNotRecur(t *testing.T) {
	d := Device{windows: MatureWindows}
	w := NewWindow()
	w.Add(Flow{Dst: 5, DstPort: 443, BytesOut: 300, PacketsOut: 1})
	w.Add(Flow{Dst: 6, DstPort: 443, BytesOut: 300, PacketsOut: 1})
	if v := d.Observe(w, 100, nil); v[NewDst] != 2 {
		t.Fatalf("warm-up window: new %v, want 2 first contacts", v[NewDst])
	}
	profile := &Profile{Shared: Peers{5}}
	for i := int64(1); i <= 3; i++ {
		w.Reset()
		w.Add(Flow{Dst: 5, DstPort: 443, BytesOut: 300, PacketsOut: 1})
		if v := d.Observe(w, 100+i, profile); v[NewDstRecurrence] != 0 {
			t.Fatalf("contact %d with the profile's shared host: recurrence %v, want 0", i, v[NewDstRecurrence])
		}
	}
	for i := int64(1); i <= 3; i++ {
		w.Reset()
		w.Add(Flow{Dst: 6, DstPort: 443, BytesOut: 300, PacketsOut: 1})
		if v := d.Observe(w, 102+2*i, profile); v[NewDstRecurrence] != float64(i) {
			t.Fatalf("contact %d with the device's own host: recurrence %v, want %d", i, v[NewDstRecurrence], i)
		}
	}
	// Between contacts the own host's recurrence is held; the shared
	// host's, contacted every window before, is not.
	w.Reset()
	w.Add(Flow{Dst: 9, DstPort: 53, BytesOut: 70, PacketsOut: 1})
	d.History.Add(9)
	if v := d.Observe(w, 109, profile); v[NewDstRecurrence] != 3 {
		t.Fatalf("between contacts: recurrence %v, want the own host's 3 held", v[NewDstRecurrence])
	}
}

// TestWarmingSharesWhatTheTrainingHasShared: a training window is
// observed with what the profile's devices have shared so far, as the
// model will judge live windows with what it shares. A host a second
// device uses is no news to it, nor to the first device afterwards; a
// host only one device has used is a first contact, and recurs; and a
// device is not settled early, as training devices never are.
func TestWarmingSharesWhatTheTrainingHasShared(t *testing.T) {
	var c PeerCounter
	view := Warming(&c)
	a, b := Device{windows: MatureWindows}, Device{windows: MatureWindows}
	w := NewWindow()
	observe := func(d *Device, dev uint64, index int64, dsts ...uint64) Vector {
		w.Reset()
		for _, dst := range dsts {
			w.Add(Flow{Dst: dst, DstPort: 443, BytesOut: 300, PacketsOut: 1})
		}
		c.Add(dev, w) // counted first, then observed
		return d.Observe(w, index, view)
	}
	if v := observe(&a, 1, 10, 50); v[NewDst] != 1 || v[FirstContactWindows1h] != 1 {
		t.Fatalf("device a's first use of 50, no one else's yet: new %v, first contacts %v, want 1 and 1", v[NewDst], v[FirstContactWindows1h])
	}
	if v := observe(&b, 2, 10, 50, 60); v[NewDst] != 1 || v[FirstContactWindows1h] != 1 {
		t.Fatalf("device b uses 50 (now shared) and 60 (its own): new %v, first contacts %v, want 1 and 1", v[NewDst], v[FirstContactWindows1h])
	}
	if v := observe(&a, 1, 11, 50); v[NewDst] != 0 || v[NewDstRecurrence] != 0 {
		t.Fatalf("device a's second use of 50, shared since: new %v, recurrence %v, want 0 and 0", v[NewDst], v[NewDstRecurrence])
	}
	if v := observe(&b, 2, 11, 60); v[NewDst] != 1 || v[NewDstRecurrence] != 1 {
		t.Fatalf("device b's own host again: new %v, recurrence %v, want 1 and 1", v[NewDst], v[NewDstRecurrence])
	}
	if !view.shares(ServiceKey(443)) || view.shares(60) {
		t.Fatal("the view shares port 443 (both devices) and not host 60 (one device)")
	}
	young := Device{}
	for i := int64(1); i <= SettledWindows+2; i++ {
		observe(&young, 3, i, 50)
	}
	if young.windows >= MatureWindows {
		t.Fatalf("a training device settled after %d quiet windows; training keeps the %d-window rule", SettledWindows+2, MatureWindows)
	}
}

// Which destinations are shared does not depend on the order of the
// windows; a prefix of them answers for itself; the cap keeps the lowest
// keys.
func TestSharedPeersAreOrderFreeAndCapped(t *testing.T) {
	windows := func(order []int, n int) Peers {
		var c PeerCounter
		w := NewWindow()
		for _, dev := range order {
			w.Reset()
			for dst := uint64(0); dst < 3*MaxPeers; dst++ {
				if dst%uint64(dev+1) == 0 {
					w.Add(Flow{Dst: dst, DstPort: 443, BytesOut: 1, PacketsOut: 1})
				}
			}
			c.Add(uint64(dev), w)
			c.Add(uint64(dev), nil)
		}
		return c.Shared(n)
	}
	a, b := windows([]int{0, 1, 2, 3}, -1), windows([]int{3, 2, 1, 0}, -1)
	if !slices.Equal(a, b) {
		t.Fatal("shared destinations depend on the order of the windows")
	}
	// Device 0 uses every host, device 1 the even ones, 2 the multiples
	// of 3 and 3 those of 4: 8,192 shared; the cap keeps the port they
	// share and 0…8,189's hosts.
	if len(a) != MaxPeers || !a.Contains(0) || !a.Contains(3) || a.Contains(1) || a[len(a)-2] >= 2*MaxPeers || !a.Contains(ServiceKey(443)) {
		t.Fatalf("%d shared, want the cap %d, the shared port and the lowest keys kept", len(a), MaxPeers)
	}
	// The first two windows are device 0's and a window without
	// destinations: nothing shared yet; with device 1's, the even hosts.
	if p := windows([]int{0, 1, 2, 3}, 2); len(p) != 0 {
		t.Fatalf("%d shared after one device's windows", len(p))
	}
	if p := windows([]int{0, 1}, 3); !p.Contains(2) || p.Contains(3) {
		t.Fatal("after devices 0 and 1: the even hosts are shared, the odd not")
	}
}

// A port the device never used in a normal window is a new port once the
// device has shown its services; one it learnt, or one its profile
// shares, is not. A checkpoint keeps the ports; one written before ports
// were kept restores none, and the device shows its services again before
// a port counts as new.
func TestNewPortsCountOnceServicesAreShown(t *testing.T) {
	var d Device
	w := NewWindow()
	observe := func(index int64, ports ...uint16) Vector {
		w.Reset()
		for _, p := range ports {
			w.Add(Flow{Dst: 1, DstPort: p, BytesOut: 300, PacketsOut: 2})
		}
		return d.Observe(w, index, nil)
	}
	for i := int64(1); i <= MatureWindows; i++ {
		if v := observe(i, 443, 123); v[NewDstPorts] != 0 {
			t.Fatalf("window %d of a young device: %v new ports", i, v[NewDstPorts])
		}
		d.Learn(w)
	}
	if v := observe(MatureWindows+1, 443, 8443, 4444); v[NewDstPorts] != 2 {
		t.Fatalf("new ports %v, want 2 (8443 and 4444)", v[NewDstPorts])
	}
	// Not learnt (the window was unusual): still new in the next window.
	if v := observe(MatureWindows+2, 8443); v[NewDstPorts] != 1 {
		t.Fatalf("an unlearnt port: new ports %v, want 1", v[NewDstPorts])
	}
	d.Learn(w)
	if v := observe(MatureWindows+3, 443, 8443); v[NewDstPorts] != 0 {
		t.Fatalf("a learnt port: new ports %v, want 0", v[NewDstPorts])
	}
	w.Reset()
	w.Add(Flow{Dst: 1, DstPort: 502, BytesOut: 300, PacketsOut: 2})
	if v := d.Observe(w, MatureWindows+4, &Profile{Shared: Peers{ServiceKey(502)}}); v[NewDstPorts] != 0 {
		t.Fatalf("a port the profile shares: new ports %v, want 0", v[NewDstPorts])
	}

	b, _ := d.MarshalBinary()
	var g Device
	if err := g.UnmarshalBinary(b); err != nil || g != d {
		t.Fatalf("device checkpoint round trip changed it (%v)", err)
	}
	if err := g.UnmarshalBinary(b[:deviceEncodingSizeV6]); err != nil {
		t.Fatalf("a checkpoint without ports refused: %v", err)
	}
	if g.Ports.Len() != 0 || g.History != d.History {
		t.Fatal("a checkpoint without ports restored ports, or lost the history")
	}
	d = g
	for i := int64(1); i <= MatureWindows; i++ {
		if v := observe(MatureWindows+4+i, 4444); v[NewDstPorts] != 0 {
			t.Fatalf("window %d after a restore without ports: %v new ports", i, v[NewDstPorts])
		}
		d.Learn(w)
	}
	if v := observe(2*MatureWindows+5, 4444, 9999); v[NewDstPorts] != 1 {
		t.Fatalf("after the services were shown again: new ports %v, want 1 (9999)", v[NewDstPorts])
	}
}

// The port history keeps what is used and evicts the port not used since
// the clock hand last passed.
func TestPortsEvictUnusedFirst(t *testing.T) {
	var s Ports
	for p := range uint16(PortHistorySize) {
		s.Add(1000 + p)
	}
	for p := uint16(1); p < PortHistorySize; p++ {
		s.Contains(1000 + p) // all used but port 1000
	}
	s.Add(7)
	if s.Len() != PortHistorySize || !s.Contains(7) || s.Contains(1000) || !s.Contains(1001) {
		t.Fatal("the port history did not evict the unused port 1000 for 7")
	}
}

// A destination is known by its peer and recurs by its address: another
// address of a network the device knows is no new host, two addresses of
// a new network are two first contacts and no recurrence, and the first
// of them contacted again recurs. The recent hosts' peers survive a
// checkpoint.
func TestDestinationsKnownByPeerRecurByAddress(t *testing.T) {
	const cloud, stranger = 1000, 2000 // peers: two internet networks
	var d Device
	w := NewWindow()
	observe := func(index int64, dst, peer uint64) Vector {
		w.Reset()
		w.Add(Flow{Dst: dst, Peer: peer, DstPort: 443, BytesOut: 300, PacketsOut: 1})
		return d.Observe(w, index, nil)
	}
	// Mature on one address of the cloud network.
	for i := range int64(MatureWindows) {
		observe(100+i, 1, cloud)
		d.Learn(w)
	}
	if v := observe(200, 2, cloud); v[NewDst] != 0 || v[FirstContactWindows1h] != 0 || v[DistinctDst] != 1 {
		t.Fatalf("another address of a known network: new_dst %v, first contacts %v", v[NewDst], v[FirstContactWindows1h])
	}
	d.Learn(w)
	// The stranger's network, at two addresses in turn, never learnt.
	if v := observe(201, 20, stranger); v[NewDst] != 1 || v[NewDstRecurrence] != 0 {
		t.Fatalf("first address of a new network: new_dst %v, recurrence %v", v[NewDst], v[NewDstRecurrence])
	}
	if v := observe(202, 21, stranger); v[NewDst] != 1 || v[NewDstRecurrence] != 0 {
		t.Fatalf("second address of the new network: new_dst %v, recurrence %v, want a first contact of its own", v[NewDst], v[NewDstRecurrence])
	}
	if v := observe(203, 20, stranger); v[NewDstRecurrence] != 1 {
		t.Fatalf("first address again: recurrence %v, want 1", v[NewDstRecurrence])
	}
	b, _ := d.MarshalBinary()
	var g Device
	if err := g.UnmarshalBinary(b); err != nil || g != d {
		t.Fatalf("device context changed by a checkpoint: %v", err)
	}
	// Held between contacts while its network is not accepted; once the
	// history knows the network, no longer.
	if v := observe(204, 1, cloud); v[NewDstRecurrence] != 1 {
		t.Fatalf("recurrence not held between contacts: %v", v[NewDstRecurrence])
	}
	d.History.Add(stranger)
	if v := observe(205, 1, cloud); v[NewDstRecurrence] != 0 {
		t.Fatalf("recurrence held for a host whose network the history knows: %v", v[NewDstRecurrence])
	}
}
