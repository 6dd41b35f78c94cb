package usersession

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/hashicorp/go-msgpack/v2/codec"
)

// Limits of entries, checked when encoding and when decoding.
const (
	// MaxDeviceName is the longest device name, in bytes.
	MaxDeviceName = 64
	// MaxMetadataKeys is the most metadata keys a login carries.
	MaxMetadataKeys = 32
	// MaxMetadataKey is the longest metadata key, in bytes.
	MaxMetadataKey = 64
	// MaxMetadataValue is the longest metadata value, in bytes.
	MaxMetadataValue = 1024
	// MaxEntrySize bounds an encoded entry. The largest valid one, a login
	// with all its metadata, is about 35 KiB.
	MaxEntrySize = 64 << 10
)

// Domain strings that open every signed layout, so that a signature made
// for one purpose means nothing in another.
const (
	certificateLabel = "hyperfeed/usersession/certificate/v1\x00"
	unregisterLabel  = "hyperfeed/usersession/unregister/v1\x00"
	tokenLabel       = "hyperfeed/usersession/token/v1\x00"
)

// EntryType is an entry's first byte.
type EntryType byte

// The entry types.
const (
	TypeCertificate EntryType = 1
	TypeLogin       EntryType = 2
	TypeLogout      EntryType = 3
	TypeUnregister  EntryType = 4
)

// String names t.
func (t EntryType) String() string {
	switch t {
	case TypeCertificate:
		return "certificate"
	case TypeLogin:
		return "login"
	case TypeLogout:
		return "logout"
	case TypeUnregister:
		return "unregister"
	}
	return fmt.Sprintf("type %d", byte(t))
}

// Entry is one block of a device feed: *Certificate, *Login, *Logout or
// *Unregister.
type Entry interface {
	Type() EntryType
	// check enforces what msgpack cannot: key sizes, string rules, limits.
	// It does not verify signatures.
	check() error
}

// Certificate is entry 0 of every device feed, and only entry 0: the
// identity's statement that the device (its feed key, and Peer, its swarm
// Noise key, a swarm.PeerKey) acts for it under the alias. Claimed is when
// the identity first claimed the alias, the same on all its devices; it
// decides who owns a contested alias (see doc.go). Times are Unix
// milliseconds.
//
// Peer is a plain array so that this core does not depend on package
// swarm; it converts both ways: swarm.PeerKey(c.Peer).
type Certificate struct {
	Identity   IdentityKey
	Device     DeviceKey
	Peer       [32]byte
	Alias      string
	DeviceName string
	Claimed    int64
	Created    int64
	Signature  [64]byte
}

// Login starts a session on the device: where the user can be reached, from
// when, and what else the user chooses to publish. It carries no signature
// of its own, since the device feed's signature covers it.
type Login struct {
	Alias    string
	IP       string
	Port     int
	Started  int64 // Unix milliseconds
	Metadata map[string]string
	// Swarm is where the device's node accepts swarm connections, IP:port
	// in canonical form ("192.0.2.1:4977", "[2001:db8::1]:4977"), so that
	// every node can connect to every other; empty if it accepts none.
	// It was added after the other fields, at the end of the array, so
	// logins without it still decode.
	Swarm string
}

// Logout ends the device's session, and revokes every token issued for it.
type Logout struct {
	At int64 // Unix milliseconds
}

// Unregister is the identity's tombstone for an alias: its devices whose
// certificates claimed the alias at or before At no longer count (see
// doc.go).
type Unregister struct {
	Identity  IdentityKey
	Alias     string
	At        int64 // Unix milliseconds
	Signature [64]byte
}

// Type returns TypeCertificate.
func (*Certificate) Type() EntryType { return TypeCertificate }

// Type returns TypeLogin.
func (*Login) Type() EntryType { return TypeLogin }

// Type returns TypeLogout.
func (*Logout) Type() EntryType { return TypeLogout }

// Type returns TypeUnregister.
func (*Unregister) Type() EntryType { return TypeUnregister }

