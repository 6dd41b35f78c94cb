package usersession

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-msgpack/v2/codec"
	"github.com/stretchr/testify/require"
)

func testCertificate(t testing.TB, id *Identity, dev DeviceKey, alias string, claimed int64) *Certificate {
	t.Helper()
	c, err := NewCertificate(id, Certificate{
		Device:     dev,
		Peer:       [32]byte{0x50, dev[0]},
		Alias:      alias,
		DeviceName: "laptop",
		Claimed:    claimed,
		Created:    claimed + 1000,
	})
	require.NoError(t, err)
	return c
}

func roundTrip(t *testing.T, e Entry) Entry {
	t.Helper()
	b, err := EncodeEntry(e)
	require.NoError(t, err)
	require.Equal(t, byte(e.Type()), b[0])
	got, err := DecodeEntry(b)
	require.NoError(t, err)
	require.Equal(t, e, got)
	return got
}

func TestEntryRoundTrip(t *testing.T) {
	id := testIdentity(1)
	c := testCertificate(t, id, DeviceKey{9}, "Bob", 1_700_000_000_000)
	require.Equal(t, "bob", c.Alias)
	require.Equal(t, id.Key(), c.Identity)
	require.NoError(t, roundTrip(t, c).(*Certificate).Verify())

	roundTrip(t, &Login{Alias: "bob", IP: "192.0.2.7", Port: 4977, Started: 5})
	roundTrip(t, &Login{Alias: "bob", IP: "2001:db8::1", Port: 1, Started: 0, Metadata: map[string]string{"client": "hyperfeed/1", "empty": ""}})
	roundTrip(t, &Login{Alias: "bob", IP: "192.0.2.7", Port: 4977, Started: 5, Swarm: "192.0.2.7:4978"})
	roundTrip(t, &Login{Alias: "bob", IP: "2001:db8::1", Port: 80, Started: 5, Swarm: "[2001:db8::1]:4978"})
	roundTrip(t, &Logout{At: 1_700_000_000_123})

	u, err := NewUnregister(id, "BOB", time.UnixMilli(1_800_000_000_000))
	require.NoError(t, err)
	require.Equal(t, "bob", u.Alias)
	require.Equal(t, int64(1_800_000_000_000), u.At)
	require.NoError(t, roundTrip(t, u).(*Unregister).Verify())
}

func TestEntryEncodingIsPinned(t *testing.T) {
	// 3 ‖ msgpack [1]: the layout is an array of fields, not a map.
	b, err := EncodeEntry(&Logout{At: 1})
	require.NoError(t, err)
	require.Equal(t, []byte{3, 0x91, 0x01}, b)

	// An empty metadata map and none encode differently but decode the same.
	l := &Login{Alias: "a", IP: "::1", Port: 2, Started: 3, Metadata: map[string]string{}}
	b, err = EncodeEntry(l)
	require.NoError(t, err)
	got, err := DecodeEntry(b)
	require.NoError(t, err)
	require.Nil(t, got.(*Login).Metadata)

	// Map keys are sorted: one login, one encoding.
	m := map[string]string{}
	for i := range MaxMetadataKeys {
		m[fmt.Sprint(i)] = "v"
	}
	first, err := EncodeEntry(&Login{Alias: "a", IP: "::1", Port: 2, Metadata: m})
	require.NoError(t, err)
	for range 10 {
		again, err := EncodeEntry(&Login{Alias: "a", IP: "::1", Port: 2, Metadata: m})
		require.NoError(t, err)
		require.Equal(t, first, again)
	}
}

func TestSignableLayouts(t *testing.T) {
	c := &Certificate{
		Identity: IdentityKey{1}, Device: DeviceKey{2}, Peer: [32]byte{3},
		Alias: "bob", DeviceName: "pc", Claimed: 0x0102, Created: 0x0304,
	}
	var want []byte
	want = append(want, "hyperfeed/usersession/certificate/v1\x00"...)
	want = append(want, 1)
	want = append(want, make([]byte, 31)...)
	want = append(want, 2)
	want = append(want, make([]byte, 31)...)
	want = append(want, 3)
	want = append(want, make([]byte, 31)...)
	want = append(want, 0x02, 0x01, 0, 0, 0, 0, 0, 0)
	want = append(want, 0x04, 0x03, 0, 0, 0, 0, 0, 0)
	want = append(want, 3, 'b', 'o', 'b', 2, 'p', 'c')
	require.Equal(t, want, c.signable())

	u := &Unregister{Identity: IdentityKey{1}, Alias: "bob", At: -2 & 0xff}
	want = append([]byte("hyperfeed/usersession/unregister/v1\x00"), 1)
	want = append(want, make([]byte, 31)...)
	want = binary.LittleEndian.AppendUint64(want, 0xfe)
	want = append(want, 3, 'b', 'o', 'b')
	require.Equal(t, want, u.signable())
}

