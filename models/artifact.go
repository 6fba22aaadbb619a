package models

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/chainwatch/chainwatch/models/iforest"
)

// The artifact file layout, all integers little-endian:
//
//	8  bytes  magic "\x89CWM\r\n\x1a\n" (catches text-mode mangling, as PNG's does)
//	4  bytes  format version
//	4  bytes  metadata length m, then m bytes of metadata JSON
//	4  bytes  forest length f, then f bytes of iforest encoding
//	32 bytes  SHA-256 of everything before it
//
// The trailing digest lets Load tell corruption from a foreign file; the
// SHA-256 of the whole file is the model's identity.
var magic = [8]byte{0x89, 'C', 'W', 'M', '\r', '\n', 0x1a, '\n'}

// FormatVersion is the artifact format this build writes and reads.
const FormatVersion = 1

// ErrNotModel is returned for files that are not chainwatch model artifacts.
var ErrNotModel = errors.New("not a chainwatch model artifact")

// ErrCorrupt is returned for artifacts whose bytes do not match their digest.
var ErrCorrupt = errors.New("model artifact is corrupted")

// MarshalBinary encodes the artifact. The encoding is deterministic: the same
// model always yields the same bytes and so the same hash.
func (m *Model) MarshalBinary() ([]byte, error) {
	meta, err := json.Marshal(m.Metadata)
	if err != nil {
		return nil, fmt.Errorf("models: encode metadata: %w", err)
	}
	forest, err := m.forest.MarshalBinary()
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	b.Write(magic[:])
	b.Write(binary.LittleEndian.AppendUint32(nil, FormatVersion))
	b.Write(binary.LittleEndian.AppendUint32(nil, uint32(len(meta))))
	b.Write(meta)
	b.Write(binary.LittleEndian.AppendUint32(nil, uint32(len(forest))))
	b.Write(forest)
	sum := sha256.Sum256(b.Bytes())
	b.Write(sum[:])
	whole := sha256.Sum256(b.Bytes())
	m.hash = hex.EncodeToString(whole[:])
	return b.Bytes(), nil
}

// Unmarshal decodes an artifact, refusing foreign and corrupted bytes.
func Unmarshal(b []byte) (*Model, error) {
	if len(b) < len(magic) || !bytes.Equal(b[:len(magic)], magic[:]) {
		return nil, ErrNotModel
	}
	if len(b) < len(magic)+4+4+4+sha256.Size {
		return nil, fmt.Errorf("%w: file is truncated (%d bytes)", ErrCorrupt, len(b))
	}
	body, digest := b[:len(b)-sha256.Size], b[len(b)-sha256.Size:]
	if sum := sha256.Sum256(body); !bytes.Equal(sum[:], digest) {
		return nil, fmt.Errorf("%w: content digest does not match", ErrCorrupt)
	}
	rest := body[len(magic):]
	if v := binary.LittleEndian.Uint32(rest); v != FormatVersion {
		return nil, fmt.Errorf("models: artifact format version %d, this build reads %d", v, FormatVersion)
	}
	rest = rest[4:]
	section := func(what string) ([]byte, error) {
		if len(rest) < 4 {
			return nil, fmt.Errorf("%w: %s length missing", ErrCorrupt, what)
		}
		n := int(binary.LittleEndian.Uint32(rest))
		if n > len(rest)-4 {
			return nil, fmt.Errorf("%w: %s runs past the end", ErrCorrupt, what)
		}
		s := rest[4 : 4+n]
		rest = rest[4+n:]
		return s, nil
	}
	metaBytes, err := section("metadata")
	if err != nil {
		return nil, err
	}
	forestBytes, err := section("forest")
	if err != nil {
		return nil, err
	}
	m := &Model{}
	if err := json.Unmarshal(metaBytes, &m.Metadata); err != nil {
		return nil, fmt.Errorf("%w: metadata: %v", ErrCorrupt, err)
	}
	m.forest = new(iforest.Forest)
	if err := m.forest.UnmarshalBinary(forestBytes); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	if d := m.forest.Features(); len(m.Features) != d || len(m.Baselines) != d {
		return nil, fmt.Errorf("%w: metadata names %d features and %d baselines for a forest of %d", ErrCorrupt, len(m.Features), len(m.Baselines), d)
	}
	whole := sha256.Sum256(b)
	m.hash = hex.EncodeToString(whole[:])
	return m, nil
}

// Save writes the artifact to path atomically (temporary file, fsync,
// rename), so a crash never leaves a half-written model under its name.
func (m *Model) Save(path string) error {
	b, err := m.MarshalBinary()
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".model-*")
	if err != nil {
		return fmt.Errorf("models: save: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return fmt.Errorf("models: save: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("models: save: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("models: save: %w", err)
	}
	return os.Rename(tmp.Name(), path)
}

// Load reads and checks an artifact file.
func Load(path string) (*Model, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("models: %w", err)
	}
	m, err := Unmarshal(b)
	if err != nil {
		return nil, fmt.Errorf("models: %s: %w", path, err)
	}
	return m, nil
}
