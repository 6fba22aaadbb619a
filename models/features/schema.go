package features

// SchemaVersion identifies the feature schema: the names, their order and
// how each is computed. Model artifacts record it, and a model trained on
// another schema is refused rather than fed vectors it does not know.
//
// Version 1 had ten per-window features on raw scales. Version 2 adds time
// context (windows with first contacts over the last hour, recurring contact with newly
// seen hosts, internal fan-out, small-packet flows) and records how each
// feature is scaled before it is compared with a baseline (Scales).
//
// new_dst_recurrence has since been held between the contacts of a host the
// device's history has not accepted (Device.Observe) without a new version:
// training learns every window's destinations, so no training window holds,
// and a model of version 2 was trained on exactly what this build computes.
// Nor does it count, under a model, a host the model's profile shares
// (Peers): training computes its windows with no model, as before.
//
// Version 3 adds new_dst_ports: the service ports a device used that
// neither its own history of normal windows nor its profile knows.
//
// Version 4 knows a destination on the internet by its network (its /24,
// or /48 for IPv6: its peer, decode.PeerKey) rather than its address: an
// address of a network the device's history or its profile knows is no
// new host (new_dst, new_internal_dst, first contacts), as a
// load-balanced cloud endpoint reached at another address is not.
// distinct_dst still counts addresses, and new_dst_recurrence still
// follows a first-contacted address. Hosts of the device's site are
// their own peers, and the site counts the device's own /24 (/48 for
// IPv6) as well as private address space (decode.OnSite): on a site whose
// devices have global addresses, fan-out across it is new_internal_dst.
const SchemaVersion = 4

// Feature indices into a Vector. The order is part of every trained model's
// schema: change it only with a new SchemaVersion.
const (
	Flows                 = iota // flow records the device initiated in the window
	BytesOut                     // bytes sent by the device
	BytesIn                      // bytes received by the device
	Packets                      // packets in both directions
	DistinctDst                  // distinct destination addresses
	DistinctDstPorts             // distinct destination ports
	DstPortEntropy               // Shannon entropy (bits) of destination ports over flows
	NewDst                       // distinct destinations absent from the device's history of normal windows
	NewInternalDst               // of those, hosts of the device's site: private, link-local or loopback, or in its own /24 or /48 (lateral fan-out)
	FailedFlows                  // flows refused or never answered
	SmallPacketFlows             // flows whose packets average under SmallPacketBytes (floods, scans)
	BytesPerPacket               // mean bytes per packet, both directions
	FirstContactWindows1h        // windows in which the device first contacted a host it never saw before, damped over about an hour (slow fan-out; a burst in one window counts once, new_dst sees its size)
	NewDstRecurrence             // windows, within the last hour, in which a host first contacted in that hour was contacted again (beacons); held between contacts of a host the history has not accepted
	NewDstPorts                  // distinct destination ports absent from the device's history of normal windows and from its profile's shared ports (a service the device never uses: C2 on an odd port, remote-access probes)

	Count // number of features
)

// SmallPacketBytes is the mean packet size under which a flow counts as a
// small-packet flow: below a TCP segment with a few bytes of payload.
const SmallPacketBytes = 100

// Names are the feature names in Vector order, as they appear in model
// artifacts, alerts and CSV exports.
var Names = [Count]string{
	"flows",
	"bytes_out",
	"bytes_in",
	"packets",
	"distinct_dst",
	"distinct_dst_ports",
	"dst_port_entropy",
	"new_dst",
	"new_internal_dst",
	"failed_flows",
	"small_packet_flows",
	"bytes_per_packet",
	"first_contact_windows_1h",
	"new_dst_recurrence",
	"new_dst_ports",
}

// Scale says how a feature is put on a scale where a baseline's spread
// means the same at every level of the feature.
type Scale uint8

const (
	// ScaleCount is for counts of events: Anscombe's transform
	// 2√(x + 3/8) makes a Poisson count's variance ≈ 1 whatever its mean
	// (Anscombe, Biometrika 35, 1948), so that 8 flows where 2 are usual
	// stand out as much as 80 where 20 are.
	ScaleCount Scale = iota
	// ScaleLog is for volumes: ln(1 + x), so that deviations are ratios
	// (twice the bytes is the same step at any level).
	ScaleLog
	// ScaleEntropy is for an entropy H in bits: 2^H is the effective
	// number of equally used values (the perplexity), a count, so it is
	// scaled as one after subtracting the first: 2√(2^H − 1 + 3/8). On the
	// bits themselves, a window of two flows to two ports (1 bit) looks as
	// far from a device's usual single port (0 bits) as a scan does.
	ScaleEntropy
)

// Spec says how a feature is scaled. Every feature is judged upwards only
// (more than the device's usual): less traffic, fewer peers or smaller
// packets are no attack of their own — a small-packet flood shows in
// small_packet_flows and flows — and judging both ways doubled the false
// alerts of windows that merely held fewer flows than usual.
type Spec struct {
	Scale Scale
	// Damped marks a feature that carries past windows (a count damped
	// over about an hour): its value in a window is not that window's
	// evidence alone.
	Damped bool
	// PerFlow marks a mean over the window's flows: its spread from
	// window to window shrinks as 1/flows (the standard error of a mean),
	// so a window of fewer flows than its device's usual is less certain
	// (models.DeviceBaseline.Flows).
	PerFlow bool
}

// Specs are the features' scales and directions, in Vector order.
var Specs = [Count]Spec{
	Flows:                 {Scale: ScaleCount},
	BytesOut:              {Scale: ScaleLog},
	BytesIn:               {Scale: ScaleLog},
	Packets:               {Scale: ScaleCount},
	DistinctDst:           {Scale: ScaleCount},
	DistinctDstPorts:      {Scale: ScaleCount},
	DstPortEntropy:        {Scale: ScaleEntropy},
	NewDst:                {Scale: ScaleCount},
	NewInternalDst:        {Scale: ScaleCount},
	FailedFlows:           {Scale: ScaleCount},
	SmallPacketFlows:      {Scale: ScaleCount},
	BytesPerPacket:        {Scale: ScaleLog, PerFlow: true},
	FirstContactWindows1h: {Scale: ScaleCount, Damped: true},
	NewDstRecurrence:      {Scale: ScaleCount},
	NewDstPorts:           {Scale: ScaleCount},
}

// Vector is one device-window's features, indexed by the constants above.
type Vector [Count]float64