func TestVerifyDetectsTampering(t *testing.T) {
	id := testIdentity(1)
	c := testCertificate(t, id, DeviceKey{9}, "bob", 1000)
	require.NoError(t, c.Verify())
	tamper := map[string]func(c *Certificate){
		"identity":  func(c *Certificate) { c.Identity = testIdentity(2).Key() },
		"device":    func(c *Certificate) { c.Device[0] ^= 1 },
		"peer":      func(c *Certificate) { c.Peer[31] ^= 1 },
		"alias":     func(c *Certificate) { c.Alias = "bob2" },
		"name":      func(c *Certificate) { c.DeviceName = "phone" },
		"claimed":   func(c *Certificate) { c.Claimed-- },
		"created":   func(c *Certificate) { c.Created++ },
		"signature": func(c *Certificate) { c.Signature[0] ^= 1 },
	}
	for name, edit := range tamper {
		c2 := *c
		edit(&c2)
		require.ErrorIs(t, c2.Verify(), ErrBadSignature, name)
	}

	u, err := NewUnregister(id, "bob", time.UnixMilli(5))
	require.NoError(t, err)
	require.NoError(t, u.Verify())
	for name, edit := range map[string]func(u *Unregister){
		"identity":  func(u *Unregister) { u.Identity = testIdentity(2).Key() },
		"alias":     func(u *Unregister) { u.Alias = "bobby" },
		"at":        func(u *Unregister) { u.At++ },
		"signature": func(u *Unregister) { u.Signature[63] ^= 1 },
	} {
		u2 := *u
		edit(&u2)
		require.ErrorIs(t, u2.Verify(), ErrBadSignature, name)
	}

	// A certificate signed by one identity and claiming another fails, and
	// so does one whose identity is not a valid Ed25519 point.
	c2 := *c
	c2.Identity = IdentityKey{0xff, 0xff, 0xff}
	require.ErrorIs(t, c2.Verify(), ErrBadSignature)
}

