package usersession

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestNormalizeAlias(t *testing.T) {
	for in, want := range map[string]string{
		"bob":                   "bob",
		"Bob":                   "bob",
		"ALICE.Smith_2-x":       "alice.smith_2-x",
		"0day":                  "0day",
		"a":                     "a",
		strings.Repeat("Z", 32): strings.Repeat("z", 32),
		"x.":                    "x.",
		"9-":                    "9-",
	} {
		got, err := NormalizeAlias(in)
		require.NoError(t, err, "%q", in)
		require.Equal(t, want, got, "%q", in)
	}
}

func TestNormalizeAliasRefuses(t *testing.T) {
	for in, reason := range map[string]string{
		"":                      "alias is empty",
		strings.Repeat("a", 33): "33 bytes, at most 32",
		"x y":                   `alias "x y": space not allowed`,
		" bob":                  "space not allowed",
		".bob":                  "must start with a letter or digit",
		"_bob":                  "must start with a letter or digit",
		"-bob":                  "must start with a letter or digit",
		"bob~1234abcd":          "'~' is reserved",
		"bob@home":              `character '@' not allowed`,
		"bob\x00":               `character '\x00' not allowed`,
		"bo\tb":                 `character '\t' not allowed`,
		"\u212aelvin":           "only ASCII", // Kelvin sign, which Unicode lower-cases to 'k'
		"kelvin\u0130":          "only ASCII",
		"ｂｏｂ":                   "only ASCII", // full-width
		"bob\xff":               "only ASCII",
	} {
		_, err := NormalizeAlias(in)
		require.ErrorIs(t, err, ErrInvalidAlias, "%q", in)
		require.ErrorContains(t, err, reason, "%q", in)
	}
}

func TestNormalizeAliasShortensHugeInput(t *testing.T) {
	_, err := NormalizeAlias(strings.Repeat("a", 1<<20))
	require.ErrorIs(t, err, ErrInvalidAlias)
	require.Less(t, len(err.Error()), 200)
}

func TestParseName(t *testing.T) {
	id := IdentityKey{0xAB, 0xCD, 0xEF, 0x01}
	short := contestedName("bob", id, false)
	long := contestedName("bob", id, true)
	require.Equal(t, "bob~abcdef01", short)
	require.Equal(t, "bob~"+id.String(), long)

	for in, want := range map[string]string{
		"Bob":                                 "bob",
		"bob~ABCDEF01":                        short,
		"BOB~abcdef01":                        short,
		"bob~" + id.String():                  long,
		"bob~" + strings.ToUpper(id.String()): long,
	} {
		name, alias, err := parseName(in)
		require.NoError(t, err, "%q", in)
		require.Equal(t, want, name, "%q", in)
		require.Equal(t, "bob", alias, "%q", in)
	}
	for _, in := range []string{"", "~abcdef01", "bob~", "bob~abcdef0", "bob~abcdef012", "bob~abcdefgh", "bob~abcdef01~abcdef01", "b b~abcdef01", "bob~\u212a" + "bcdef01"} {
		_, _, err := parseName(in)
		require.ErrorIs(t, err, ErrInvalidAlias, "%q", in)
	}
}