// NewCertificate returns c signed by id: c's Identity is set to id's key and
// its Alias normalized; the other fields are the caller's.
func NewCertificate(id *Identity, c Certificate) (*Certificate, error) {
	if err := id.check(); err != nil {
		return nil, fmt.Errorf("usersession: new certificate: %w", err)
	}
	alias, err := NormalizeAlias(c.Alias)
	if err != nil {
		return nil, fmt.Errorf("usersession: new certificate: %w", err)
	}
	c.Identity, c.Alias = id.Key(), alias
	if err := c.check(); err != nil {
		return nil, fmt.Errorf("usersession: new certificate: %w", err)
	}
	c.Signature = id.sign(c.signable())
	return &c, nil
}

// Verify checks that c is well formed and signed by c.Identity.
func (c *Certificate) Verify() error {
	if err := c.check(); err != nil {
		return fmt.Errorf("usersession: certificate: %w", err)
	}
	if !c.Identity.verify(c.signable(), &c.Signature) {
		return fmt.Errorf("usersession: certificate of device %s: %w", c.Device, ErrBadSignature)
	}
	return nil
}

// signable is what the identity signs:
//
//	label ‖ identity (32) ‖ device (32) ‖ peer (32) ‖ i64le claimed ‖
//	i64le created ‖ u8 len ‖ alias ‖ u8 len ‖ device name
func (c *Certificate) signable() []byte {
	b := make([]byte, 0, len(certificateLabel)+3*32+2*8+2+len(c.Alias)+len(c.DeviceName))
	b = append(b, certificateLabel...)
	b = append(b, c.Identity[:]...)
	b = append(b, c.Device[:]...)
	b = append(b, c.Peer[:]...)
	b = binary.LittleEndian.AppendUint64(b, uint64(c.Claimed))
	b = binary.LittleEndian.AppendUint64(b, uint64(c.Created))
	b = appendString8(b, c.Alias)
	return appendString8(b, c.DeviceName)
}

func (c *Certificate) check() error {
	switch {
	case c.Identity.IsZero():
		return fmt.Errorf("%w: certificate without identity", ErrBadEntry)
	case c.Device.IsZero():
		return fmt.Errorf("%w: certificate without device", ErrBadEntry)
	case c.Peer == [32]byte{}:
		return fmt.Errorf("%w: certificate without peer key", ErrBadEntry)
	case c.Claimed < 0:
		return fmt.Errorf("%w: certificate claimed at %d, before 1970", ErrBadEntry, c.Claimed)
	case c.Created < c.Claimed:
		return fmt.Errorf("%w: certificate created at %d, before its claim at %d", ErrBadEntry, c.Created, c.Claimed)
	}
	if err := checkAlias(c.Alias); err != nil {
		return err
	}
	if len(c.DeviceName) > MaxDeviceName {
		return fmt.Errorf("%w: device name of %d bytes, at most %d", ErrBadEntry, len(c.DeviceName), MaxDeviceName)
	}
	if !printable(c.DeviceName) {
		return fmt.Errorf("%w: device name %q is not printable UTF-8", ErrBadEntry, c.DeviceName)
	}
	return nil
}

