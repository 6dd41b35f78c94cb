package usersession

import (
	"fmt"
	"strings"
)

// MaxAliasLen is the longest alias, in bytes.
const MaxAliasLen = 32

// Names shown for identities that lost an alias: alias~ and the first
// shortSuffix hex digits of the identity key, or all of them when two losers
// of one alias share those first digits (grinding a key to match 32 bits of
// another's is cheap, so the short form cannot be trusted to be unique).
const (
	contestMark = '~'
	shortSuffix = 8
	longSuffix  = 64
)

// NormalizeAlias returns s as it is stored and compared: ASCII letters in
// lower case. An alias is 1 to 32 bytes of a-z, 0-9, '.', '_' and '-',
// starting with a letter or a digit, and is matched case-insensitively.
// Anything else is refused with ErrInvalidAlias, never mapped: in
// particular no Unicode case folding, which would turn the Kelvin sign
// U+212A into a 'k' and let two different strings name one user.
func NormalizeAlias(s string) (string, error) {
	if s == "" {
		return "", fmt.Errorf("%w: alias is empty", ErrInvalidAlias)
	}
	if len(s) > MaxAliasLen {
		return "", fmt.Errorf("%w: alias %s: %d bytes, at most %d", ErrInvalidAlias, quoteAlias(s), len(s), MaxAliasLen)
	}
	b := []byte(s)
	for i, c := range b {
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case c >= 'A' && c <= 'Z':
			b[i] = c + ('a' - 'A')
		case c == '.' || c == '_' || c == '-':
			if i == 0 {
				return "", fmt.Errorf("%w: alias %s: must start with a letter or digit", ErrInvalidAlias, quoteAlias(s))
			}
		case c == ' ':
			return "", fmt.Errorf("%w: alias %s: space not allowed", ErrInvalidAlias, quoteAlias(s))
		case c == contestMark:
			return "", fmt.Errorf("%w: alias %s: '~' is reserved for contested aliases", ErrInvalidAlias, quoteAlias(s))
		case c >= 0x80:
			return "", fmt.Errorf("%w: alias %s: only ASCII letters, digits, '.', '_' and '-' allowed", ErrInvalidAlias, quoteAlias(s))
		default:
			return "", fmt.Errorf("%w: alias %s: character %q not allowed", ErrInvalidAlias, quoteAlias(s), rune(c))
		}
	}
	return string(b), nil
}

// quoteAlias quotes s for an error message, shortened so that a hostile
// input cannot make the message huge.
func quoteAlias(s string) string {
	const max = 2 * MaxAliasLen
	if len(s) > max {
		return fmt.Sprintf("%q…", s[:max])
	}
	return fmt.Sprintf("%q", s)
}

// contestedName is the name under which the directory lists an identity
// that lost alias: alias~ and the identity key's first 8 hex digits, or all
// 64 of them when long is set.
func contestedName(alias string, id IdentityKey, long bool) string {
	h := id.String()
	if !long {
		h = h[:shortSuffix]
	}
	return alias + string(contestMark) + h
}

// parseName checks and normalizes a name as the directory lists users: an
// alias, or alias~ followed by 8 or 64 hex digits. It returns the
// normalized name and the alias part.
func parseName(s string) (name, alias string, err error) {
	a, suffix, contested := strings.Cut(s, string(contestMark))
	if !contested {
		a, err = NormalizeAlias(s)
		return a, a, err
	}
	if a, err = NormalizeAlias(a); err != nil {
		return "", "", err
	}
	if len(suffix) != shortSuffix && len(suffix) != longSuffix {
		return "", "", fmt.Errorf("%w: name %s: want %d or %d hex digits after '~'", ErrInvalidAlias, quoteAlias(s), shortSuffix, longSuffix)
	}
	for i := range len(suffix) {
		if c := suffix[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
			return "", "", fmt.Errorf("%w: name %s: want hex digits after '~'", ErrInvalidAlias, quoteAlias(s))
		}
	}
	// Only ASCII is left, so ToLower maps nothing else.
	return a + string(contestMark) + strings.ToLower(suffix), a, nil
}
