package pipeline

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/chainwatch/chainwatch/ledgerclient"
	"github.com/chainwatch/chainwatch/ledgerclient/contract"
	"github.com/chainwatch/chainwatch/models"
)

// ModelStore keeps model artifacts in a directory, named by their SHA-256,
// and loads only models whose hash is the active one on the ledger.
type ModelStore struct {
	Dir    string
	Ledger *ledgerclient.Client
}

// Path is where the artifact with the given hash lives.
func (s *ModelStore) Path(hash string) string { return filepath.Join(s.Dir, hash+".cwm") }

// Load reads the artifact with the given hash and checks that it hashes to
// it: an artifact altered after registration is refused.
func (s *ModelStore) Load(hash string) (*models.Model, error) {
	m, err := models.Load(s.Path(hash))
	if err != nil {
		return nil, err
	}
	if m.Hash() != hash {
		return nil, fmt.Errorf("artifact %s hashes to %s: altered after it was registered", s.Path(hash), m.Hash())
	}
	return m, nil
}

// Active loads the profile's active model. It returns (nil, nil) when the
// ledger has none, and an error when the ledger names one whose artifact is
// missing or does not hash to the registered value.
func (s *ModelStore) Active(ctx context.Context, profile string) (*models.Model, error) {
	rec, err := s.Ledger.GetActiveModel(ctx, profile)
	if errors.Is(err, contract.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	m, err := models.Load(s.Path(rec.Hash))
	if err != nil {
		return nil, fmt.Errorf("active model of %s: %w", profile, err)
	}
	if m.Hash() != rec.Hash {
		return nil, fmt.Errorf("active model of %s: artifact hashes to %s, ledger registers %s", profile, m.Hash(), rec.Hash)
	}
	return m, nil
}

// Bootstrap saves a freshly trained model, registers its hash on the ledger
// and promotes it as the profile's first model. When another instance won
// the race to promote, the winner's model is returned instead, if present.
func (s *ModelStore) Bootstrap(ctx context.Context, m *models.Model, trainingRefs []string) (*models.Model, error) {
	if err := os.MkdirAll(s.Dir, 0o755); err != nil {
		return nil, err
	}
	if err := m.Save(s.Path(m.Hash())); err != nil {
		return nil, err
	}
	_, err := s.Ledger.RegisterModel(ctx, contract.Model{
		Hash: m.Hash(), Profile: m.Profile, Algorithm: m.Algorithm,
		TrainingAnchors: trainingRefs, Metrics: m.Metrics,
	})
	if err != nil {
		return nil, fmt.Errorf("register model: %w", err)
	}
	if _, err := s.Ledger.PromoteModel(ctx, m.Hash()); err != nil {
		if !errors.Is(err, contract.ErrForbidden) {
			return nil, fmt.Errorf("promote model: %w", err)
		}
		active, aerr := s.Active(ctx, m.Profile)
		if aerr != nil || active == nil {
			return nil, fmt.Errorf("promote model: %w (and the active one cannot be loaded: %v)", err, aerr)
		}
		return active, nil
	}
	return m, nil
}