func (l *Login) check() error {
	if err := checkAlias(l.Alias); err != nil {
		return err
	}
	ip, err := netip.ParseAddr(l.IP)
	switch {
	case err != nil:
		return fmt.Errorf("%w: login IP %q: %v", ErrBadEntry, shorten(l.IP), err)
	case ip.Zone() != "":
		return fmt.Errorf("%w: login IP %q: a zone means nothing to other hosts", ErrBadEntry, l.IP)
	case ip.IsUnspecified():
		return fmt.Errorf("%w: login IP %q is unspecified", ErrBadEntry, l.IP)
	case ip.String() != l.IP:
		return fmt.Errorf("%w: login IP %q is not in canonical form %q", ErrBadEntry, l.IP, ip.String())
	case l.Port < 1 || l.Port > 65535:
		return fmt.Errorf("%w: login port %d, want 1 to 65535", ErrBadEntry, l.Port)
	case l.Started < 0:
		return fmt.Errorf("%w: login started at %d, before 1970", ErrBadEntry, l.Started)
	case len(l.Metadata) > MaxMetadataKeys:
		return fmt.Errorf("%w: login metadata has %d keys, at most %d", ErrBadEntry, len(l.Metadata), MaxMetadataKeys)
	}
	if l.Swarm != "" {
		if err := checkSwarmAddr(l.Swarm); err != nil {
			return err
		}
	}
	for k, v := range l.Metadata {
		switch {
		case k == "" || len(k) > MaxMetadataKey:
			return fmt.Errorf("%w: login metadata key %q: want 1 to %d bytes", ErrBadEntry, shorten(k), MaxMetadataKey)
		case !utf8.ValidString(k):
			return fmt.Errorf("%w: login metadata key %q is not UTF-8", ErrBadEntry, k)
		case len(v) > MaxMetadataValue:
			return fmt.Errorf("%w: login metadata %q: value of %d bytes, at most %d", ErrBadEntry, k, len(v), MaxMetadataValue)
		case !utf8.ValidString(v):
			return fmt.Errorf("%w: login metadata %q: value is not UTF-8", ErrBadEntry, k)
		}
	}
	return nil
}

// checkSwarmAddr accepts a login's swarm address: an IP address as a
// login's IP must be, and a port from 1 to 65535, in canonical form.
func checkSwarmAddr(s string) error {
	ap, err := netip.ParseAddrPort(s)
	switch {
	case err != nil:
		return fmt.Errorf("%w: login swarm address %q: %v", ErrBadEntry, shorten(s), err)
	case ap.Addr().Zone() != "":
		return fmt.Errorf("%w: login swarm address %q: a zone means nothing to other hosts", ErrBadEntry, s)
	case ap.Addr().IsUnspecified():
		return fmt.Errorf("%w: login swarm address %q is unspecified", ErrBadEntry, s)
	case ap.Port() == 0:
		return fmt.Errorf("%w: login swarm address %q: port 0", ErrBadEntry, s)
	case ap.String() != s:
		return fmt.Errorf("%w: login swarm address %q is not in canonical form %q", ErrBadEntry, s, ap.String())
	}
	return nil
}

func (l *Logout) check() error {
	if l.At < 0 {
		return fmt.Errorf("%w: logout at %d, before 1970", ErrBadEntry, l.At)
	}
	return nil
}

// NewUnregister returns the identity's signed tombstone for alias at time at.
func NewUnregister(id *Identity, alias string, at time.Time) (*Unregister, error) {
	if err := id.check(); err != nil {
		return nil, fmt.Errorf("usersession: new unregister: %w", err)
	}
	alias, err := NormalizeAlias(alias)
	if err != nil {
		return nil, fmt.Errorf("usersession: new unregister: %w", err)
	}
	u := &Unregister{Identity: id.Key(), Alias: alias, At: at.UnixMilli()}
	if err := u.check(); err != nil {
		return nil, fmt.Errorf("usersession: new unregister: %w", err)
	}
	u.Signature = id.sign(u.signable())
	return u, nil
}

// Verify checks that u is well formed and signed by u.Identity.
func (u *Unregister) Verify() error {
	if err := u.check(); err != nil {
		return fmt.Errorf("usersession: unregister: %w", err)
	}
	if !u.Identity.verify(u.signable(), &u.Signature) {
		return fmt.Errorf("usersession: unregister of %q by %s: %w", u.Alias, u.Identity, ErrBadSignature)
	}
	return nil
}

// signable is what the identity signs:
//
//	label ‖ identity (32) ‖ i64le at ‖ u8 len ‖ alias
func (u *Unregister) signable() []byte {
	b := make([]byte, 0, len(unregisterLabel)+32+8+1+len(u.Alias))
	b = append(b, unregisterLabel...)
	b = append(b, u.Identity[:]...)
	b = binary.LittleEndian.AppendUint64(b, uint64(u.At))
	return appendString8(b, u.Alias)
}

func (u *Unregister) check() error {
	switch {
	case u.Identity.IsZero():
		return fmt.Errorf("%w: unregister without identity", ErrBadEntry)
	case u.At < 0:
		return fmt.Errorf("%w: unregister at %d, before 1970", ErrBadEntry, u.At)
	}
	return checkAlias(u.Alias)
}

