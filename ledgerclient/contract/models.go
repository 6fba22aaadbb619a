package contract

import (
	"fmt"
	"time"
)

// RegisterModel records a model artifact's hash. Registering the same hash
// again returns the first registration.
func RegisterModel(tx Tx, m Model) (Model, error) {
	if err := validHash("model hash", m.Hash); err != nil {
		return Model{}, err
	}
	if err := validName("profile", m.Profile); err != nil {
		return Model{}, err
	}
	old, err := getJSON[Model](tx.State, keyModel+m.Hash)
	if err != nil || old != nil {
		return deref(old), err
	}
	m.RegisteredBy, m.RegisteredAt = tx.Caller.ID, stamp(tx)
	m.PromotedBy, m.PromotedAt = "", time.Time{}
	return m, putJSON(tx.State, keyModel+m.Hash, m)
}

// PromoteModel makes a registered model the active one for its profile.
//
// Operators may promote any registered model. The service may promote only
// a model it registered itself, and only for a profile with no active model
// yet: that lets a fresh deployment bootstrap from its warm-up traffic while
// every later change of model needs an operator.
func PromoteModel(tx Tx, a HashArgs) (Model, error) {
	m, err := getJSON[Model](tx.State, keyModel+a.Hash)
	if err != nil {
		return Model{}, err
	}
	if m == nil {
		return Model{}, fmt.Errorf("%w: model %s is not registered", ErrNotFound, a.Hash)
	}
	activeKey := keyActiveModel + m.Profile
	active, err := tx.State.Get(activeKey)
	if err != nil {
		return Model{}, err
	}
	if tx.Caller.Role == RoleService && (active != nil || m.RegisteredBy != tx.Caller.ID) {
		return Model{}, fmt.Errorf("%w: the service may only bootstrap a profile's first model with one it registered", ErrForbidden)
	}
	if string(active) == m.Hash {
		return *m, nil
	}
	m.PromotedBy, m.PromotedAt = tx.Caller.ID, stamp(tx)
	if err := putJSON(tx.State, keyModel+m.Hash, m); err != nil {
		return Model{}, err
	}
	return *m, tx.State.Put(activeKey, []byte(m.Hash))
}

// GetModel returns one registered model.
func GetModel(tx Tx, a HashArgs) (Model, error) {
	m, err := getJSON[Model](tx.State, keyModel+a.Hash)
	if err != nil {
		return Model{}, err
	}
	if m == nil {
		return Model{}, fmt.Errorf("%w: model %s", ErrNotFound, a.Hash)
	}
	return *m, nil
}

// ListedModel is a registered model and whether it is its profile's
// active one.
type ListedModel struct {
	Model
	Active bool `json:"active"`
}

// ListModels returns the registered models, of one profile or of all
// (an empty profile), by hash, each marked active or not.
func ListModels(tx Tx, a ProfileArgs) ([]ListedModel, error) {
	ms, err := listJSON(tx.State, keyModel, func(m *Model) bool { return a.Profile == "" || m.Profile == a.Profile })
	if err != nil {
		return nil, err
	}
	out := make([]ListedModel, len(ms))
	active := map[string]string{}
	for i, m := range ms {
		hash, ok := active[m.Profile]
		if !ok {
			raw, err := tx.State.Get(keyActiveModel + m.Profile)
			if err != nil {
				return nil, err
			}
			hash = string(raw)
			active[m.Profile] = hash
		}
		out[i] = ListedModel{Model: m, Active: hash == m.Hash}
	}
	return out, nil
}

// GetActiveModel returns the promoted model of a profile.
func GetActiveModel(tx Tx, a ProfileArgs) (Model, error) {
	hash, err := tx.State.Get(keyActiveModel + a.Profile)
	if err != nil {
		return Model{}, err
	}
	if hash == nil {
		return Model{}, fmt.Errorf("%w: no active model for profile %q", ErrNotFound, a.Profile)
	}
	return GetModel(tx, HashArgs{Hash: string(hash)})
}
