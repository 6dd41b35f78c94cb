package usersession

import "errors"

// Errors returned by this package, wrapped with the operation and the detail;
// match them with errors.Is.
var (
	// ErrInvalidAlias: an alias, or a name of the form alias~hex, breaks the
	// alias rule (see doc.go). The wrapping error says which character or
	// length was wrong.
	ErrInvalidAlias = errors.New("usersession: invalid alias")

	// ErrBadEntry: a block is not a well-formed entry, or an entry does not
	// fit where it stands (a certificate past entry 0, a login under another
	// alias, an unregister by another identity).
	ErrBadEntry = errors.New("usersession: bad entry")
	// ErrBadSignature: a certificate or unregister entry is not signed by the
	// identity it names.
	ErrBadSignature = errors.New("usersession: bad signature")
	// ErrBadCertificate: entry 0 of a device feed is not a valid certificate
	// for that device, so the directory ignores the whole device.
	ErrBadCertificate = errors.New("usersession: device has no valid certificate")
	// ErrOutOfOrder: a block was applied at another index than the next one
	// the directory expects for its device; nothing was applied.
	ErrOutOfOrder = errors.New("usersession: block out of order")

	// ErrPassphrase: an encrypted identity was imported with a wrong or empty
	// passphrase (or its ciphertext is damaged: the two look the same).
	ErrPassphrase = errors.New("usersession: wrong or missing passphrase")
	// ErrCorruptIdentity: an exported identity is malformed.
	ErrCorruptIdentity = errors.New("usersession: corrupt identity")
	// ErrInsecureIdentity: an identity file may be read by other users.
	ErrInsecureIdentity = errors.New("usersession: identity file is readable by others")
	// ErrIdentityExists: SaveIdentity would replace another identity, or a
	// file that is not an identity.
	ErrIdentityExists = errors.New("usersession: another identity is saved there")

	// ErrTokenInvalid: a token is malformed, its signature does not verify,
	// or its claims contradict the device's feed.
	ErrTokenInvalid = errors.New("usersession: invalid token")
	// ErrTokenExpired: a token's expiry has passed.
	ErrTokenExpired = errors.New("usersession: token expired")
	// ErrTokenRevoked: the device logged out of the token's session, or the
	// identity unregistered the alias.
	ErrTokenRevoked = errors.New("usersession: token revoked")
	// ErrTokenUnknown: the directory does not know the token's device (no
	// valid certificate) or has not yet seen the login it names.
	ErrTokenUnknown = errors.New("usersession: token from unknown device or session")

	// ErrUserNotFound: no user is listed under the name.
	ErrUserNotFound = errors.New("usersession: user not found")
	// ErrUnknownDevice: the directory holds no valid certificate for the
	// device.
	ErrUnknownDevice = errors.New("usersession: unknown device")
	// ErrUnregistered: the device's identity unregistered the alias its
	// certificate claims.
	ErrUnregistered = errors.New("usersession: alias unregistered")
	// ErrNotLoggedIn: the device has no current session.
	ErrNotLoggedIn = errors.New("usersession: device not logged in")
	// ErrSessionLimit: the identity already has its maximum of sessions
	// online, all started before this one.
	ErrSessionLimit = errors.New("usersession: session limit reached")

	// ErrNoSession: no session is running: none was started, or it was
	// closed (by Close, Logout or Unregister).
	ErrNoSession = errors.New("usersession: no session running")
	// ErrAliasTaken: another identity owns the alias a new device was to
	// claim.
	ErrAliasTaken = errors.New("usersession: alias taken")
	// ErrAliasMismatch: the data directory's device is certified under
	// another alias than the one asked for.
	ErrAliasMismatch = errors.New("usersession: data directory belongs to another alias")
	// ErrInvalidConfig: a Config field is out of range or contradicts
	// another.
	ErrInvalidConfig = errors.New("usersession: invalid configuration")
)
