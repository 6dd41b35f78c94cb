package usersession

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"strings"
)

// A token is
//
//	"hft1." ‖ base64url, unpadded (claims ‖ signature (64))
//	claims = identity (32) ‖ device (32) ‖ u64le login ‖ i64le issued ‖
//	         i64le expires ‖ u8 len ‖ alias
//
// and the signature is the device key's over tokenLabel ‖ claims. The
// decoding is strict (no padding, no stray bits), so a token has exactly one
// spelling.
const (
	tokenPrefix     = "hft1."
	tokenFixedSize  = 32 + 32 + 8 + 8 + 8 + 1
	tokenMaxPayload = tokenFixedSize + MaxAliasLen + ed25519.SignatureSize
)

var tokenEncoding = base64.RawURLEncoding.Strict()

// maxTokenLen bounds the string ParseToken looks at.
var maxTokenLen = len(tokenPrefix) + tokenEncoding.EncodedLen(tokenMaxPayload)

// TokenClaims is what a token says: that the device, certified for the
// identity under the alias, has the session that began with the Login entry
// at index Login of its feed. Times are Unix milliseconds.
type TokenClaims struct {
	Identity IdentityKey
	Device   DeviceKey
	Alias    string
	Login    uint64
	Issued   int64
	Expires  int64
}

// Token is a parsed token.
type Token struct {
	TokenClaims
	Signature [64]byte
	// Name is the name under which the directory lists the session: Alias if
	// the identity owns it, else alias~hex (see doc.go). Only
	// Directory.VerifyToken sets it. Authorize by Name or by Identity, never
	// by Alias, which is only what the identity claims.
	Name string
}

// IssueToken returns a token for the claims, signed with the device feed's
// secret key, which must be the key of c.Device.
func IssueToken(device ed25519.PrivateKey, c TokenClaims) (string, error) {
	if len(device) != ed25519.PrivateKeySize {
		return "", fmt.Errorf("usersession: issue token: device secret key is %d bytes, want %d", len(device), ed25519.PrivateKeySize)
	}
	if DeviceKey(device[ed25519.SeedSize:]) != c.Device {
		return "", fmt.Errorf("usersession: issue token: %w: secret key is not device %s's", ErrTokenInvalid, c.Device)
	}
	if err := c.check(); err != nil {
		return "", fmt.Errorf("usersession: issue token: %w", err)
	}
	t := Token{TokenClaims: c}
	copy(t.Signature[:], ed25519.Sign(device, t.signable()))
	return t.encode(), nil
}

// ParseToken decodes a token and checks its signature against the device
// key it names. That proves only that the device's key signed it: whether
// the device belongs to the identity, the session is still on and the
// token has not expired is for Directory.VerifyToken to say. Anything
// malformed or tampered with gives ErrTokenInvalid.
func ParseToken(s string) (*Token, error) {
	t, err := parseToken(s)
	if err != nil {
		return nil, fmt.Errorf("usersession: parse token: %w", err)
	}
	return t, nil
}

func parseToken(s string) (*Token, error) {
	if len(s) > maxTokenLen {
		return nil, fmt.Errorf("%w: %d characters, at most %d", ErrTokenInvalid, len(s), maxTokenLen)
	}
	rest, ok := strings.CutPrefix(s, tokenPrefix)
	if !ok {
		return nil, fmt.Errorf("%w: does not start with %q", ErrTokenInvalid, tokenPrefix)
	}
	b, err := tokenEncoding.DecodeString(rest)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrTokenInvalid, err)
	}
	// The decoder skips line breaks even when strict; a token has one
	// spelling, so nothing may be skipped.
	if tokenEncoding.EncodedLen(len(b)) != len(rest) {
		return nil, fmt.Errorf("%w: stray characters in base64", ErrTokenInvalid)
	}
	if len(b) < tokenFixedSize+ed25519.SignatureSize {
		return nil, fmt.Errorf("%w: %d bytes, too short", ErrTokenInvalid, len(b))
	}
	n := int(b[tokenFixedSize-1])
	if len(b) != tokenFixedSize+n+ed25519.SignatureSize {
		return nil, fmt.Errorf("%w: %d bytes, want %d for an alias of %d", ErrTokenInvalid, len(b), tokenFixedSize+n+ed25519.SignatureSize, n)
	}
	var t Token
	copy(t.Identity[:], b[0:32])
	copy(t.Device[:], b[32:64])
	t.Login = binary.LittleEndian.Uint64(b[64:])
	t.Issued = int64(binary.LittleEndian.Uint64(b[72:]))
	t.Expires = int64(binary.LittleEndian.Uint64(b[80:]))
	t.Alias = string(b[tokenFixedSize : tokenFixedSize+n])
	copy(t.Signature[:], b[tokenFixedSize+n:])
	if err := t.check(); err != nil {
		return nil, err
	}
	if !t.Device.verify(t.signable(), &t.Signature) {
		return nil, fmt.Errorf("%w: signature does not verify", ErrTokenInvalid)
	}
	return &t, nil
}

func (c *TokenClaims) check() error {
	if c.Identity.IsZero() {
		return fmt.Errorf("%w: no identity", ErrTokenInvalid)
	}
	if c.Device.IsZero() {
		return fmt.Errorf("%w: no device", ErrTokenInvalid)
	}
	if a, err := NormalizeAlias(c.Alias); err != nil {
		return fmt.Errorf("%w: %w", ErrTokenInvalid, err)
	} else if a != c.Alias {
		return fmt.Errorf("%w: alias %q is not normalized (%q)", ErrTokenInvalid, c.Alias, a)
	}
	if c.Issued < 0 || c.Expires <= c.Issued {
		return fmt.Errorf("%w: issued at %d, expires at %d", ErrTokenInvalid, c.Issued, c.Expires)
	}
	return nil
}

func (c *TokenClaims) appendClaims(b []byte) []byte {
	b = append(b, c.Identity[:]...)
	b = append(b, c.Device[:]...)
	b = binary.LittleEndian.AppendUint64(b, c.Login)
	b = binary.LittleEndian.AppendUint64(b, uint64(c.Issued))
	b = binary.LittleEndian.AppendUint64(b, uint64(c.Expires))
	return appendString8(b, c.Alias)
}

// signable is what the device signs: tokenLabel ‖ claims.
func (c *TokenClaims) signable() []byte {
	return c.appendClaims(append(make([]byte, 0, len(tokenLabel)+tokenFixedSize+len(c.Alias)), tokenLabel...))
}

func (t *Token) encode() string {
	b := t.appendClaims(make([]byte, 0, tokenMaxPayload))
	b = append(b, t.Signature[:]...)
	return tokenPrefix + tokenEncoding.EncodeToString(b)
}