// checkAlias accepts only normalized aliases, so that an entry has one
// meaning however it is compared.
func checkAlias(a string) error {
	n, err := NormalizeAlias(a)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrBadEntry, err)
	}
	if n != a {
		return fmt.Errorf("%w: alias %q is not normalized (%q)", ErrBadEntry, a, n)
	}
	return nil
}

func printable(s string) bool {
	for _, r := range s {
		if r == utf8.RuneError || !unicode.IsPrint(r) {
			return false // RuneError also stands for invalid UTF-8
		}
	}
	return true
}

// shorten cuts a string that came from outside for an error message.
func shorten(s string) string {
	if len(s) > 80 {
		return s[:80] + "…"
	}
	return s
}

// appendString8 appends u8(len(s)) ‖ s; callers have bounded s under 256.
func appendString8(b []byte, s string) []byte {
	return append(append(b, byte(len(s))), s...)
}

// The msgpack bodies: arrays of these fields in order. Keys travel as byte
// strings and are checked for length on decoding, rather than as Go arrays,
// which a decoder would quietly pad or cut.
type (
	certificateBody struct {
		Identity   []byte
		Device     []byte
		Peer       []byte
		Alias      string
		DeviceName string
		Claimed    int64
		Created    int64
		Signature  []byte
	}
	loginBody struct {
		Alias    string
		IP       string
		Port     int
		Started  int64
		Metadata map[string]string
		Swarm    string // absent from logins written before it was added
	}
	logoutBody struct {
		At int64
	}
	unregisterBody struct {
		Identity  []byte
		Alias     string
		At        int64
		Signature []byte
	}
)

// msgpackHandle is configured once and only read afterwards, which makes it
// safe to share between goroutines.
var msgpackHandle = func() *codec.MsgpackHandle {
	h := &codec.MsgpackHandle{WriteExt: true} // str and bin, not raw
	h.StructToArray = true
	h.Canonical = true // sorted map keys: one entry, one encoding
	// A length prefix may claim anything; allocate for what the bytes hold.
	h.MaxInitLen = 256
	// No entry nests deeper than a map in an array; deeper input is junk
	// that the decoder would otherwise walk (to skip trailing fields).
	h.MaxDepth = 8
	return h
}()

// EncodeEntry returns the block for e: its type byte and its msgpack body.
// It checks e's fields against the format's rules but not its signature;
// use NewCertificate and NewUnregister to make signed entries.
func EncodeEntry(e Entry) ([]byte, error) {
	if e == nil {
		return nil, fmt.Errorf("usersession: encode entry: %w: nil", ErrBadEntry)
	}
	if err := e.check(); err != nil {
		return nil, fmt.Errorf("usersession: encode %s: %w", e.Type(), err)
	}
	var body any
	switch e := e.(type) {
	case *Certificate:
		body = &certificateBody{e.Identity[:], e.Device[:], e.Peer[:], e.Alias, e.DeviceName, e.Claimed, e.Created, e.Signature[:]}
	case *Login:
		body = &loginBody{e.Alias, e.IP, e.Port, e.Started, e.Metadata, e.Swarm}
	case *Logout:
		body = &logoutBody{e.At}
	case *Unregister:
		body = &unregisterBody{e.Identity[:], e.Alias, e.At, e.Signature[:]}
	}
	var enc []byte
	if err := codec.NewEncoderBytes(&enc, msgpackHandle).Encode(body); err != nil {
		return nil, fmt.Errorf("usersession: encode %s: %w", e.Type(), err)
	}
	b := append([]byte{byte(e.Type())}, enc...)
	if len(b) > MaxEntrySize {
		return nil, fmt.Errorf("usersession: encode %s: %w: %d bytes, at most %d", e.Type(), ErrBadEntry, len(b), MaxEntrySize)
	}
	return b, nil
}

