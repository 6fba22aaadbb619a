package decode

import (
	"crypto/ed25519"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"time"
)

// Envelope is a device-signed telemetry envelope on iot.telemetry (README, "Device
// telemetry"): the device signs, with the Ed25519 key of its birth
// certificate, a canonical binary encoding of everything but the signature.
type Envelope struct {
	DeviceID  string `json:"device_id"`
	Seq       uint64 `json:"seq"`     // strictly increasing per device
	TimeMs    int64  `json:"time_ms"` // Unix milliseconds
	Firmware  string `json:"firmware"`
	Payload   []byte `json:"payload"`   // base64 in JSON
	Signature []byte `json:"signature"` // base64 in JSON, 64 bytes
}

// telemetryDomain separates these signatures from any other use of the key.
const telemetryDomain = "chainwatch-telemetry-v1\x00"

// SigningBytes is the canonical encoding a device signs:
//
//	"chainwatch-telemetry-v1\x00" ‖ u16 len(device_id) ‖ device_id ‖
//	u64 seq ‖ i64 time_ms ‖ 32-byte firmware hash ‖ u32 len(payload) ‖ payload
//
// with integers big-endian. Fixed widths and explicit lengths make it
// unambiguous and easy to produce on a microcontroller.
func (t *Envelope) SigningBytes() ([]byte, error) {
	fw, err := hex.DecodeString(t.Firmware)
	if err != nil || len(fw) != 32 {
		return nil, rejectf("firmware %q is not a hex SHA-256", t.Firmware)
	}
	if len(t.DeviceID) == 0 || len(t.DeviceID) > 0xffff {
		return nil, rejectf("device_id must be 1–65535 bytes")
	}
	b := make([]byte, 0, len(telemetryDomain)+2+len(t.DeviceID)+8+8+32+4+len(t.Payload))
	b = append(b, telemetryDomain...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(t.DeviceID)))
	b = append(b, t.DeviceID...)
	b = binary.BigEndian.AppendUint64(b, t.Seq)
	b = binary.BigEndian.AppendUint64(b, uint64(t.TimeMs))
	b = append(b, fw...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(t.Payload)))
	return append(b, t.Payload...), nil
}

// Sign fills in the signature with the device's key.
func (t *Envelope) Sign(key ed25519.PrivateKey) error {
	msg, err := t.SigningBytes()
	if err != nil {
		return err
	}
	t.Signature = ed25519.Sign(key, msg)
	return nil
}

// Verify reports whether the signature is the device's over the envelope.
func (t *Envelope) Verify(pub ed25519.PublicKey) bool {
	msg, err := t.SigningBytes()
	return err == nil && len(pub) == ed25519.PublicKeySize && len(t.Signature) == ed25519.SignatureSize && ed25519.Verify(pub, msg, t.Signature)
}

// Time is the envelope's timestamp.
func (t *Envelope) Time() time.Time { return time.UnixMilli(t.TimeMs).UTC() }

// Telemetry parses an envelope and checks its form (not its
// signature, which needs the device's birth certificate).
func Telemetry(value []byte, t *Envelope) error {
	*t = Envelope{}
	if err := json.Unmarshal(value, t); err != nil {
		return rejectf("telemetry: not a JSON envelope: %v", err)
	}
	if t.TimeMs <= 0 {
		return rejectf("telemetry: time_ms missing")
	}
	if len(t.Signature) == 0 {
		return rejectf("telemetry: signature missing")
	}
	_, err := t.SigningBytes()
	return err
}
