package pipeline

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"

	"github.com/chainwatch/chainwatch/ledgerclient"
	"github.com/chainwatch/chainwatch/ledgerclient/contract"
	"github.com/chainwatch/chainwatch/models"
)

// ModelStore keeps model artifacts in a directory, named by their SHA-256,
// and loads only models whose hash is the active one on the ledger.
//
// With a Share, artifacts travel between the instances of a consumer
// group: every artifact this store saves or loads is put there, and one
// missing from Dir is fetched from there (and kept in Dir). The hash check
// is the same whichever way an artifact came.
type ModelStore struct {
	Dir    string
	Ledger *ledgerclient.Client
	Share  ArtifactShare // nil: Dir only

	mu     sync.Mutex
	shared map[string]bool // hashes known to be in Share
}

// ArtifactShare carries model artifacts between instances (ModelTopic).
type ArtifactShare interface {
	Put(ctx context.Context, hash string, artifact []byte) error
	// Get returns the artifact's bytes, or an error wrapping
	// ErrArtifactMissing when the share has none.
	Get(ctx context.Context, hash string) ([]byte, error)
}

// ErrArtifactMissing is a model whose artifact is in neither the model
// directory nor the share (yet).
var ErrArtifactMissing = errors.New("model artifact not found")

// Path is where the artifact with the given hash lives.
func (s *ModelStore) Path(hash string) string { return filepath.Join(s.Dir, hash+".cwm") }

// Load reads the artifact with the given hash and checks that it hashes to
// it: an artifact altered after registration is refused. One missing from
// the directory is fetched from the share; one found there is put in the
// share if it is not known to be there, so that an artifact registered
// while no broker was reachable reaches the other instances once an
// instance holding it loads it. An error wraps ErrArtifactMissing when no
// copy exists.
func (s *ModelStore) Load(ctx context.Context, hash string) (*models.Model, error) {
	b, err := os.ReadFile(s.Path(hash))
	fetched := false
	if errors.Is(err, fs.ErrNotExist) {
		if s.Share == nil {
			return nil, fmt.Errorf("%w: %s", ErrArtifactMissing, s.Path(hash))
		}
		b, err = s.Share.Get(ctx, hash)
		if err != nil {
			return nil, fmt.Errorf("%s is not in %s: %w", hash, s.Dir, err)
		}
		fetched = true
	} else if err != nil {
		return nil, fmt.Errorf("models: %w", err)
	}
	m, err := models.Unmarshal(b)
	if err != nil {
		return nil, fmt.Errorf("models: artifact %s: %w", hash, err)
	}
	if m.Hash() != hash {
		return nil, fmt.Errorf("artifact %s hashes to %s: altered after it was registered", s.Path(hash), m.Hash())
	}
	if fetched {
		if err := os.MkdirAll(s.Dir, 0o755); err != nil {
			return nil, err
		}
		if err := m.Save(s.Path(hash)); err != nil {
			return nil, err
		}
		s.markShared(hash)
	} else if s.Share != nil && !s.isShared(hash) {
		if err := s.Share.Put(ctx, hash, b); err == nil {
			s.markShared(hash)
		}
	}
	return m, nil
}

// Save writes a model into the directory and the share.
func (s *ModelStore) Save(ctx context.Context, m *models.Model) error {
	if err := os.MkdirAll(s.Dir, 0o755); err != nil {
		return err
	}
	if err := m.Save(s.Path(m.Hash())); err != nil {
		return err
	}
	if s.Share == nil {
		return nil
	}
	b, err := m.MarshalBinary()
	if err != nil {
		return err
	}
	if err := s.Share.Put(ctx, m.Hash(), b); err != nil {
		return err
	}
	s.markShared(m.Hash())
	return nil
}

func (s *ModelStore) isShared(hash string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.shared[hash]
}

func (s *ModelStore) markShared(hash string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.shared == nil {
		s.shared = map[string]bool{}
	}
	s.shared[hash] = true
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
	m, err := s.Load(ctx, rec.Hash)
	if err != nil {
		return nil, fmt.Errorf("active model of %s: %w", profile, err)
	}
	return m, nil
}

// Bootstrap saves a freshly trained model, registers its hash on the ledger
// and promotes it as the profile's first model. When another instance won
// the race to promote, the winner's model is returned instead, if present.
func (s *ModelStore) Bootstrap(ctx context.Context, m *models.Model, trainingRefs []string) (*models.Model, error) {
	if err := s.Save(ctx, m); err != nil {
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
