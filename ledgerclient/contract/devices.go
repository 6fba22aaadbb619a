package contract

import (
	"crypto/ed25519"
	"fmt"
	"net"
	"net/netip"
	"slices"
)

func validateDevice(d *Device) error {
	if err := validName("device id", d.ID); err != nil {
		return err
	}
	if err := validName("profile", d.Profile); err != nil {
		return err
	}
	if err := validName("owner", d.Owner); err != nil {
		return err
	}
	if len(d.PublicKey) != 0 && len(d.PublicKey) != ed25519.PublicKeySize {
		return fmt.Errorf("%w: public key must be %d bytes of Ed25519, got %d", ErrInvalid, ed25519.PublicKeySize, len(d.PublicKey))
	}
	for i, m := range d.MACs {
		hw, err := net.ParseMAC(m)
		if err != nil {
			return fmt.Errorf("%w: mac %q: %v", ErrInvalid, m, err)
		}
		d.MACs[i] = hw.String() // canonical lower-case form for lookups
	}
	for i, ip := range d.IPs {
		a, err := netip.ParseAddr(ip)
		if err != nil {
			return fmt.Errorf("%w: ip %q: %v", ErrInvalid, ip, err)
		}
		d.IPs[i] = a.String()
	}
	if d.Firmware != "" {
		if err := validHash("firmware", d.Firmware); err != nil {
			return err
		}
	}
	return nil
}

// RegisterDevice records a new birth certificate. Registering an id that
// exists is refused: updates go through UpdateDevice.
func RegisterDevice(tx Tx, d Device) (Device, error) {
	if err := validateDevice(&d); err != nil {
		return Device{}, err
	}
	existing, err := getJSON[Device](tx.State, keyDevice+d.ID)
	if err != nil {
		return Device{}, err
	}
	if existing != nil {
		return Device{}, fmt.Errorf("%w: device %s is already registered", ErrConflict, d.ID)
	}
	d.Status = DeviceActive
	d.RevokedReason = ""
	d.RegisteredBy = tx.Caller.ID
	if d.Manufacturer == "" {
		d.Manufacturer = tx.Caller.ID
	}
	d.RegisteredAt = stamp(tx)
	d.UpdatedAt = d.RegisteredAt
	return d, putJSON(tx.State, keyDevice+d.ID, d)
}

// UpdateDevice replaces the mutable fields of an active device's certificate
// (owner, keys, addresses, firmware). A revoked device stays revoked.
func UpdateDevice(tx Tx, d Device) (Device, error) {
	if err := validateDevice(&d); err != nil {
		return Device{}, err
	}
	old, err := getJSON[Device](tx.State, keyDevice+d.ID)
	if err != nil {
		return Device{}, err
	}
	if old == nil {
		return Device{}, fmt.Errorf("%w: device %s", ErrNotFound, d.ID)
	}
	if old.Status == DeviceRevoked {
		return Device{}, fmt.Errorf("%w: device %s is revoked", ErrConflict, d.ID)
	}
	if d.Profile != old.Profile {
		return Device{}, fmt.Errorf("%w: a device's profile cannot change (%s → %s)", ErrInvalid, old.Profile, d.Profile)
	}
	d.Status, d.Manufacturer = old.Status, old.Manufacturer
	d.RegisteredBy, d.RegisteredAt = old.RegisteredBy, old.RegisteredAt
	d.UpdatedAt = stamp(tx)
	return d, putJSON(tx.State, keyDevice+d.ID, d)
}

// RevokeDevice marks a device revoked from a.EffectiveAt (default: now).
// Revoking twice keeps the first reason and time.
func RevokeDevice(tx Tx, a RevokeArgs) (Device, error) {
	d, err := getJSON[Device](tx.State, keyDevice+a.ID)
	if err != nil {
		return Device{}, err
	}
	if d == nil {
		return Device{}, fmt.Errorf("%w: device %s", ErrNotFound, a.ID)
	}
	if a.Reason == "" {
		return Device{}, fmt.Errorf("%w: revocation needs a reason", ErrInvalid)
	}
	if d.Status == DeviceRevoked {
		return *d, nil
	}
	d.Status, d.RevokedReason, d.UpdatedAt = DeviceRevoked, a.Reason, stamp(tx)
	d.RevokedAt = d.UpdatedAt
	if !a.EffectiveAt.IsZero() {
		d.RevokedAt = a.EffectiveAt.UTC()
	}
	return *d, putJSON(tx.State, keyDevice+d.ID, d)
}

// GetDevice returns one birth certificate.
func GetDevice(tx Tx, a IDArgs) (Device, error) {
	d, err := getJSON[Device](tx.State, keyDevice+a.ID)
	if err != nil {
		return Device{}, err
	}
	if d == nil {
		return Device{}, fmt.Errorf("%w: device %s", ErrNotFound, a.ID)
	}
	return *d, nil
}

// ListDevices returns every birth certificate, by id.
func ListDevices(tx Tx, _ struct{}) ([]Device, error) {
	return listJSON[Device](tx.State, keyDevice, nil)
}

// ApproveFirmware approves a firmware hash for a profile. Approving the same
// pair again is a no-op returning the first approval.
func ApproveFirmware(tx Tx, f Firmware) (Firmware, error) {
	if err := validName("profile", f.Profile); err != nil {
		return Firmware{}, err
	}
	if err := validHash("firmware hash", f.Hash); err != nil {
		return Firmware{}, err
	}
	key := keyFirmware + f.Profile + "/" + f.Hash
	old, err := getJSON[Firmware](tx.State, key)
	if err != nil || old != nil {
		return deref(old), err
	}
	f.ApprovedBy, f.ApprovedAt = tx.Caller.ID, stamp(tx)
	return f, putJSON(tx.State, key, f)
}

// ListFirmware returns the approved firmware of one profile, or of all
// profiles when the profile is empty.
func ListFirmware(tx Tx, a ProfileArgs) ([]Firmware, error) {
	prefix := keyFirmware
	if a.Profile != "" {
		prefix += a.Profile + "/"
	}
	out, err := listJSON[Firmware](tx.State, prefix, nil)
	slices.SortFunc(out, func(x, y Firmware) int {
		if x.Profile != y.Profile {
			return cmpString(x.Profile, y.Profile)
		}
		return cmpString(x.Hash, y.Hash)
	})
	return out, err
}

func deref[T any](p *T) T {
	if p == nil {
		var zero T
		return zero
	}
	return *p
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
