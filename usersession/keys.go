package usersession

import (
	"crypto/ed25519"
	"encoding/hex"
	"fmt"
)

// IdentityKey is a user's public key: the Ed25519 key that signs the user's
// certificates and unregister entries. It is the user's identity; an alias
// is only a name that the identity claims.
type IdentityKey [32]byte

// DeviceKey is a device's key: the key of the device's feed (a feed.Key), the
// Ed25519 key that signs the feed's heads and the device's tokens. It
// converts to and from feed.Key directly: DeviceKey(f.Key()),
// feed.Key(dev).
type DeviceKey [32]byte

// ParseIdentityKey decodes an IdentityKey from 64 hex digits.
func ParseIdentityKey(s string) (IdentityKey, error) {
	var k IdentityKey
	return k, k.UnmarshalText([]byte(s))
}

// ParseDeviceKey decodes a DeviceKey from 64 hex digits.
func ParseDeviceKey(s string) (DeviceKey, error) {
	var k DeviceKey
	return k, k.UnmarshalText([]byte(s))
}

// IsZero reports whether k is unset.
func (k IdentityKey) IsZero() bool { return k == IdentityKey{} }

// String returns k in hex.
func (k IdentityKey) String() string { return hex.EncodeToString(k[:]) }

// MarshalText encodes k in hex.
func (k IdentityKey) MarshalText() ([]byte, error) { return []byte(k.String()), nil }

// UnmarshalText decodes k from hex.
func (k *IdentityKey) UnmarshalText(b []byte) error { return unhex32("identity key", k[:], b) }

// verify reports whether sig is k's signature of msg. A k that is not a
// valid Ed25519 point verifies nothing.
func (k IdentityKey) verify(msg []byte, sig *[64]byte) bool {
	return ed25519.Verify(k[:], msg, sig[:])
}

// IsZero reports whether k is unset.
func (k DeviceKey) IsZero() bool { return k == DeviceKey{} }

// String returns k in hex.
func (k DeviceKey) String() string { return hex.EncodeToString(k[:]) }

// MarshalText encodes k in hex.
func (k DeviceKey) MarshalText() ([]byte, error) { return []byte(k.String()), nil }

// UnmarshalText decodes k from hex.
func (k *DeviceKey) UnmarshalText(b []byte) error { return unhex32("device key", k[:], b) }

func (k DeviceKey) verify(msg []byte, sig *[64]byte) bool {
	return ed25519.Verify(k[:], msg, sig[:])
}

func unhex32(what string, dst, src []byte) error {
	if len(src) != 64 {
		return fmt.Errorf("usersession: %s must be 64 hex digits, got %d characters", what, len(src))
	}
	// Decode aside, so that a failure leaves the key as it was.
	var k [32]byte
	if _, err := hex.Decode(k[:], src); err != nil {
		return fmt.Errorf("usersession: %s: %w", what, err)
	}
	copy(dst, k[:])
	return nil
}
