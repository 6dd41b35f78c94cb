package swarm

import (
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/hyperfeed/hyperfeed/internal/noiseconn"
)

// PeerKey is a peer's identity: its static Noise public key.
type PeerKey [32]byte

// String returns k in hex.
func (k PeerKey) String() string { return hex.EncodeToString(k[:]) }

// MarshalText encodes k in hex.
func (k PeerKey) MarshalText() ([]byte, error) { return []byte(k.String()), nil }

// UnmarshalText decodes k from hex.
func (k *PeerKey) UnmarshalText(b []byte) error { return unhex32("peer key", k[:], b) }

// IsZero reports whether k is unset.
func (k PeerKey) IsZero() bool { return k == PeerKey{} }

// Topic is a 32-byte rendezvous name under which peers find each other: a
// feed's discovery key, or any other 32 bytes.
type Topic [32]byte

// String returns t in hex.
func (t Topic) String() string { return hex.EncodeToString(t[:]) }

// MarshalText encodes t in hex.
func (t Topic) MarshalText() ([]byte, error) { return []byte(t.String()), nil }

// UnmarshalText decodes t from hex.
func (t *Topic) UnmarshalText(b []byte) error { return unhex32("topic", t[:], b) }

// KeyPair is a peer's static key pair. The caller keeps it (see
// LoadOrCreateKeyPair), so that the peer's identity survives restarts.
type KeyPair struct {
	Private [32]byte
	Public  PeerKey
}

// GenerateKeyPair returns a fresh random key pair.
func GenerateKeyPair() (KeyPair, error) {
	kp, err := noiseconn.GenerateKeyPair()
	if err != nil {
		return KeyPair{}, err
	}
	return KeyPair{Private: kp.Private, Public: kp.Public}, nil
}

// LoadOrCreateKeyPair reads the key pair saved in file (its 32-byte private
// key), or creates one and saves it with mode 0600, creating the directory.
// The file appears whole or not at all, and of two processes creating it at
// once, both end up with the one that was saved first.
func LoadOrCreateKeyPair(file string) (KeyPair, error) {
	b, err := os.ReadFile(file)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		kp, err := GenerateKeyPair()
		if err != nil {
			return KeyPair{}, err
		}
		if err := saveKeyPair(file, kp); err != nil {
			if errors.Is(err, fs.ErrExist) {
				return LoadOrCreateKeyPair(file)
			}
			return KeyPair{}, fmt.Errorf("swarm: save key pair: %w", err)
		}
		return kp, nil
	case err != nil:
		return KeyPair{}, fmt.Errorf("swarm: load key pair: %w", err)
	case len(b) != 32:
		return KeyPair{}, fmt.Errorf("swarm: key pair file %s is %d bytes, want 32", file, len(b))
	}
	kp, err := noiseconn.KeyPairFromPrivate([32]byte(b))
	if err != nil {
		return KeyPair{}, fmt.Errorf("swarm: load key pair: %w", err)
	}
	return KeyPair{Private: kp.Private, Public: kp.Public}, nil
}

// saveKeyPair writes kp's private key to a temporary file beside file,
// syncs it, and links it into place, which fails (fs.ErrExist) if file
// appeared meanwhile.
func saveKeyPair(file string, kp KeyPair) error {
	dir := filepath.Dir(file)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, ".peer-key-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(kp.Private[:]); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Link(tmp.Name(), file)
}

func (kp KeyPair) noise() noiseconn.KeyPair {
	return noiseconn.KeyPair{Private: kp.Private, Public: kp.Public}
}

func unhex32(what string, dst, src []byte) error {
	if len(src) != 64 {
		return fmt.Errorf("swarm: %s must be 64 hex digits, got %d characters", what, len(src))
	}
	if _, err := hex.Decode(dst, src); err != nil {
		return fmt.Errorf("swarm: %s: %w", what, err)
	}
	return nil
}
