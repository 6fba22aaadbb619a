package pipeline

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync"

	"github.com/chainwatch/chainwatch/ledgerclient"
	"github.com/chainwatch/chainwatch/ledgerclient/contract"
	"github.com/chainwatch/chainwatch/pipeline/decode"
)

// SnapshotRegistry loads every device and approved firmware from the ledger
// once, without following later changes: what a command reading history
// needs.
func SnapshotRegistry(ctx context.Context, ledger *ledgerclient.Client) (*Registry, error) {
	r := &Registry{byID: map[string]*contract.Device{}, byMAC: map[string]*contract.Device{}, byIP: map[string]*contract.Device{}, firmware: map[string]map[string]bool{}}
	devices, err := ledger.ListDevices(ctx)
	if err != nil {
		return nil, fmt.Errorf("device registry: %w", err)
	}
	for i := range devices {
		r.put(&devices[i])
	}
	approved, err := ledger.ListFirmware(ctx, "")
	if err != nil {
		return nil, fmt.Errorf("device registry: %w", err)
	}
	for _, f := range approved {
		r.approve(f)
	}
	return r, nil
}

// Registry is the stages' cached view of the devices' birth certificates on
// the ledger, indexed by id, MAC and IP. It follows the ledger's
// device.changed events, so a registration or revocation takes effect
// without a restart.
type Registry struct {
	mu       sync.RWMutex
	byID     map[string]*contract.Device
	byMAC    map[string]*contract.Device
	byIP     map[string]*contract.Device
	firmware map[string]map[string]bool // profile → approved firmware hashes
}

// NewRegistry loads every device from the ledger and keeps following it
// until ctx ends.
func NewRegistry(ctx context.Context, ledger *ledgerclient.Client, log *slog.Logger) (*Registry, error) {
	// Subscribe first so that no change slips between the listing and the feed.
	events, err := ledger.Backend.Subscribe(ctx)
	if err != nil {
		return nil, fmt.Errorf("device registry: subscribe: %w", err)
	}
	r, err := SnapshotRegistry(ctx, ledger)
	if err != nil {
		return nil, err
	}
	go func() {
		for ev := range events {
			switch ev.Name {
			case contract.EventDeviceChanged:
				var d contract.Device
				if err := json.Unmarshal(ev.Payload, &d); err != nil {
					log.Warn("device registry: undecodable device event", "tx", ev.TxID, "err", err)
					continue
				}
				r.put(&d)
			case contract.EventFirmwareApproved:
				var f contract.Firmware
				if err := json.Unmarshal(ev.Payload, &f); err != nil {
					log.Warn("device registry: undecodable firmware event", "tx", ev.TxID, "err", err)
					continue
				}
				r.approve(f)
			}
		}
	}()
	return r, nil
}

func (r *Registry) put(d *contract.Device) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if old := r.byID[d.ID]; old != nil {
		for _, m := range old.MACs {
			delete(r.byMAC, m)
		}
		for _, ip := range old.IPs {
			delete(r.byIP, ip)
		}
	}
	r.byID[d.ID] = d
	for _, m := range d.MACs {
		r.byMAC[m] = d
	}
	for _, ip := range d.IPs {
		r.byIP[ip] = d
	}
}

func (r *Registry) approve(f contract.Firmware) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.firmware[f.Profile] == nil {
		r.firmware[f.Profile] = map[string]bool{}
	}
	r.firmware[f.Profile][f.Hash] = true
}

// FirmwareApproved reports whether an operator approved the firmware hash
// for the profile.
func (r *Registry) FirmwareApproved(profile, hash string) bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.firmware[profile][hash]
}

// Device returns a birth certificate by id, or nil.
func (r *Registry) Device(id string) *contract.Device {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.byID[id]
}

// Resolve finds the device a flow record belongs to: by the record's device
// id, else by source MAC, else by source IP. It returns nil for a device the
// ledger does not know.
func (r *Registry) Resolve(rec *decode.FlowRecord) *contract.Device {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if rec.DeviceID != "" {
		return r.byID[rec.DeviceID]
	}
	if rec.SrcMAC != "" {
		if d := r.byMAC[rec.SrcMAC]; d != nil {
			return d
		}
	}
	if rec.SrcIP.IsValid() {
		return r.byIP[rec.SrcIP.String()]
	}
	return nil
}

// ResolveDestination finds a registered device at a flow's destination, by
// MAC then IP; nil when the destination is no device.
func (r *Registry) ResolveDestination(rec *decode.FlowRecord) *contract.Device {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if rec.DstMAC != "" {
		if d := r.byMAC[rec.DstMAC]; d != nil {
			return d
		}
	}
	if rec.DstIP.IsValid() {
		return r.byIP[rec.DstIP.String()]
	}
	return nil
}

// Len is the number of known devices.
func (r *Registry) Len() int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return len(r.byID)
}
