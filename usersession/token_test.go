package usersession

import (
	"bytes"
	"crypto/ed25519"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func testDeviceKey(n byte) (ed25519.PrivateKey, DeviceKey) {
	sk := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{0x40 | n}, ed25519.SeedSize))
	return sk, DeviceKey(sk[ed25519.SeedSize:])
}

func testClaims(dev DeviceKey) TokenClaims {
	return TokenClaims{
		Identity: testIdentity(1).Key(),
		Device:   dev,
		Alias:    "bob",
		Login:    1,
		Issued:   1_700_000_000_000,
		Expires:  1_700_000_060_000,
	}
}

func TestTokenRoundTrip(t *testing.T) {
	sk, dev := testDeviceKey(1)
	c := testClaims(dev)
	s, err := IssueToken(sk, c)
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(s, "hft1."))
	require.NotContains(t, s, "=")

	tok, err := ParseToken(s)
	require.NoError(t, err)
	require.Equal(t, c, tok.TokenClaims)
	require.Empty(t, tok.Name, "only VerifyToken names the session")
	require.Equal(t, s, tok.encode())

	// Deterministic: Ed25519 signatures are.
	again, err := IssueToken(sk, c)
	require.NoError(t, err)
	require.Equal(t, s, again)
}

func TestTokenLayoutIsPinned(t *testing.T) {
	sk, dev := testDeviceKey(1)
	c := testClaims(dev)
	s, err := IssueToken(sk, c)
	require.NoError(t, err)
	b, err := tokenEncoding.DecodeString(strings.TrimPrefix(s, "hft1."))
	require.NoError(t, err)
	require.Len(t, b, 32+32+8+8+8+1+3+64)
	require.Equal(t, c.Identity[:], b[:32])
	require.Equal(t, dev[:], b[32:64])
	require.Equal(t, []byte{1, 0, 0, 0, 0, 0, 0, 0}, b[64:72])
	require.Equal(t, []byte{3, 'b', 'o', 'b'}, b[88:92])
	msg := append([]byte("hyperfeed/usersession/token/v1\x00"), b[:92]...)
	require.True(t, ed25519.Verify(dev[:], msg, b[92:]))
}

func TestIssueTokenRefuses(t *testing.T) {
	sk, dev := testDeviceKey(1)
	_, other := testDeviceKey(2)
	bad := map[string]func(c *TokenClaims){
		"other device":       func(c *TokenClaims) { c.Device = other },
		"no identity":        func(c *TokenClaims) { c.Identity = IdentityKey{} },
		"alias upper case":   func(c *TokenClaims) { c.Alias = "Bob" },
		"alias invalid":      func(c *TokenClaims) { c.Alias = "bob~1" },
		"alias empty":        func(c *TokenClaims) { c.Alias = "" },
		"expires at issue":   func(c *TokenClaims) { c.Expires = c.Issued },
		"expires before":     func(c *TokenClaims) { c.Expires = c.Issued - 1 },
		"issued before 1970": func(c *TokenClaims) { c.Issued = -10 },
	}
	for name, edit := range bad {
		c := testClaims(dev)
		edit(&c)
		_, err := IssueToken(sk, c)
		require.ErrorIs(t, err, ErrTokenInvalid, name)
	}
	_, err := IssueToken(sk[:10], testClaims(dev))
	require.Error(t, err)
}

func TestParseTokenRefuses(t *testing.T) {
	sk, dev := testDeviceKey(1)
	s, err := IssueToken(sk, testClaims(dev))
	require.NoError(t, err)
	payload, err := tokenEncoding.DecodeString(strings.TrimPrefix(s, "hft1."))
	require.NoError(t, err)

	// Every bit of the payload matters.
	for i := range payload {
		for _, bit := range []byte{0x01, 0x80} {
			p := bytes.Clone(payload)
			p[i] ^= bit
			_, err := ParseToken("hft1." + tokenEncoding.EncodeToString(p))
			require.ErrorIs(t, err, ErrTokenInvalid, "byte %d bit %#x", i, bit)
		}
	}
	bad := map[string]string{
		"empty":          "",
		"prefix only":    "hft1.",
		"other version":  "hft2." + s[5:],
		"no prefix":      s[5:],
		"padded":         s + "==",
		"std alphabet":   strings.NewReplacer("-", "+", "_", "/").Replace(s) + "+",
		"truncated":      s[:len(s)-1],
		"extended":       s + "A",
		"space":          s + " ",
		"newline inside": s[:20] + "\n" + s[20:],
		"huge":           "hft1." + strings.Repeat("A", 1<<16),
		"other signer":   reSign(t, payload, 2),
		"alias length":   "hft1." + tokenEncoding.EncodeToString(append(bytes.Clone(payload[:88]), append([]byte{40}, payload[89:]...)...)),
	}
	for name, tok := range bad {
		_, err := ParseToken(tok)
		require.ErrorIs(t, err, ErrTokenInvalid, name)
	}
}

// reSign replaces the token's signature with one by another device key,
// leaving the claims naming the first.
func reSign(t *testing.T, payload []byte, n byte) string {
	t.Helper()
	sk, _ := testDeviceKey(n)
	claims := payload[:len(payload)-64]
	sig := ed25519.Sign(sk, append([]byte(tokenLabel), claims...))
	return "hft1." + tokenEncoding.EncodeToString(append(bytes.Clone(claims), sig...))
}

func FuzzParseToken(f *testing.F) {
	sk, dev := testDeviceKey(1)
	s, err := IssueToken(sk, testClaims(dev))
	require.NoError(f, err)
	f.Add(s)
	f.Add("hft1.")
	f.Add("hft1.AAAA")
	f.Add(s[:len(s)-3])
	f.Fuzz(func(t *testing.T, s string) {
		tok, err := ParseToken(s)
		if err != nil {
			require.ErrorIs(t, err, ErrTokenInvalid)
			require.Nil(t, tok)
			return
		}
		// A token has one spelling, and its claims would be issued as is.
		require.Equal(t, s, tok.encode())
		require.NoError(t, tok.check())
	})
}
