package usersession

import (
	"bytes"
	"crypto/ed25519"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// testDevice is a device feed kept in memory: its blocks, in order.
type testDevice struct {
	t      testing.TB
	n      byte
	sk     ed25519.PrivateKey
	key    DeviceKey
	blocks [][]byte
	cert   *Certificate
}

func newTestDevice(t testing.TB, n byte) *testDevice {
	sk, key := testDeviceKey(n)
	return &testDevice{t: t, n: n, sk: sk, key: key}
}

// add appends e and returns its index.
func (td *testDevice) add(e Entry) uint64 {
	td.t.Helper()
	b, err := EncodeEntry(e)
	require.NoError(td.t, err)
	td.blocks = append(td.blocks, b)
	return uint64(len(td.blocks) - 1)
}

func (td *testDevice) certify(id *Identity, alias string, claimed int64) *testDevice {
	td.t.Helper()
	c, err := NewCertificate(id, Certificate{
		Device:     td.key,
		Peer:       [32]byte{td.n},
		Alias:      alias,
		DeviceName: fmt.Sprintf("device %d", td.n),
		Claimed:    claimed,
		Created:    claimed,
	})
	require.NoError(td.t, err)
	td.cert = c
	td.add(c)
	return td
}

func (td *testDevice) login(started int64) uint64 {
	return td.add(&Login{
		Alias:    td.cert.Alias,
		IP:       fmt.Sprintf("192.0.2.%d", td.n),
		Port:     4000 + int(td.n),
		Started:  started,
		Metadata: map[string]string{"device": fmt.Sprint(td.n)},
	})
}

func (td *testDevice) logout(at int64) uint64 { return td.add(&Logout{At: at}) }

func (td *testDevice) unregister(id *Identity, alias string, at int64) uint64 {
	td.t.Helper()
	u, err := NewUnregister(id, alias, time.UnixMilli(at))
	require.NoError(td.t, err)
	return td.add(u)
}

func (td *testDevice) token(login uint64, issued, expires int64) string {
	td.t.Helper()
	s, err := IssueToken(td.sk, TokenClaims{
		Identity: td.cert.Identity, Device: td.key, Alias: td.cert.Alias,
		Login: login, Issued: issued, Expires: expires,
	})
	require.NoError(td.t, err)
	return s
}

// sync applies the blocks of each device that d has not applied yet.
func applyAll(t testing.TB, d *Directory, devs ...*testDevice) {
	t.Helper()
	for _, td := range devs {
		for i := d.Next(td.key); i < uint64(len(td.blocks)); i++ {
			require.NoError(t, d.Apply(td.key, i, td.blocks[i]), "device %d block %d", td.n, i)
		}
	}
}

var t0 = time.UnixMilli(1_700_000_000_000).UTC()

func ms(d time.Duration) int64 { return t0.Add(d).UnixMilli() }

func TestDirectoryShowsASession(t *testing.T) {
	alice := testIdentity(1)
	dev := newTestDevice(t, 1).certify(alice, "Alice", ms(0))
	d := NewDirectory(0)

	applyAll(t, d, dev)
	got, err := d.Find("alice")
	require.NoError(t, err)
	require.Equal(t, UserSession{
		Alias: "alice", Identity: alice.Key(), Device: dev.key, DeviceName: "device 1",
	}, got, "certified, never logged in: listed without an address")

	dev.login(ms(time.Minute))
	applyAll(t, d, dev)
	d.SetPresence(dev.key, true, t0.Add(2*time.Minute))
	want := UserSession{
		Alias: "alice", IP: "192.0.2.1", Port: 4001,
		Identity: alice.Key(), Device: dev.key, DeviceName: "device 1",
		Started: t0.Add(time.Minute), LastSeen: t0.Add(2 * time.Minute),
		Online: true, Metadata: map[string]string{"device": "1"},
	}
	require.Equal(t, map[string]UserSession{"alice": want}, d.Users())
	got, err = d.Find("ALICE")
	require.NoError(t, err)
	require.Equal(t, want, got)
	require.Equal(t, []UserSession{want}, d.Devices("Alice"))
	got, err = d.Session(dev.key)
	require.NoError(t, err)
	require.Equal(t, want, got)
	owner, ok := d.Owner("alice")
	require.True(t, ok)
	require.Equal(t, alice.Key(), owner)
	require.NoError(t, d.SessionValid(dev.key))

	_, err = d.Find("bob")
	require.ErrorIs(t, err, ErrUserNotFound)
	_, err = d.Find("b b")
	require.ErrorIs(t, err, ErrInvalidAlias)
	require.Nil(t, d.Devices("bob"))
	require.Nil(t, d.Devices("b b"))
	_, ok = d.Owner("bob")
	require.False(t, ok)
	cert, err := d.Certificate(dev.key)
	require.NoError(t, err)
	require.Equal(t, *dev.cert, cert)
	require.Equal(t, [32]byte{1}, cert.Peer)
	_, err = d.Certificate(DeviceKey{42})
	require.ErrorIs(t, err, ErrUnknownDevice)
	_, err = d.Session(DeviceKey{42})
	require.ErrorIs(t, err, ErrUnknownDevice)
	require.ErrorIs(t, d.SessionValid(DeviceKey{42}), ErrUnknownDevice)
}

func TestApplyOutOfOrder(t *testing.T) {
	dev := newTestDevice(t, 1).certify(testIdentity(1), "alice", ms(0))
	dev.login(ms(0))
	d := NewDirectory(0)

	err := d.Apply(dev.key, 1, dev.blocks[1])
	require.ErrorIs(t, err, ErrOutOfOrder)
	require.ErrorContains(t, err, "want block 0")
	require.Equal(t, uint64(0), d.Next(dev.key))
	require.Empty(t, d.Users())

	require.NoError(t, d.Apply(dev.key, 0, dev.blocks[0]))
	require.ErrorIs(t, d.Apply(dev.key, 0, dev.blocks[0]), ErrOutOfOrder)
	require.ErrorIs(t, d.Apply(dev.key, 2, dev.blocks[1]), ErrOutOfOrder)
	require.Equal(t, uint64(1), d.Next(dev.key))
	require.NoError(t, d.Apply(dev.key, 1, dev.blocks[1]))
	require.Equal(t, uint64(2), d.Next(dev.key))
}

func TestDeviceWithoutValidCertificateIsIgnored(t *testing.T) {
	alice := testIdentity(1)
	good := newTestDevice(t, 1).certify(alice, "alice", ms(0))
	forged := *newTestDevice(t, 9).certify(alice, "alice", ms(0)).cert
	forged.DeviceName = "evil"
	forgedBlock, err := EncodeEntry(&forged)
	require.NoError(t, err)
	login, err := EncodeEntry(&Login{Alias: "alice", IP: "10.0.0.1", Port: 1})
	require.NoError(t, err)

	cases := map[string]struct {
		block []byte
		also  error
	}{
		"garbage":               {[]byte("hello"), ErrBadEntry},
		"a login":               {login, ErrBadEntry},
		"another device's cert": {good.blocks[0], ErrBadEntry},
		"a forged signature":    {forgedBlock, ErrBadSignature},
		"an empty block":        {nil, ErrBadEntry},
	}
	for name, c := range cases {
		d := NewDirectory(0)
		applyAll(t, d, good)
		_, dev := testDeviceKey(9)
		err := d.Apply(dev, 0, c.block)
		require.ErrorIs(t, err, ErrBadCertificate, name)
		require.ErrorIs(t, err, c.also, name)
		// Its later blocks, valid or not, are ignored, each with an error.
		err = d.Apply(dev, 1, login)
		require.ErrorIs(t, err, ErrBadCertificate, name)
		require.NotErrorIs(t, err, ErrBadEntry, name)
		require.Equal(t, uint64(2), d.Next(dev), name)
		d.SetPresence(dev, true, t0)

		require.Len(t, d.Users(), 1, name)
		_, err = d.Certificate(dev)
		require.ErrorIs(t, err, ErrUnknownDevice, name)
		_, err = d.Session(dev)
		require.ErrorIs(t, err, ErrUnknownDevice, name)
		require.ErrorIs(t, d.SessionValid(dev), ErrUnknownDevice, name)
	}
}

func TestBadEntriesAreSkipped(t *testing.T) {
	alice, bob := testIdentity(1), testIdentity(2)
	dev := newTestDevice(t, 1).certify(alice, "alice", ms(0))
	other := newTestDevice(t, 2).certify(bob, "bob", ms(0))
	d := NewDirectory(0)
	applyAll(t, d, dev, other)

	apply := func(b []byte) error {
		dev.blocks = append(dev.blocks, b)
		return d.Apply(dev.key, uint64(len(dev.blocks)-1), b)
	}
	enc := func(e Entry) []byte {
		b, err := EncodeEntry(e)
		require.NoError(t, err)
		return b
	}
	require.ErrorIs(t, apply([]byte{0xff}), ErrBadEntry)
	require.ErrorIs(t, apply(dev.blocks[0]), ErrBadEntry, "a certificate past entry 0")
	require.ErrorIs(t, apply(enc(&Login{Alias: "bob", IP: "10.0.0.1", Port: 1})), ErrBadEntry, "a login under another alias")
	u, err := NewUnregister(bob, "bob", t0)
	require.NoError(t, err)
	require.ErrorIs(t, apply(enc(u)), ErrBadEntry, "an unregister by another identity")
	forged, err := NewUnregister(alice, "alice", t0)
	require.NoError(t, err)
	forged.At++
	require.ErrorIs(t, apply(enc(forged)), ErrBadSignature)

	// None of it took effect, and the device's next entries apply.
	require.Len(t, d.Users(), 2)
	_, ok := d.Owner("bob")
	require.True(t, ok)
	dev.login(ms(time.Second))
	applyAll(t, d, dev)
	got, err := d.Find("alice")
	require.NoError(t, err)
	require.Equal(t, "192.0.2.1", got.IP)
}

func TestLoggedInIsLastLoginAfterLastLogout(t *testing.T) {
	alice := testIdentity(1)
	dev := newTestDevice(t, 1).certify(alice, "alice", ms(0))
	d := NewDirectory(0)
	d.SetPresence(dev.key, true, t0)

	dev.logout(ms(0)) // a logout with no session is harmless
	applyAll(t, d, dev)
	require.ErrorIs(t, d.SessionValid(dev.key), ErrNotLoggedIn)

	dev.login(ms(time.Second))
	applyAll(t, d, dev)
	require.NoError(t, d.SessionValid(dev.key))
	got, _ := d.Find("alice")
	require.True(t, got.Online)

	dev.logout(ms(2 * time.Second))
	applyAll(t, d, dev)
	require.ErrorIs(t, d.SessionValid(dev.key), ErrNotLoggedIn)
	got, err := d.Find("alice")
	require.NoError(t, err)
	require.Equal(t, UserSession{
		Alias: "alice", Identity: alice.Key(), Device: dev.key, DeviceName: "device 1", LastSeen: t0,
	}, got, "logged out: listed, offline, without an address")

	// Timestamps do not order sessions; the feed does.
	dev.login(ms(-time.Hour))
	applyAll(t, d, dev)
	got, _ = d.Find("alice")
	require.True(t, got.Online)
	require.Equal(t, t0.Add(-time.Hour), got.Started)
}

func TestAliasGoesToEarliestClaim(t *testing.T) {
	early, late := testIdentity(1), testIdentity(2)
	lateDev := newTestDevice(t, 1).certify(late, "bob", ms(time.Hour))
	earlyDev := newTestDevice(t, 2).certify(early, "BOB", ms(0))
	lateDev.login(ms(time.Hour))
	earlyDev.login(ms(time.Hour))

	d := NewDirectory(0)
	applyAll(t, d, lateDev)
	owner, _ := d.Owner("bob")
	require.Equal(t, late.Key(), owner, "alone, the late claim owns the alias")

	applyAll(t, d, earlyDev)
	owner, _ = d.Owner("bob")
	require.Equal(t, early.Key(), owner)
	loser := "bob~" + late.Key().String()[:8]
	users := d.Users()
	require.Len(t, users, 2)
	require.Equal(t, earlyDev.key, users["bob"].Device)
	require.Equal(t, "bob", users["bob"].Alias)
	require.Equal(t, lateDev.key, users[loser].Device)
	require.Equal(t, loser, users[loser].Alias, "the loser is never shown as the owner")
	owner, _ = d.Owner(loser)
	require.Equal(t, late.Key(), owner)
	got, err := d.Find(loser)
	require.NoError(t, err)
	require.Equal(t, lateDev.key, got.Device)
	got, err = d.Find("bob~" + late.Key().String())
	require.ErrorIs(t, err, ErrUserNotFound, "the long form is only for prefix collisions")

	// The loser's session still counts as its identity's: tokens name it
	// by its listed name.
	tok, err := d.VerifyToken(lateDev.token(1, ms(time.Hour), ms(2*time.Hour)), t0.Add(time.Hour))
	require.NoError(t, err)
	require.Equal(t, "bob", tok.Alias)
	require.Equal(t, loser, tok.Name)
}

func TestAliasTieGoesToSmallerIdentityKey(t *testing.T) {
	a, b := testIdentity(1), testIdentity(2)
	small, large := a, b
	if ak, bk := a.Key(), b.Key(); bytes.Compare(ak[:], bk[:]) > 0 {
		small, large = b, a
	}
	d := NewDirectory(0)
	applyAll(t, d, newTestDevice(t, 1).certify(large, "bob", ms(0)), newTestDevice(t, 2).certify(small, "bob", ms(0)))
	owner, _ := d.Owner("bob")
	require.Equal(t, small.Key(), owner)
	_, ok := d.Owner("bob~" + large.Key().String()[:8])
	require.True(t, ok)
}

func TestAliasClaimIsTheIdentitysEarliest(t *testing.T) {
	a, b := testIdentity(1), testIdentity(2)
	d := NewDirectory(0)
	applyAll(t, d,
		newTestDevice(t, 1).certify(a, "bob", ms(10*time.Second)),
		newTestDevice(t, 2).certify(b, "bob", ms(5*time.Second)),
		newTestDevice(t, 3).certify(a, "bob", ms(time.Second)))
	owner, _ := d.Owner("bob")
	require.Equal(t, a.Key(), owner)
	require.Len(t, d.Devices("bob"), 2, "both of a's devices are listed under its name")
}

func TestAssignNamesOnPrefixCollision(t *testing.T) {
	// Three identities share their first 8 hex digits; a grinding attacker
	// can make that happen. Each still gets a name of its own.
	owner := IdentityKey{0xaa, 0xbb, 0xcc, 0xdd, 1}
	first := IdentityKey{0xaa, 0xbb, 0xcc, 0xdd, 2}
	second := IdentityKey{0xaa, 0xbb, 0xcc, 0xdd, 3}
	names := assignNames("bob", map[IdentityKey]int64{second: 30, owner: 10, first: 20})
	require.Equal(t, map[claimKey]string{
		{owner, "bob"}:  "bob",
		{first, "bob"}:  "bob~aabbccdd",
		{second, "bob"}: "bob~" + second.String(),
	}, names)
	for _, n := range names {
		got, _, err := parseName(n)
		require.NoError(t, err)
		require.Equal(t, n, got)
	}
}

func TestUnregister(t *testing.T) {
	owner, rival := testIdentity(1), testIdentity(2)
	ownerDev := newTestDevice(t, 1).certify(owner, "bob", ms(0))
	ownerPhone := newTestDevice(t, 2).certify(owner, "bob", ms(0))
	rivalDev := newTestDevice(t, 3).certify(rival, "bob", ms(time.Hour))
	login := ownerDev.login(ms(time.Minute))
	rivalDev.login(ms(time.Hour))
	tok := ownerDev.token(login, ms(time.Minute), ms(24*time.Hour))
	d := NewDirectory(0)
	applyAll(t, d, ownerDev, ownerPhone, rivalDev)
	for _, dev := range []*testDevice{ownerDev, ownerPhone, rivalDev} {
		d.SetPresence(dev.key, true, t0)
	}
	_, err := d.VerifyToken(tok, t0.Add(time.Hour))
	require.NoError(t, err)

	// An unregister on the phone retires both of the owner's devices.
	ownerPhone.unregister(owner, "bob", ms(0)) // at == claimed: retired
	applyAll(t, d, ownerPhone)
	got, _ := d.Owner("bob")
	require.Equal(t, rival.Key(), got, "the alias is free, and the rival has it")
	require.Len(t, d.Users(), 1)
	require.Len(t, d.Devices("bob"), 1)
	_, err = d.Session(ownerDev.key)
	require.ErrorIs(t, err, ErrUnregistered)
	require.ErrorIs(t, d.SessionValid(ownerDev.key), ErrUnregistered)
	_, err = d.VerifyToken(tok, t0.Add(time.Hour))
	require.ErrorIs(t, err, ErrTokenRevoked)

	// The owner claims it again on a new device: a claim after the
	// tombstone stands, and now comes after the rival's.
	again := newTestDevice(t, 4).certify(owner, "bob", ms(2*time.Hour))
	applyAll(t, d, again)
	got, _ = d.Owner("bob")
	require.Equal(t, rival.Key(), got)
	got, ok := d.Owner("bob~" + owner.Key().String()[:8])
	require.True(t, ok)
	require.Equal(t, owner.Key(), got)
	require.Len(t, d.Devices("bob~"+owner.Key().String()[:8]), 1)

	// A claim made before the tombstone but seen only now is retired too.
	late := newTestDevice(t, 5).certify(owner, "bob", ms(-time.Second))
	applyAll(t, d, late)
	_, err = d.Session(late.key)
	require.ErrorIs(t, err, ErrUnregistered)

	// Forgetting the feed that holds the tombstone brings the claim back.
	d.Reset(ownerPhone.key)
	got, _ = d.Owner("bob")
	require.Equal(t, owner.Key(), got)
	_, err = d.VerifyToken(tok, t0.Add(time.Hour))
	require.NoError(t, err)
	applyAll(t, d, ownerPhone)
	got, _ = d.Owner("bob")
	require.Equal(t, rival.Key(), got)
}

func TestUnregisterOnlyCoversItsAliasAndIdentity(t *testing.T) {
	a, b := testIdentity(1), testIdentity(2)
	aBob := newTestDevice(t, 1).certify(a, "bob", ms(0))
	aRob := newTestDevice(t, 2).certify(a, "rob", ms(0))
	bBob := newTestDevice(t, 3).certify(b, "bob", ms(time.Hour))
	aBob.unregister(a, "rob", ms(time.Hour))
	d := NewDirectory(0)
	applyAll(t, d, aBob, aRob, bBob)
	owner, _ := d.Owner("bob")
	require.Equal(t, a.Key(), owner)
	_, ok := d.Owner("rob")
	require.False(t, ok)
	_, ok = d.Owner("bob~" + b.Key().String()[:8])
	require.True(t, ok)
}

func TestSessionLimit(t *testing.T) {
	id := testIdentity(1)
	devs := make([]*testDevice, 5)
	for i := range devs {
		devs[i] = newTestDevice(t, byte(i+1)).certify(id, "bob", ms(0))
	}
	// Started: dev0 10s, dev1 and dev2 20s (a tie), dev3 30s, dev4 5s but
	// offline.
	starts := []time.Duration{10, 20, 20, 30, 5}
	for i, dev := range devs {
		dev.login(ms(starts[i] * time.Second))
	}
	lo, hi := devs[1], devs[2]
	if bytes.Compare(lo.key[:], hi.key[:]) > 0 {
		lo, hi = hi, lo
	}
	d := NewDirectory(3)
	applyAll(t, d, devs...)
	for _, dev := range devs[:4] {
		d.SetPresence(dev.key, true, t0.Add(time.Minute))
	}

	require.NoError(t, d.SessionValid(devs[0].key))
	require.NoError(t, d.SessionValid(lo.key))
	require.NoError(t, d.SessionValid(hi.key))
	err := d.SessionValid(devs[3].key)
	require.ErrorIs(t, err, ErrSessionLimit)
	require.ErrorContains(t, err, "at most 3")
	// dev4 is offline, and started first: it would take a place if it came.
	require.NoError(t, d.SessionValid(devs[4].key))

	online := 0
	for _, s := range d.Devices("bob") {
		if s.Online {
			online++
		}
		if s.Device == devs[3].key {
			require.False(t, s.Online, "over the limit: not shown online")
			require.Equal(t, "192.0.2.4", s.IP)
		}
	}
	require.Equal(t, 3, online)
	primary, err := d.Find("bob")
	require.NoError(t, err)
	require.Equal(t, lo.key, primary.Device, "the latest start within the limit, ties to the smaller key")

	// Tokens of the session over the limit are refused for that reason.
	_, err = d.VerifyToken(devs[3].token(1, ms(0), ms(time.Hour)), t0)
	require.ErrorIs(t, err, ErrSessionLimit)

	// dev4 comes online: it started first, so hi (the last of the tie) is
	// pushed out; then dev0 logs out and hi is back.
	d.SetPresence(devs[4].key, true, t0.Add(time.Minute))
	require.NoError(t, d.SessionValid(devs[4].key))
	require.ErrorIs(t, d.SessionValid(hi.key), ErrSessionLimit)
	require.NoError(t, d.SessionValid(lo.key))
	devs[0].logout(ms(time.Minute))
	applyAll(t, d, devs[0])
	require.NoError(t, d.SessionValid(hi.key))
	require.ErrorIs(t, d.SessionValid(devs[3].key), ErrSessionLimit)

	// A device going away frees its place too.
	d.SetPresence(lo.key, false, t0.Add(time.Minute))
	require.NoError(t, d.SessionValid(devs[3].key))
}

func TestSessionLimitIsPerIdentity(t *testing.T) {
	a, b := testIdentity(1), testIdentity(2)
	d := NewDirectory(1)
	aBob := newTestDevice(t, 1).certify(a, "bob", ms(0))
	aRob := newTestDevice(t, 2).certify(a, "rob", ms(0)) // same identity, other alias
	bAmy := newTestDevice(t, 3).certify(b, "amy", ms(0))
	aBob.login(ms(1 * time.Second))
	aRob.login(ms(2 * time.Second))
	bAmy.login(ms(3 * time.Second))
	applyAll(t, d, aBob, aRob, bAmy)
	for _, dev := range []*testDevice{aBob, aRob, bAmy} {
		d.SetPresence(dev.key, true, t0)
	}
	require.NoError(t, d.SessionValid(aBob.key))
	require.ErrorIs(t, d.SessionValid(aRob.key), ErrSessionLimit)
	require.ErrorContains(t, d.SessionValid(aRob.key), "at most 1")
	require.NoError(t, d.SessionValid(bAmy.key))
	rob, err := d.Find("rob")
	require.NoError(t, err)
	require.False(t, rob.Online)
}

func TestDefaultSessionLimit(t *testing.T) {
	id := testIdentity(1)
	for _, max := range []int{0, -1} {
		d := NewDirectory(max)
		var devs []*testDevice
		for i := range 4 {
			dev := newTestDevice(t, byte(i+1)).certify(id, "bob", ms(0))
			dev.login(ms(time.Duration(i) * time.Second))
			devs = append(devs, dev)
			applyAll(t, d, dev)
			d.SetPresence(dev.key, true, t0)
		}
		for _, dev := range devs[:DefaultMaxSessions] {
			require.NoError(t, d.SessionValid(dev.key))
		}
		require.ErrorIs(t, d.SessionValid(devs[DefaultMaxSessions].key), ErrSessionLimit)
	}
}

func TestPrimaryDevice(t *testing.T) {
	id := testIdentity(1)
	a := newTestDevice(t, 1).certify(id, "bob", ms(0))
	b := newTestDevice(t, 2).certify(id, "bob", ms(0))
	c := newTestDevice(t, 3).certify(id, "bob", ms(0))
	a.login(ms(1 * time.Minute))
	b.login(ms(2 * time.Minute))
	c.login(ms(3 * time.Minute))
	d := NewDirectory(0)
	applyAll(t, d, a, b, c)
	primary := func() DeviceKey {
		t.Helper()
		s, err := d.Find("bob")
		require.NoError(t, err)
		return s.Device
	}
	order := func() []DeviceKey {
		var keys []DeviceKey
		for _, s := range d.Devices("bob") {
			keys = append(keys, s.Device)
		}
		return keys
	}

	// Nobody online, nothing seen: the latest start.
	require.Equal(t, c.key, primary())
	// Online beats a later start.
	d.SetPresence(a.key, true, t0.Add(time.Hour))
	require.Equal(t, a.key, primary())
	s, _ := d.Find("bob")
	require.True(t, s.Online)
	// Among online sessions, the latest start.
	d.SetPresence(b.key, true, t0.Add(time.Hour))
	require.Equal(t, b.key, primary())
	require.Equal(t, []DeviceKey{b.key, a.key, c.key}, order())

	// None online: the session seen or started most recently.
	d.SetPresence(a.key, false, t0.Add(10*time.Minute))
	d.SetPresence(b.key, false, t0.Add(5*time.Minute))
	require.Equal(t, a.key, primary())
	s, _ = d.Find("bob")
	require.False(t, s.Online)
	require.Equal(t, t0.Add(10*time.Minute), s.LastSeen)
	require.Equal(t, "192.0.2.1", s.IP, "the last known address of a session not logged out")
	require.Equal(t, []DeviceKey{a.key, b.key, c.key}, order())

	// Logged-out devices come last, the most recently seen first.
	a.logout(ms(time.Hour))
	applyAll(t, d, a)
	require.Equal(t, []DeviceKey{b.key, c.key, a.key}, order())
	b.logout(ms(time.Hour))
	c.logout(ms(time.Hour))
	applyAll(t, d, b, c)
	require.Equal(t, []DeviceKey{a.key, b.key, c.key}, order())
	s, _ = d.Find("bob")
	require.Empty(t, s.IP)
	require.Zero(t, s.Port)
}

func TestPrimaryDeviceTie(t *testing.T) {
	id := testIdentity(1)
	a := newTestDevice(t, 1).certify(id, "bob", ms(0))
	b := newTestDevice(t, 2).certify(id, "bob", ms(0))
	a.login(ms(time.Minute))
	b.login(ms(time.Minute))
	d := NewDirectory(0)
	applyAll(t, d, a, b)
	d.SetPresence(a.key, true, t0)
	d.SetPresence(b.key, true, t0)
	small := a.key
	if bytes.Compare(b.key[:], a.key[:]) < 0 {
		small = b.key
	}
	s, err := d.Find("bob")
	require.NoError(t, err)
	require.Equal(t, small, s.Device)
}

func TestReset(t *testing.T) {
	dev := newTestDevice(t, 1).certify(testIdentity(1), "bob", ms(0))
	dev.login(ms(0))
	d := NewDirectory(0)
	applyAll(t, d, dev)
	d.SetPresence(dev.key, true, t0)
	require.Equal(t, uint64(2), d.Next(dev.key))

	d.Reset(dev.key)
	require.Equal(t, uint64(0), d.Next(dev.key))
	require.Empty(t, d.Users())
	_, err := d.Session(dev.key)
	require.ErrorIs(t, err, ErrUnknownDevice)

	// The truncated feed grows another history; presence was kept.
	dev.blocks = dev.blocks[:1]
	dev.login(ms(time.Hour))
	applyAll(t, d, dev)
	s, err := d.Find("bob")
	require.NoError(t, err)
	require.True(t, s.Online)
	require.Equal(t, t0.Add(time.Hour), s.Started)

	// A device refused for its certificate gets another chance after Reset.
	_, other := testDeviceKey(9)
	require.ErrorIs(t, d.Apply(other, 0, []byte("junk")), ErrBadCertificate)
	d.Reset(other)
	dev9 := &testDevice{t: t, n: 9, key: other}
	dev9.sk, _ = testDeviceKey(9)
	dev9.certify(testIdentity(2), "amy", ms(0))
	applyAll(t, d, dev9)
	_, err = d.Find("amy")
	require.NoError(t, err)
}

func TestVerifyToken(t *testing.T) {
	bob := testIdentity(1)
	dev := newTestDevice(t, 1).certify(bob, "bob", ms(0))
	first := dev.login(ms(0))
	d := NewDirectory(0)
	applyAll(t, d, dev)
	now := t0.Add(time.Minute)

	valid := dev.token(first, ms(0), ms(time.Hour))
	tok, err := d.VerifyToken(valid, now)
	require.NoError(t, err)
	require.Equal(t, "bob", tok.Name)
	require.Equal(t, dev.key, tok.Device)
	require.Equal(t, bob.Key(), tok.Identity)

	check := func(tok string, now time.Time, want error) {
		t.Helper()
		_, err := d.VerifyToken(tok, now)
		require.ErrorIs(t, err, want)
		for _, other := range []error{ErrTokenInvalid, ErrTokenExpired, ErrTokenRevoked, ErrTokenUnknown, ErrSessionLimit} {
			if other != want {
				require.NotErrorIs(t, err, other)
			}
		}
	}
	check(valid, t0.Add(time.Hour), ErrTokenExpired)
	check(valid, t0.Add(time.Hour-time.Millisecond), nil)
	check(valid[:len(valid)-2]+"AA", now, ErrTokenInvalid)
	check(dev.token(first, ms(10*time.Minute), ms(time.Hour)), now, ErrTokenInvalid) // issued 9 minutes ahead
	check(dev.token(first, ms(5*time.Minute), ms(time.Hour)), now, nil)              // 4 minutes: clock skew
	check(dev.token(5, ms(0), ms(time.Hour)), now, ErrTokenUnknown)                  // not seen yet
	check(dev.token(0, ms(0), ms(time.Hour)), now, ErrTokenInvalid)                  // the certificate, not a login

	// Claims that contradict the certificate.
	liar, err := IssueToken(dev.sk, TokenClaims{Identity: testIdentity(2).Key(), Device: dev.key, Alias: "bob", Login: first, Issued: ms(0), Expires: ms(time.Hour)})
	require.NoError(t, err)
	check(liar, now, ErrTokenInvalid)
	liar, err = IssueToken(dev.sk, TokenClaims{Identity: bob.Key(), Device: dev.key, Alias: "rob", Login: first, Issued: ms(0), Expires: ms(time.Hour)})
	require.NoError(t, err)
	check(liar, now, ErrTokenInvalid)

	// An unknown device, and one ignored for a bad certificate.
	stranger := newTestDevice(t, 2).certify(bob, "bob", ms(0))
	stranger.login(ms(0))
	check(stranger.token(1, ms(0), ms(time.Hour)), now, ErrTokenUnknown)
	require.ErrorIs(t, d.Apply(stranger.key, 0, []byte{1}), ErrBadCertificate)
	check(stranger.token(1, ms(0), ms(time.Hour)), now, ErrTokenUnknown)

	// A new login without a logout (a new address) keeps old tokens.
	second := dev.login(ms(30 * time.Second))
	applyAll(t, d, dev)
	check(valid, now, nil)
	check(dev.token(second, ms(0), ms(time.Hour)), now, nil)

	// A logout revokes them all, and a later login's tokens are new.
	logout := dev.logout(ms(40 * time.Second))
	applyAll(t, d, dev)
	check(valid, now, ErrTokenRevoked)
	check(dev.token(second, ms(0), ms(time.Hour)), now, ErrTokenRevoked)
	check(dev.token(logout, ms(0), ms(time.Hour)), now, ErrTokenInvalid)
	third := dev.login(ms(50 * time.Second))
	applyAll(t, d, dev)
	check(valid, now, ErrTokenRevoked)
	check(dev.token(third, ms(0), ms(time.Hour)), now, nil)

	// Unregistering the alias revokes them too.
	dev.unregister(bob, "bob", ms(0))
	applyAll(t, d, dev)
	check(dev.token(third, ms(0), ms(time.Hour)), now, ErrTokenRevoked)
}

func TestReturnedValuesAreCopies(t *testing.T) {
	dev := newTestDevice(t, 1).certify(testIdentity(1), "bob", ms(0))
	dev.login(ms(0))
	d := NewDirectory(0)
	applyAll(t, d, dev)

	users := d.Users()
	users["bob"].Metadata["device"] = "changed"
	delete(users, "bob")
	s, err := d.Find("bob")
	require.NoError(t, err)
	s.Metadata["device"] = "changed"
	list := d.Devices("bob")
	list[0].Metadata["device"] = "changed"
	list[0].IP = "changed"
	s, err = d.Session(dev.key)
	require.NoError(t, err)
	s.Metadata["x"] = "y"

	s, err = d.Find("bob")
	require.NoError(t, err)
	require.Equal(t, map[string]string{"device": "1"}, s.Metadata)
	require.Equal(t, "192.0.2.1", s.IP)
}

// TestSameFeedsSameDirectory applies the same device feeds in many
// interleavings, with resets in between, and expects one directory.
func TestSameFeedsSameDirectory(t *testing.T) {
	ids := []*Identity{testIdentity(1), testIdentity(2), testIdentity(3)}
	var devs []*testDevice
	for i := range 6 {
		id := ids[i%3]
		dev := newTestDevice(t, byte(i+1)).certify(id, []string{"bob", "amy"}[i%2], ms(time.Duration(i%3)*time.Second))
		dev.login(ms(time.Duration(i) * time.Minute))
		if i == 2 {
			dev.logout(ms(time.Hour))
		}
		if i == 4 {
			dev.unregister(id, "bob", ms(0))
		}
		dev.login(ms(time.Duration(i) * time.Minute))
		devs = append(devs, dev)
	}
	presence := func(d *Directory) {
		for i, dev := range devs {
			d.SetPresence(dev.key, i%4 != 3, t0.Add(time.Duration(i)*time.Minute))
		}
	}
	reference := NewDirectory(2)
	applyAll(t, reference, devs...)
	presence(reference)

	rng := rand.New(rand.NewPCG(1, 2))
	for round := range 50 {
		d := NewDirectory(2)
		presence(d)
		for {
			var pending []*testDevice
			for _, dev := range devs {
				if d.Next(dev.key) < uint64(len(dev.blocks)) {
					pending = append(pending, dev)
				}
			}
			if len(pending) == 0 {
				break
			}
			dev := pending[rng.IntN(len(pending))]
			if rng.IntN(10) == 0 {
				d.Reset(dev.key)
				continue
			}
			i := d.Next(dev.key)
			require.NoError(t, d.Apply(dev.key, i, dev.blocks[i]))
		}
		requireSameDirectory(t, reference, d, devs, fmt.Sprint("round ", round))
	}
}

func requireSameDirectory(t *testing.T, want, got *Directory, devs []*testDevice, msg string) {
	t.Helper()
	require.Equal(t, want.Users(), got.Users(), msg)
	for name := range want.Users() {
		require.Equal(t, want.Devices(name), got.Devices(name), msg)
	}
	for _, dev := range devs {
		require.Equal(t, fmt.Sprint(want.SessionValid(dev.key)), fmt.Sprint(got.SessionValid(dev.key)), msg)
	}
}

// FuzzDirectoryApply builds a few device feeds from the input — valid
// certificates, logins, logouts, unregisters, and raw junk — and applies
// them with resets and presence changes in between. It checks that nothing
// panics, that the listing is consistent with itself and with the rules,
// and that applying the same feeds in another order gives the same
// directory.
func FuzzDirectoryApply(f *testing.F) {
	f.Add([]byte{0, 0, 0, 0, 1, 0, 0, 1, 1, 1, 7, 0, 1, 7, 1, 1})
	f.Add([]byte{0, 0, 1, 9, 0, 1, 0, 3, 0, 2, 2, 0, 2, 7, 0, 7, 1, 7, 2, 3, 0, 1, 9, 1})
	f.Add([]byte{4, 0, 3, 0xff, 0x91, 0x01, 0, 0, 0, 0, 7, 0, 5, 0, 2, 0, 6, 0, 7, 0})
	f.Add([]byte{0, 0, 0, 4, 0, 1, 0, 4, 0, 2, 0, 4, 0, 3, 0, 4, 1, 0, 1, 1, 1, 1, 1, 2, 1, 1, 1, 3, 1, 1, 6, 0, 6, 1, 6, 2, 6, 3, 7, 0, 7, 1, 7, 2, 7, 3})

	ids := []*Identity{testIdentity(1), testIdentity(2), testIdentity(3)}
	aliases := []string{"bob", "amy", "bob"}
	const ndev = 4
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) > 512 {
			return // a few hundred operations cover the rules
		}
		devs := make([]*testDevice, ndev)
		for i := range devs {
			devs[i] = newTestDevice(t, byte(i+1))
		}
		d := NewDirectory(2)
		online := map[DeviceKey]bool{}
		next := func() byte {
			if len(in) == 0 {
				return 0
			}
			b := in[0]
			in = in[1:]
			return b
		}
		for len(in) > 0 {
			op, dev := next()%8, devs[int(next())%ndev]
			switch op {
			case 0: // a certificate, valid as entry 0 only
				id := ids[int(next())%len(ids)]
				c, err := NewCertificate(id, Certificate{
					Device: dev.key, Peer: [32]byte{dev.n}, Alias: aliases[int(next())%len(aliases)],
					Claimed: int64(next()), Created: 255,
				})
				require.NoError(t, err)
				if dev.cert == nil {
					dev.cert = c
				}
				dev.add(c)
			case 1: // a login, under the certificate's alias if there is one
				alias := "amy"
				if dev.cert != nil {
					alias = dev.cert.Alias
				}
				dev.add(&Login{Alias: alias, IP: "192.0.2.1", Port: 1, Started: int64(next())})
			case 2:
				dev.add(&Logout{At: int64(next())})
			case 3:
				u, err := NewUnregister(ids[int(next())%len(ids)], aliases[int(next())%len(aliases)], time.UnixMilli(int64(next())))
				require.NoError(t, err)
				dev.add(u)
			case 4: // raw bytes
				n := int(next()) % 16
				n = min(n, len(in))
				dev.blocks = append(dev.blocks, bytes.Clone(in[:n]))
				in = in[n:]
			case 5:
				d.Reset(dev.key)
			case 6:
				online[dev.key] = !online[dev.key]
				d.SetPresence(dev.key, online[dev.key], time.UnixMilli(int64(next())))
			case 7: // apply the device's next block
				if i := d.Next(dev.key); i < uint64(len(dev.blocks)) {
					err := d.Apply(dev.key, i, dev.blocks[i])
					if err != nil && !errorsIsAny(err, ErrBadEntry, ErrBadSignature, ErrBadCertificate) {
						t.Fatalf("apply: unexpected error: %v", err)
					}
				}
			}
			checkDirectory(t, d, devs)
		}

		// Apply the rest, then compare with the same feeds applied one
		// device after another, in reverse.
		for _, dev := range devs {
			for i := d.Next(dev.key); i < uint64(len(dev.blocks)); i++ {
				_ = d.Apply(dev.key, i, dev.blocks[i])
			}
		}
		other := NewDirectory(2)
		for _, dev := range slices.Backward(devs) {
			for i := range dev.blocks {
				_ = other.Apply(dev.key, uint64(i), dev.blocks[i])
			}
		}
		for k, on := range online {
			other.SetPresence(k, on, time.Time{})
			d.SetPresence(k, on, time.Time{})
		}
		checkDirectory(t, d, devs)
		requireSameDirectory(t, d, other, devs, "reordered")
	})
}

