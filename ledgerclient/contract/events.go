package contract

// Event names emitted by committed transactions.
const (
	EventDeviceChanged    = "device.changed"
	EventFirmwareApproved = "firmware.approved"
	EventAlertRecorded    = "alert.recorded"
	EventAlertVerdict     = "alert.verdict"
	EventModelRegistered  = "model.registered"
	EventModelPromoted    = "model.promoted"
	EventBatchAnchored    = "batch.anchored"
	EventBatchesAnchored  = "batches.anchored"
	EventBatchesSealed    = "batches.sealed"
)

// EventFor names the event a committed call of fn emits, with its JSON result
// as payload; "" for functions that emit none. Both hosts use it, so
// subscribers see the same events from either.
func EventFor(fn string) string {
	switch fn {
	case FnRegisterDevice, FnUpdateDevice, FnRevokeDevice:
		return EventDeviceChanged
	case FnApproveFirmware:
		return EventFirmwareApproved
	case FnRecordAlert:
		return EventAlertRecorded
	case FnSetVerdict:
		return EventAlertVerdict
	case FnRegisterModel:
		return EventModelRegistered
	case FnPromoteModel:
		return EventModelPromoted
	case FnAnchorBatch:
		return EventBatchAnchored
	case FnAnchorBatches:
		return EventBatchesAnchored
	case FnSealBatches:
		return EventBatchesSealed
	}
	return ""
}
