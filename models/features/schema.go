package features

// Feature indices into a Vector. The order is part of every trained model's
// schema: append new features, never reorder.
const (
	Flows            = iota // flow records in the window
	BytesOut                // bytes sent by the device
	BytesIn                 // bytes received by the device
	Packets                 // packets in both directions
	DistinctDst             // distinct destination addresses
	DistinctDstPorts        // distinct destination ports
	DstPortEntropy          // Shannon entropy (bits) of destination ports over flows
	NewDstShare             // share of distinct destinations absent from the device's history
	FailedShare             // share of flows that were refused or never answered
	BytesPerPacket          // mean bytes per packet, both directions

	Count // number of features
)

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
	"new_dst_share",
	"failed_share",
	"bytes_per_packet",
}

// Vector is one device-window's features, indexed by the constants above.
type Vector [Count]float64