// checkDirectory checks the listing against itself and the rules.
func checkDirectory(t *testing.T, d *Directory, devs []*testDevice) {
	t.Helper()
	users := d.Users()
	onlinePer := map[IdentityKey]int{}
	listed := map[DeviceKey]bool{}
	for name, u := range users {
		n, _, err := parseName(name)
		require.NoError(t, err, "listed name %q", name)
		require.Equal(t, name, n, "listed name %q is not normalized", name)
		require.Equal(t, name, u.Alias)
		found, err := d.Find(name)
		require.NoError(t, err)
		require.Equal(t, u, found)
		owner, ok := d.Owner(name)
		require.True(t, ok)
		require.Equal(t, u.Identity, owner)
		list := d.Devices(name)
		require.NotEmpty(t, list)
		require.Equal(t, u, list[0])
		for _, s := range list {
			require.Equal(t, name, s.Alias)
			require.Equal(t, u.Identity, s.Identity, "one name, one identity")
			require.False(t, listed[s.Device], "device listed twice")
			listed[s.Device] = true
			if s.Online {
				onlinePer[s.Identity]++
				require.NoError(t, d.SessionValid(s.Device))
				require.NotEmpty(t, s.IP)
			}
		}
	}
	for id, n := range onlinePer {
		require.LessOrEqual(t, n, 2, "identity %s over the session limit", id)
	}
	for _, dev := range devs {
		_, err := d.Session(dev.key)
		require.Equal(t, err == nil, listed[dev.key], "device %d", dev.n)
		if err := d.SessionValid(dev.key); err != nil {
			require.True(t, errorsIsAny(err, ErrUnknownDevice, ErrUnregistered, ErrNotLoggedIn, ErrSessionLimit), "%v", err)
		}
		// Tokens of the device's latest login verify or fail cleanly.
		if dev.cert != nil && len(dev.blocks) > 1 {
			s, err := IssueToken(dev.sk, TokenClaims{Identity: dev.cert.Identity, Device: dev.key, Alias: dev.cert.Alias, Login: uint64(len(dev.blocks) - 1), Issued: 0, Expires: 1000})
			require.NoError(t, err)
			tok, err := d.VerifyToken(s, time.UnixMilli(500))
			if err == nil {
				require.NotEmpty(t, tok.Name)
			} else {
				require.True(t, errorsIsAny(err, ErrTokenInvalid, ErrTokenRevoked, ErrTokenUnknown, ErrSessionLimit), "%v", err)
			}
		}
	}
}
