package usersession

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/require"
)

// errorsIsAny reports whether err matches one of targets.
func errorsIsAny(err error, targets ...error) bool {
	for _, t := range targets {
		if errors.Is(err, t) {
			return true
		}
	}
	return false
}

func TestErrorsAreDistinct(t *testing.T) {
	all := []error{
		ErrInvalidAlias, ErrBadEntry, ErrBadSignature, ErrBadCertificate, ErrOutOfOrder,
		ErrPassphrase, ErrCorruptIdentity, ErrInsecureIdentity, ErrIdentityExists,
		ErrTokenInvalid, ErrTokenExpired, ErrTokenRevoked, ErrTokenUnknown,
		ErrUserNotFound, ErrUnknownDevice, ErrUnregistered, ErrNotLoggedIn, ErrSessionLimit,
	}
	seen := map[string]bool{}
	for i, a := range all {
		require.False(t, seen[a.Error()], a.Error())
		seen[a.Error()] = true
		for j, b := range all {
			require.Equal(t, i == j, errors.Is(a, b), "%v / %v", a, b)
		}
	}
}