func TestEntryLimits(t *testing.T) {
	id := testIdentity(1)
	base := func() Certificate {
		return Certificate{Device: DeviceKey{1}, Peer: [32]byte{1}, Alias: "bob", DeviceName: "x", Claimed: 10, Created: 10}
	}
	okCert := map[string]func(c *Certificate){
		"name of 64 bytes":  func(c *Certificate) { c.DeviceName = strings.Repeat("é", 32) },
		"empty name":        func(c *Certificate) { c.DeviceName = "" },
		"name with spaces":  func(c *Certificate) { c.DeviceName = "Bob's phone" },
		"claimed at 0":      func(c *Certificate) { c.Claimed = 0 },
		"alias of 32 bytes": func(c *Certificate) { c.Alias = strings.Repeat("b", 32) },
	}
	for name, edit := range okCert {
		c := base()
		edit(&c)
		got, err := NewCertificate(id, c)
		require.NoError(t, err, name)
		roundTrip(t, got)
	}
	badCert := map[string]func(c *Certificate){
		"name of 65 bytes":     func(c *Certificate) { c.DeviceName = strings.Repeat("x", 65) },
		"name with newline":    func(c *Certificate) { c.DeviceName = "a\nb" },
		"name with NUL":        func(c *Certificate) { c.DeviceName = "a\x00" },
		"name not UTF-8":       func(c *Certificate) { c.DeviceName = "a\xff" },
		"name with U+FFFD":     func(c *Certificate) { c.DeviceName = "a\uFFFD" },
		"no device":            func(c *Certificate) { c.Device = DeviceKey{} },
		"no peer":              func(c *Certificate) { c.Peer = [32]byte{} },
		"claimed before 1970":  func(c *Certificate) { c.Claimed = -1 },
		"created before claim": func(c *Certificate) { c.Created = 9 },
		"bad alias":            func(c *Certificate) { c.Alias = "b b" },
	}
	for name, edit := range badCert {
		c := base()
		edit(&c)
		_, err := NewCertificate(id, c)
		require.ErrorIs(t, err, errorFor(name), name)
		// Nor does a hand-made one encode.
		c.Identity = id.Key()
		_, err = EncodeEntry(&c)
		require.Error(t, err, name)
	}

	bigValue := strings.Repeat("v", MaxMetadataValue)
	full := map[string]string{}
	for i := range MaxMetadataKeys {
		full[fmt.Sprintf("%064d", i)] = bigValue
	}
	b, err := EncodeEntry(&Login{Alias: "bob", IP: "10.0.0.1", Port: 65535, Metadata: full})
	require.NoError(t, err)
	require.Less(t, len(b), MaxEntrySize)
	_, err = DecodeEntry(b)
	require.NoError(t, err)

	badLogin := map[string]Login{
		"alias not normalized": {Alias: "Bob", IP: "10.0.0.1", Port: 1},
		"alias invalid":        {Alias: "b~b", IP: "10.0.0.1", Port: 1},
		"no IP":                {Alias: "bob", Port: 1},
		"host name":            {Alias: "bob", IP: "example.com", Port: 1},
		"IP with port":         {Alias: "bob", IP: "10.0.0.1:80", Port: 1},
		"IPv6 not canonical":   {Alias: "bob", IP: "2001:DB8::1", Port: 1},
		"IPv6 zone":            {Alias: "bob", IP: "fe80::1%eth0", Port: 1},
		"unspecified":          {Alias: "bob", IP: "0.0.0.0", Port: 1},
		"leading zeros":        {Alias: "bob", IP: "010.0.0.1", Port: 1},
		"port 0":               {Alias: "bob", IP: "10.0.0.1", Port: 0},
		"port 65536":           {Alias: "bob", IP: "10.0.0.1", Port: 65536},
		"started before 1970":  {Alias: "bob", IP: "10.0.0.1", Port: 1, Started: -1},
		"33 keys":              {Alias: "bob", IP: "10.0.0.1", Port: 1, Metadata: withKey(full, "extra", "")},
		"key of 65 bytes":      {Alias: "bob", IP: "10.0.0.1", Port: 1, Metadata: map[string]string{strings.Repeat("k", 65): ""}},
		"empty key":            {Alias: "bob", IP: "10.0.0.1", Port: 1, Metadata: map[string]string{"": "v"}},
		"value of 1025 bytes":  {Alias: "bob", IP: "10.0.0.1", Port: 1, Metadata: map[string]string{"k": bigValue + "v"}},
		"value not UTF-8":      {Alias: "bob", IP: "10.0.0.1", Port: 1, Metadata: map[string]string{"k": "\xc3"}},
		"key not UTF-8":        {Alias: "bob", IP: "10.0.0.1", Port: 1, Metadata: map[string]string{"\xc3": "v"}},
		"swarm without port":   {Alias: "bob", IP: "10.0.0.1", Port: 1, Swarm: "10.0.0.1"},
		"swarm host name":      {Alias: "bob", IP: "10.0.0.1", Port: 1, Swarm: "example.com:4977"},
		"swarm port 0":         {Alias: "bob", IP: "10.0.0.1", Port: 1, Swarm: "10.0.0.1:0"},
		"swarm unspecified":    {Alias: "bob", IP: "10.0.0.1", Port: 1, Swarm: "0.0.0.0:4977"},
		"swarm zone":           {Alias: "bob", IP: "10.0.0.1", Port: 1, Swarm: "[fe80::1%eth0]:4977"},
		"swarm not canonical":  {Alias: "bob", IP: "10.0.0.1", Port: 1, Swarm: "[2001:DB8::1]:4977"},
		"swarm IPv6 bare":      {Alias: "bob", IP: "10.0.0.1", Port: 1, Swarm: "2001:db8::1:4977"},
	}
	for name, l := range badLogin {
		_, err := EncodeEntry(&l)
		require.ErrorIs(t, err, ErrBadEntry, name)
		// Nor does it decode, when encoded by someone who skips the checks.
		_, err = DecodeEntry(rawEntry(t, TypeLogin, &loginBody{l.Alias, l.IP, l.Port, l.Started, l.Metadata, l.Swarm}))
		require.ErrorIs(t, err, ErrBadEntry, name)
	}
	_, err = EncodeEntry(&Logout{At: -1})
	require.ErrorIs(t, err, ErrBadEntry)
	_, err = EncodeEntry(nil)
	require.ErrorIs(t, err, ErrBadEntry)
}

func errorFor(name string) error {
	if name == "bad alias" {
		return ErrInvalidAlias
	}
	return ErrBadEntry
}

func withKey(m map[string]string, k, v string) map[string]string {
	out := map[string]string{k: v}
	for k, v := range m {
		out[k] = v
	}
	return out
}

// rawEntry encodes body as an entry of type t without any check.
func rawEntry(t testing.TB, typ EntryType, body any) []byte {
	t.Helper()
	var b []byte
	require.NoError(t, codec.NewEncoderBytes(&b, msgpackHandle).Encode(body))
	return append([]byte{byte(typ)}, b...)
}

