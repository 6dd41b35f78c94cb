package feed

import (
	"crypto/ed25519"
	"encoding/hex"
	"fmt"

	"github.com/hyperfeed/hyperfeed/merkle"
)

// Key is a feed's public key: the Ed25519 key that signs its heads. Whoever
// knows it can read and verify the feed.
type Key [32]byte

// DiscoveryKey is a feed's public name, derived from its Key. Peers announce
// and look feeds up by it without revealing the Key.
type DiscoveryKey [32]byte

// ParseKey decodes a Key from 64 hex digits.
func ParseKey(s string) (Key, error) {
	var k Key
	return k, k.UnmarshalText([]byte(s))
}

// KeyOf returns the Key of a secret key.
func KeyOf(sk ed25519.PrivateKey) Key {
	var k Key
	copy(k[:], sk.Public().(ed25519.PublicKey))
	return k
}

// DiscoveryKey returns the feed's discovery key.
func (k Key) DiscoveryKey() DiscoveryKey { return DiscoveryKey(merkle.DiscoveryKey(k)) }

// IsZero reports whether k is unset.
func (k Key) IsZero() bool { return k == Key{} }

// String returns k in hex.
func (k Key) String() string { return hex.EncodeToString(k[:]) }

// MarshalText encodes k in hex.
func (k Key) MarshalText() ([]byte, error) { return []byte(k.String()), nil }

// UnmarshalText decodes k from hex.
func (k *Key) UnmarshalText(b []byte) error { return unhex32("key", k[:], b) }

// String returns d in hex.
func (d DiscoveryKey) String() string { return hex.EncodeToString(d[:]) }

// MarshalText encodes d in hex.
func (d DiscoveryKey) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// UnmarshalText decodes d from hex.
func (d *DiscoveryKey) UnmarshalText(b []byte) error { return unhex32("discovery key", d[:], b) }

func unhex32(what string, dst, src []byte) error {
	if len(src) != 64 {
		return fmt.Errorf("feed: %s must be 64 hex digits, got %d characters", what, len(src))
	}
	if _, err := hex.Decode(dst, src); err != nil {
		return fmt.Errorf("feed: %s: %w", what, err)
	}
	return nil
}