// DecodeEntry parses a block. It checks the format and every limit, but no
// signature: see Certificate.Verify and Unregister.Verify, which the
// Directory calls. Anything malformed gives ErrBadEntry.
func DecodeEntry(b []byte) (Entry, error) {
	e, err := decodeEntry(b)
	if err != nil {
		return nil, fmt.Errorf("usersession: decode entry: %w", err)
	}
	return e, nil
}

func decodeEntry(b []byte) (Entry, error) {
	switch {
	case len(b) == 0:
		return nil, fmt.Errorf("%w: empty block", ErrBadEntry)
	case len(b) > MaxEntrySize:
		return nil, fmt.Errorf("%w: %d bytes, at most %d", ErrBadEntry, len(b), MaxEntrySize)
	}
	t := EntryType(b[0])
	var body any
	var fields int
	switch t {
	case TypeCertificate:
		body, fields = new(certificateBody), 8
	case TypeLogin:
		body, fields = new(loginBody), 5
	case TypeLogout:
		body, fields = new(logoutBody), 1
	case TypeUnregister:
		body, fields = new(unregisterBody), 4
	default:
		return nil, fmt.Errorf("%w: unknown %s", ErrBadEntry, t)
	}
	// The body is an array of at least the entry's fields: the decoder
	// would also fill a struct from a map, or zero fields that are missing,
	// and neither is the format. Fields past them come from a later version
	// and are skipped.
	if n, ok := arrayLen(b[1:]); !ok || n < fields {
		return nil, fmt.Errorf("%w: %s: body is not a msgpack array of %d fields", ErrBadEntry, t, fields)
	}
	dec := codec.NewDecoderBytes(b[1:], msgpackHandle)
	if err := dec.Decode(body); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrBadEntry, t, err)
	}
	if n := dec.NumBytesRead(); n != len(b)-1 {
		return nil, fmt.Errorf("%w: %s: %d bytes after the body", ErrBadEntry, t, len(b)-1-n)
	}
	var e Entry
	switch body := body.(type) {
	case *certificateBody:
		c := &Certificate{Alias: body.Alias, DeviceName: body.DeviceName, Claimed: body.Claimed, Created: body.Created}
		if err := copyFixed(c.Identity[:], body.Identity, "identity"); err != nil {
			return nil, err
		}
		if err := copyFixed(c.Device[:], body.Device, "device"); err != nil {
			return nil, err
		}
		if err := copyFixed(c.Peer[:], body.Peer, "peer"); err != nil {
			return nil, err
		}
		if err := copyFixed(c.Signature[:], body.Signature, "signature"); err != nil {
			return nil, err
		}
		e = c
	case *loginBody:
		l := &Login{Alias: body.Alias, IP: body.IP, Port: body.Port, Started: body.Started, Metadata: body.Metadata, Swarm: body.Swarm}
		if len(l.Metadata) == 0 {
			l.Metadata = nil // msgpack nil and {} mean the same
		}
		e = l
	case *logoutBody:
		e = &Logout{At: body.At}
	case *unregisterBody:
		u := &Unregister{Alias: body.Alias, At: body.At}
		if err := copyFixed(u.Identity[:], body.Identity, "identity"); err != nil {
			return nil, err
		}
		if err := copyFixed(u.Signature[:], body.Signature, "signature"); err != nil {
			return nil, err
		}
		e = u
	}
	if err := e.check(); err != nil {
		return nil, fmt.Errorf("%s: %w", t, err)
	}
	return e, nil
}

// arrayLen reads the length of the msgpack array that b starts with.
func arrayLen(b []byte) (int, bool) {
	switch {
	case len(b) >= 1 && b[0]&0xf0 == 0x90:
		return int(b[0] & 0x0f), true
	case len(b) >= 3 && b[0] == 0xdc:
		return int(binary.BigEndian.Uint16(b[1:])), true
	case len(b) >= 5 && b[0] == 0xdd:
		return int(binary.BigEndian.Uint32(b[1:])), true
	}
	return 0, false
}

func copyFixed(dst, src []byte, what string) error {
	if len(src) != len(dst) {
		return fmt.Errorf("%w: %s is %d bytes, want %d", ErrBadEntry, what, len(src), len(dst))
	}
	copy(dst, src)
	return nil
}