func TestDecodeEntryRefuses(t *testing.T) {
	id := testIdentity(1)
	good, err := EncodeEntry(testCertificate(t, id, DeviceKey{1}, "bob", 1))
	require.NoError(t, err)
	k32 := make([]byte, 32)
	bad := map[string][]byte{
		"empty":           nil,
		"type only":       {byte(TypeLogout)},
		"unknown type":    append([]byte{9}, good[1:]...),
		"type zero":       append([]byte{0}, good[1:]...),
		"trailing byte":   append(bytes.Clone(good), 0),
		"truncated":       good[:len(good)-1],
		"too large":       append([]byte{byte(TypeLogout), 0x91, 0x01}, make([]byte, MaxEntrySize)...),
		"not msgpack":     {byte(TypeLogout), 0xc1},
		"nil body":        {byte(TypeLogout), 0xc0},
		"string body":     {byte(TypeLogout), 0xa1, 'x'},
		"short identity":  rawEntry(t, TypeCertificate, &certificateBody{k32[:31], k32, k32, "bob", "", 1, 1, make([]byte, 64)}),
		"long device":     rawEntry(t, TypeCertificate, &certificateBody{k32, append(k32, 0), k32, "bob", "", 1, 1, make([]byte, 64)}),
		"short signature": rawEntry(t, TypeUnregister, &unregisterBody{k32, "bob", 1, make([]byte, 63)}),
		"zero identity":   rawEntry(t, TypeUnregister, &unregisterBody{k32, "bob", 1, make([]byte, 64)}),
		"negative logout": rawEntry(t, TypeLogout, &logoutBody{-5}),
		"deep nesting":    append([]byte{byte(TypeLogout), 0x92, 0x01}, bytes.Repeat([]byte{0x91}, 100)...),
		"login port huge": rawEntry(t, TypeLogin, []any{"bob", "10.0.0.1", uint64(1) << 63, 1, nil}),
	}
	for name, b := range bad {
		e, err := DecodeEntry(b)
		require.ErrorIs(t, err, ErrBadEntry, name)
		require.Nil(t, e, name)
	}

	// Fields appended by a later version are skipped, as in package wire.
	e, err := DecodeEntry(rawEntry(t, TypeLogout, []any{7, "future"}))
	require.NoError(t, err)
	require.Equal(t, &Logout{At: 7}, e)
	e, err = DecodeEntry([]byte{byte(TypeLogout), 0xdc, 0x00, 0x01, 0x07})
	require.NoError(t, err)
	require.Equal(t, &Logout{At: 7}, e)

	// A login written before the swarm address was added still decodes,
	// without one; a later one decodes with it.
	e, err = DecodeEntry(rawEntry(t, TypeLogin, []any{"bob", "10.0.0.1", 80, 9, nil}))
	require.NoError(t, err)
	require.Equal(t, &Login{Alias: "bob", IP: "10.0.0.1", Port: 80, Started: 9}, e)
	e, err = DecodeEntry(rawEntry(t, TypeLogin, []any{"bob", "10.0.0.1", 80, 9, nil, "10.0.0.1:4977", "future"}))
	require.NoError(t, err)
	require.Equal(t, &Login{Alias: "bob", IP: "10.0.0.1", Port: 80, Started: 9, Swarm: "10.0.0.1:4977"}, e)
}

func FuzzDecodeEntry(f *testing.F) {
	id := testIdentity(1)
	seeds := []Entry{
		testCertificate(f, id, DeviceKey{1}, "bob", 1),
		&Login{Alias: "bob", IP: "192.0.2.1", Port: 80, Started: 9, Metadata: map[string]string{"a": "b"}},
		&Logout{At: 3},
	}
	u, err := NewUnregister(id, "bob", time.UnixMilli(4))
	require.NoError(f, err)
	seeds = append(seeds, u)
	for _, e := range seeds {
		b, err := EncodeEntry(e)
		require.NoError(f, err)
		f.Add(b)
	}
	f.Add([]byte{byte(TypeLogin), 0x95, 0xa1, 'a', 0xa3, ':', ':', '1', 0x01, 0x00, 0x80})
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := DecodeEntry(b)
		if err != nil {
			require.ErrorIs(t, err, ErrBadEntry)
			require.Nil(t, e)
			return
		}
		// What decodes encodes, and decodes back to the same entry.
		again, err := EncodeEntry(e)
		require.NoError(t, err)
		e2, err := DecodeEntry(again)
		require.NoError(t, err)
		require.Equal(t, e, e2)
		switch e := e.(type) {
		case *Certificate:
			_ = e.Verify()
		case *Unregister:
			_ = e.Verify()
		}
	})
}
