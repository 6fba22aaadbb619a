package pipeline

import (
	"errors"
	"fmt"

	"github.com/chainwatch/chainwatch/models"
	"github.com/chainwatch/chainwatch/pipeline/incidents"
)

// deviceCheckpointVersion heads a device's checkpoint in the state store:
//
//	1 byte  version (12)
//	…       features.Device encoding (destination history, recent first contacts)
//	…       models.DeviceBaseline encoding
//	…       incidents.State encoding
//
// A checkpoint written before version 2 is a bare destination history;
// it restores the history and leaves the baseline to start afresh.
// Version 3 added the incident state's elevated windows (2 bytes), version
// 4 its persistent windows (2 bytes), version 5 its count of quiet windows
// (2 bytes), version 6 the gaps between the recent hosts' contacts and a
// young device's settled windows to the features' encoding (20 bytes; the
// features' length is what the other parts leave, so version 5's shorter
// one reads with both 0), version 7 the incident state's evidence of its
// last windows (16 bytes), version 8 the port history (feature schema 3:
// the features' encoding grew, and so did the baseline, by a feature). A
// baseline of a checkpoint before version 8 is of feature schema 2, which
// no model this build loads was trained on: the device's baseline starts
// afresh, from its training's or its profile's. Version 9 knows
// destinations as feature schema 4 does (an internet host by its
// network), and the features' encoding grew by the recent hosts' peers
// (32 bytes); a checkpoint before it restores no destination history —
// the device shows its peers again before one counts as new
// (features.Device.ForgetPeers) — nor its baseline, which was of schema
// 3's features. Version 10 added the baseline's shares of elevated and
// persistent windows (8 bytes, models.DeviceBaseline.Elevated and
// .Persistent); a version 9 baseline restores with none, and learns them
// again. Version 11 added the baseline's mean flows a window (4 bytes,
// models.DeviceBaseline.Flows); a version 10 baseline restores with none,
// and its next learnt window sets it. Version 12 added the baseline's
// trends (60 bytes, models.DeviceBaseline.Trend); a version 11 baseline
// restores with a flat forecast, and learns its trends again.
const deviceCheckpointVersion = 12

func marshalDevice(d *deviceState) []byte {
	feat, _ := d.feat.MarshalBinary()
	base, _ := d.baseline.MarshalBinary()
	inc, _ := d.incident.MarshalBinary()
	b := make([]byte, 0, 1+len(feat)+len(base)+len(inc))
	b = append(b, deviceCheckpointVersion)
	b = append(b, feat...)
	b = append(b, base...)
	return append(b, inc...)
}

func unmarshalDevice(b []byte, d *deviceState) error {
	if len(b) == 0 {
		return errors.New("empty device checkpoint")
	}
	incSize, baseSize := incidents.EncodingSize, models.DeviceBaselineEncodingSize
	switch {
	case b[0] < 8: // feature schema 2: a feature fewer
		baseSize = models.DeviceBaselineEncodingSizeV2
	case b[0] < 10: // before the shares of raised windows
		baseSize = models.DeviceBaselineEncodingSizeV4
	case b[0] < 11: // before the mean flows
		baseSize = models.DeviceBaselineEncodingSizeV4Shares
	case b[0] < deviceCheckpointVersion: // before the trends
		baseSize = models.DeviceBaselineEncodingSizeV4Flows
	}
	switch b[0] {
	case deviceCheckpointVersion, 11, 10, 9, 8, 7:
	case 6, 5:
		incSize = incidents.EncodingSizeV4
	case 4:
		incSize = incidents.EncodingSizeV3
	case 3:
		incSize = incidents.EncodingSizeV2
	case 2:
		incSize = incidents.EncodingSizeV1
	default: // a bare history, keyed by address: nothing to restore
		return nil
	}
	n := len(b) - 1 - baseSize - incSize
	if n <= 0 {
		return fmt.Errorf("device checkpoint of %d bytes is damaged", len(b))
	}
	rest := b[1:]
	if err := d.feat.UnmarshalBinary(rest[:n]); err != nil {
		return err
	}
	if b[0] < 9 {
		d.feat.ForgetPeers()
	}
	rest = rest[n:]
	if b[0] >= 9 {
		if err := d.baseline.UnmarshalBinary(rest[:baseSize]); err != nil {
			return err
		}
	}
	return d.incident.UnmarshalBinary(rest[baseSize:])
}
