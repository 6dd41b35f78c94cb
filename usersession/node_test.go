package usersession

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/hyperfeed/hyperfeed/feed"
	"github.com/hyperfeed/hyperfeed/swarm"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// Every node in these tests listens on 127.0.0.1, finds its peers from
// Config.Peers and the devices it learns of, and never uses mDNS.
const (
	testHeartbeat = 100 * time.Millisecond
	// testWait bounds every wait for the network: long, since nothing
	// should take it, so that a slow machine does not fail a test.
	testWait = 20 * time.Second
)

// testNet is a directory of its own (a random topic) with its nodes' data
// under one temporary directory.
type testNet struct {
	t     *testing.T
	topic string
	base  string
}

func newTestNet(t *testing.T) *testNet {
	var b [8]byte
	rand.Read(b[:])
	return &testNet{t: t, topic: "test-" + hex.EncodeToString(b[:]), base: t.TempDir()}
}

// config is a node's configuration: data in base/name, and peers.
func (tn *testNet) config(name string, peers ...*Node) Config {
	cfg := Config{
		Dir:               filepath.Join(tn.base, name),
		Topic:             tn.topic,
		ListenAddr:        "127.0.0.1:0",
		NoMDNS:            true,
		HeartbeatInterval: testHeartbeat,
	}
	for _, p := range peers {
		cfg.Peers = append(cfg.Peers, addrOf(p.Self()))
	}
	return cfg
}

// start starts alias with cfg, and closes the node when the test ends.
func (tn *testNet) start(alias string, cfg Config) *Node {
	tn.t.Helper()
	n, err := tn.tryStart(alias, cfg)
	require.NoError(tn.t, err)
	return n
}

func (tn *testNet) tryStart(alias string, cfg Config) (*Node, error) {
	ctx, cancel := context.WithTimeout(context.Background(), testWait)
	defer cancel()
	n, err := StartUserSession(ctx, UserSession{Alias: alias}, cfg)
	if err == nil {
		tn.t.Cleanup(func() { n.Close() })
	}
	return n, err
}

// addrOf is where a session says it is; a node started with port 0
// publishes its swarm port, so this is also where its peers dial it.
func addrOf(s UserSession) string { return net.JoinHostPort(s.IP, strconv.Itoa(s.Port)) }

// online reports whether n lists name online.
func online(n *Node, name string) bool {
	s, err := n.FindUserSession(name)
	return err == nil && s.Online
}

func offline(n *Node, name string) bool {
	s, err := n.FindUserSession(name)
	return err == nil && !s.Online
}

func names(n *Node) []string { return slices.Sorted(maps.Keys(n.GetUsers())) }

// meshed waits until every node lists every other online.
func meshed(t *testing.T, nodes ...*Node) {
	t.Helper()
	for _, n := range nodes {
		for _, m := range nodes {
			who := m.Self().Alias
			require.Eventually(t, func() bool { return online(n, who) }, testWait, 5*time.Millisecond,
				"%s does not see %s online", n.Self().Alias, who)
		}
	}
}

func TestNodesFindEachOther(t *testing.T) {
	tn := newTestNet(t)
	a := tn.start("alice", tn.config("a"))
	b := tn.start("Bob", tn.config("b", a))
	// Carol knows only Bob: she learns of Alice through Bob's device list,
	// and connects to her at the address Alice's login publishes.
	c := tn.start("carol", tn.config("c", b))
	meshed(t, a, b, c)

	for _, n := range []*Node{a, b, c} {
		require.Equal(t, []string{"alice", "bob", "carol"}, names(n))
	}
	s, err := c.FindUserSession("ALICE")
	require.NoError(t, err)
	self := a.Self()
	require.Equal(t, "alice", s.Alias)
	require.Equal(t, "127.0.0.1", s.IP)
	require.Equal(t, a.sw.Port(), s.Port, "port 0 publishes the swarm's port")
	require.Equal(t, self.Identity, s.Identity)
	require.Equal(t, self.Device, s.Device)
	require.True(t, s.Online)
	require.WithinDuration(t, time.Now(), s.LastSeen, time.Minute, "a device connected now was seen now")
	require.Len(t, c.Devices("alice"), 1)
	require.True(t, c.sw.Connected(a.sw.Key()), "carol connects to alice directly")

	_, err = c.FindUserSession("dave")
	require.ErrorIs(t, err, ErrUserNotFound)

	// The package's functions answer for the node started last.
	users, err := GetUsers()
	require.NoError(t, err)
	require.Len(t, users, 3)
	s, err = FindUserSession("bob")
	require.NoError(t, err)
	require.Equal(t, b.Self().Device, s.Device)
	require.NoError(t, c.Close())
	_, err = GetUsers()
	require.ErrorIs(t, err, ErrNoSession)
	_, err = FindUserSession("bob")
	require.ErrorIs(t, err, ErrNoSession)
}

func TestLogoutShowsOfflineAtOnce(t *testing.T) {
	tn := newTestNet(t)
	a := tn.start("alice", tn.config("a"))
	b := tn.start("bob", tn.config("b", a))
	c := tn.start("carol", tn.config("c", a))
	meshed(t, a, b, c)

	ctx, cancel := context.WithTimeout(context.Background(), testWait)
	defer cancel()
	start := time.Now()
	require.NoError(t, b.Logout(ctx))
	for _, n := range []*Node{a, c} {
		require.Eventually(t, func() bool {
			s, err := n.FindUserSession("bob")
			// Logged out, not merely unreachable: no address any more.
			return err == nil && !s.Online && s.IP == "" && s.Port == 0
		}, 2*time.Second-time.Since(start), 5*time.Millisecond)
	}
	// Still listed: logging out is not leaving the directory.
	require.Equal(t, []string{"alice", "bob", "carol"}, names(a))
	require.ErrorIs(t, b.Logout(ctx), ErrNoSession)
	_, err := b.IssueToken(time.Minute)
	require.ErrorIs(t, err, ErrNoSession)
}

func TestCloseShowsOfflineWithinOfflineAfter(t *testing.T) {
	tn := newTestNet(t)
	// A second of OfflineAfter on 100 ms heartbeats: the connection's end
	// is seen at once, and the device stays online for the rest of the
	// second (see Config.grace).
	cfg := func(name string, peers ...*Node) Config {
		c := tn.config(name, peers...)
		c.OfflineAfter = time.Second
		return c
	}
	a := tn.start("alice", cfg("a"))
	b := tn.start("bob", cfg("b", a))
	meshed(t, a, b)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	events := a.Watch(ctx)
	closed := time.Now()
	require.NoError(t, b.Close())
	e := nextEvent(t, events, func(e Event) bool { return e.Session.Alias == "bob" })
	took := time.Since(closed)
	require.Equal(t, EventLeft, e.Kind)
	grace := b.cfg.grace()
	require.Equal(t, 600*time.Millisecond, grace)
	require.GreaterOrEqual(t, took, grace, "shown offline before OfflineAfter")
	// The bound is OfflineAfter; the rest is room for a loaded machine
	// to run the timers.
	require.Less(t, took, time.Second+500*time.Millisecond, "shown offline only after %v", took)

	s, err := a.FindUserSession("bob")
	require.NoError(t, err)
	require.False(t, s.Online)
	require.Equal(t, "127.0.0.1", s.IP, "gone, not logged out: the address stays")
	require.WithinDuration(t, closed, s.LastSeen, time.Second, "last seen when the connection ended")
}

// nextEvent returns the first event from events that match accepts.
func nextEvent(t *testing.T, events <-chan Event, match func(Event) bool) Event {
	t.Helper()
	deadline := time.NewTimer(testWait)
	defer deadline.Stop()
	for {
		select {
		case e, ok := <-events:
			require.True(t, ok, "the node stopped")
			if match(e) {
				return e
			}
		case <-deadline.C:
			require.FailNow(t, "no such event")
		}
	}
}

// cutProxy forwards TCP connections to target until cut, and after that
// swallows everything both ways without closing anything: a peer cut off
// by the network, not one that went away.
type cutProxy struct {
	ln     net.Listener
	target string
	cut    atomic.Bool
	wg     sync.WaitGroup
	mu     sync.Mutex
	conns  []net.Conn
}

func newCutProxy(t *testing.T, target string) *cutProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p := &cutProxy{ln: ln, target: target}
	p.wg.Go(p.accept)
	t.Cleanup(p.close)
	return p
}

func (p *cutProxy) addr() string { return p.ln.Addr().String() }

func (p *cutProxy) accept() {
	for {
		in, err := p.ln.Accept()
		if err != nil {
			return
		}
		out, err := net.Dial("tcp", p.target)
		if err != nil {
			in.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, in, out)
		p.mu.Unlock()
		p.wg.Go(func() { p.pump(out, in) })
		p.wg.Go(func() { p.pump(in, out) })
	}
}

func (p *cutProxy) pump(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && !p.cut.Load() {
			if _, err := dst.Write(buf[:n]); err != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (p *cutProxy) close() {
	p.ln.Close()
	p.mu.Lock()
	for _, c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// TestSilentConnectionReplaced: a connection that goes silent is given up
// after three to four keep-alive intervals, and the peer, still reachable at
// the address its login publishes, is dialled there at once. It never shows
// offline: the grace (Config.leastGrace) covers the moment between the two
// sessions, which would otherwise show it leaving and joining again. A peer
// that stays unreachable shows offline within OfflineAfter (the alice and
// bob examples' tests kill one, in-process and across namespaces).
func TestSilentConnectionReplaced(t *testing.T) {
	// The cut silences the one connection, through the proxy; Bob's login
	// address stays reachable. Bob notices the silence only after three of
	// his keep-alive intervals, made longer than Alice's: Alice alone
	// redials, while Bob still holds the session he dialled through the
	// proxy. Of two sessions dialled by different peers the swarm keeps
	// the one the smaller key dialled, so Alice's key sorts first, for her
	// redial to replace the stale session rather than be refused until Bob
	// notices.
	tn := newTestNet(t)
	orderPeerKeys(t, filepath.Join(tn.base, "a"), filepath.Join(tn.base, "b"))
	a := tn.start("alice", tn.config("a"))
	proxy := newCutProxy(t, addrOf(a.Self()))
	cfg := tn.config("b")
	cfg.Peers = []string{proxy.addr()}
	cfg.HeartbeatInterval = 10 * testHeartbeat
	b := tn.start("bob", cfg)
	// slack is room for a loaded machine.
	const slack = 300 * time.Millisecond
	require.Greater(t, 3*b.cfg.keepAlive(), a.cfg.OfflineAfter+slack, "bob could notice the cut, and redial, first")
	meshed(t, a, b)
	// Bob's session with alice, as bob's swarm reports it.
	viaProxy := func() bool {
		wctx, wcancel := context.WithCancel(context.Background())
		defer wcancel()
		sess := <-b.sw.Watch(wctx) // the sessions up now, first
		return sess.Up && sess.Addr.String() == proxy.addr()
	}
	require.True(t, viaProxy(), "bob's connection runs through the proxy")

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	events := a.Watch(ctx)
	cut := time.Now()
	proxy.cut.Store(true)
	for viaProxy() {
		require.True(t, online(a, "bob"), "bob shown offline %v after the cut", time.Since(cut))
		require.Less(t, time.Since(cut), a.cfg.OfflineAfter+slack, "the silent connection is still up")
		time.Sleep(5 * time.Millisecond)
	}
	require.Eventually(t, func() bool { return a.sw.Connected(b.sw.Key()) }, testWait, 5*time.Millisecond, "alice reconnected")
	require.True(t, online(a, "bob"))

	// Events come in order: everything about bob up to now comes before
	// carol joins.
	tn.start("carol", tn.config("c", a))
	for {
		e := nextEvent(t, events, func(e Event) bool { return e.Session.Alias == "bob" || e.Session.Alias == "carol" })
		if e.Session.Alias == "carol" && e.Kind == EventJoined {
			break
		}
		require.NotEqual(t, EventLeft, e.Kind, "bob shown leaving")
		require.NotEqual(t, EventJoined, e.Kind, "bob shown joining again")
	}
}

// orderPeerKeys gives the data directories first and second swarm keys
// (peerKeyFile) that sort in that order.
func orderPeerKeys(t *testing.T, first, second string) {
	t.Helper()
	f1, f2 := filepath.Join(first, peerKeyFile), filepath.Join(second, peerKeyFile)
	k1, err := swarm.LoadOrCreateKeyPair(f1)
	require.NoError(t, err)
	k2, err := swarm.LoadOrCreateKeyPair(f2)
	require.NoError(t, err)
	if bytes.Compare(k1.Public[:], k2.Public[:]) > 0 {
		tmp := f1 + ".swap"
		require.NoError(t, os.Rename(f1, tmp))
		require.NoError(t, os.Rename(f2, f1))
		require.NoError(t, os.Rename(tmp, f2))
	}
}

func TestNoDialToAPeerConnectedBeforeTheLoopKnows(t *testing.T) {
	// Bob is connected to Alice through a proxy. Her login comes in on
	// that session, and may be folded before the loop takes the session's
	// event; dialling her login address then would replace the session.
	tn := newTestNet(t)
	a := tn.start("alice", tn.config("a"))
	proxy := newCutProxy(t, addrOf(a.Self()))
	cfg := tn.config("b")
	cfg.Peers = []string{proxy.addr()}
	b := tn.start("bob", cfg)
	meshed(t, a, b)

	b.mu.Lock()
	defer b.mu.Unlock()
	// The state of that moment: the swarm has the session, the loop not.
	p := b.peers[a.sw.Key()]
	require.NotNil(t, p)
	saved, savedDialed := *p, maps.Clone(b.dialed)
	*p = peerState{}
	clear(b.dialed)
	dials := b.dialsLocked()
	*p, b.dialed = saved, savedDialed
	require.Empty(t, dials, "dialled a peer connected already")
}

func TestRestartKeepsIdentityAndAnswersFromDisk(t *testing.T) {
	tn := newTestNet(t)
	a := tn.start("alice", tn.config("a"))
	b := tn.start("bob", tn.config("b", a))
	meshed(t, a, b)
	before := b.Self()
	require.NoError(t, b.Close())
	require.Eventually(t, func() bool { return offline(a, "bob") }, testWait, 5*time.Millisecond)
	require.NoError(t, a.Close())

	// Nobody is running: whatever Bob's node lists now comes from disk.
	b = tn.start("bob", tn.config("b"))
	require.Empty(t, b.sw.Peers())
	users := b.GetUsers()
	require.Equal(t, []string{"alice", "bob"}, slices.Sorted(maps.Keys(users)))
	require.False(t, users["alice"].Online)
	require.Equal(t, "127.0.0.1", users["alice"].IP, "alice's last login is known")
	self := b.Self()
	require.True(t, self.Online)
	require.Equal(t, before.Identity, self.Identity)
	require.Equal(t, before.Device, self.Device)
	require.True(t, self.Started.After(before.Started) || self.Started.Equal(before.Started))

	// Alice comes back; she knows Bob's old address only, so she is told
	// his new one, and they find each other again.
	a = tn.start("alice", tn.config("a", b))
	meshed(t, a, b)
}

func TestUnregisterRemovesUserAndFreesAlias(t *testing.T) {
	tn := newTestNet(t)
	a := tn.start("alice", tn.config("a"))
	b := tn.start("bob", tn.config("b", a))
	c := tn.start("carol", tn.config("c", a))
	meshed(t, a, b, c)
	tok, err := b.IssueToken(time.Hour)
	require.NoError(t, err)
	bobID := b.Self().Identity

	ctx, cancel := context.WithTimeout(context.Background(), testWait)
	defer cancel()
	events := c.Watch(ctx)
	require.NoError(t, b.Unregister(ctx))
	e := nextEvent(t, events, func(e Event) bool { return e.Session.Alias == "bob" && e.Kind == EventUnregistered })
	require.Equal(t, bobID, e.Session.Identity)
	for _, n := range []*Node{a, c} {
		require.Eventually(t, func() bool {
			_, err := n.FindUserSession("bob")
			return errors.Is(err, ErrUserNotFound)
		}, testWait, 5*time.Millisecond)
		require.Equal(t, []string{"alice", "carol"}, names(n))
	}
	_, err = a.VerifyToken(tok)
	require.ErrorIs(t, err, ErrTokenRevoked)

	// The alias is free: another identity takes it.
	d := tn.start("bob", tn.config("d", a))
	require.Eventually(t, func() bool {
		s, err := a.FindUserSession("bob")
		return err == nil && s.Online && s.Identity == d.Self().Identity
	}, testWait, 5*time.Millisecond)
	require.NotEqual(t, bobID, d.Self().Identity)

	// Bob's data directory holds a retired device; starting there again
	// certifies a new one, which now finds the alias taken.
	_, err = tn.tryStart("bob", tn.config("b", a))
	require.ErrorIs(t, err, ErrAliasTaken)
}

func TestAliasTaken(t *testing.T) {
	tn := newTestNet(t)
	a := tn.start("alice", tn.config("a"))
	_, err := tn.tryStart("Alice", tn.config("x", a))
	require.ErrorIs(t, err, ErrAliasTaken)
	require.ErrorContains(t, err, `"alice"`)
	require.Equal(t, []string{"alice"}, names(a))

	// The data directory of the refused start holds no certificate: a
	// start under another alias there is a first start.
	x := tn.start("alex", tn.config("x", a))
	require.Equal(t, "alex", x.Self().Alias)
	meshed(t, a, x)
}

func TestAliasMismatch(t *testing.T) {
	tn := newTestNet(t)
	a := tn.start("alice", tn.config("a"))
	require.NoError(t, a.Close())
	_, err := tn.tryStart("zed", tn.config("a"))
	require.ErrorIs(t, err, ErrAliasMismatch)
}

func TestNodeSessionLimit(t *testing.T) {
	tn := newTestNet(t)
	cfg := func(name string, peers ...*Node) Config {
		c := tn.config(name, peers...)
		c.MaxSessions = 2
		// The start waits up to a heartbeat for the user's other devices
		// to connect: make that ample for a loaded machine.
		c.HeartbeatInterval = time.Second
		return c
	}
	s1 := tn.start("sam", cfg("s1"))
	exported, err := s1.ExportIdentity(nil)
	require.NoError(t, err)
	for _, d := range []string{"s2", "s3"} {
		require.NoError(t, AddDevice(filepath.Join(tn.base, d), exported, nil))
	}
	s2 := tn.start("sam", cfg("s2", s1))
	require.Equal(t, s1.Self().Identity, s2.Self().Identity)
	require.Eventually(t, func() bool {
		devs := s1.Devices("sam")
		return len(devs) == 2 && devs[0].Online && devs[1].Online
	}, testWait, 5*time.Millisecond)

	_, err = tn.tryStart("sam", cfg("s3", s1))
	require.ErrorIs(t, err, ErrSessionLimit)
	require.ErrorContains(t, err, `alias "sam" already has 2 sessions online (the limit)`)
	require.Len(t, s1.Devices("sam"), 2, "the refused device appended nothing")

	// One of the two leaves: there is room for the third.
	ctx, cancel := context.WithTimeout(context.Background(), testWait)
	defer cancel()
	require.NoError(t, s2.Logout(ctx))
	s3 := tn.start("sam", cfg("s3", s1))
	require.Eventually(t, func() bool {
		return len(s1.Devices("sam")) == 3 && online(s1, "sam") && s3.Self().Online
	}, testWait, 5*time.Millisecond)
}

func TestNodeSessionLimitRace(t *testing.T) {
	// Two devices of one user start apart, each unaware of the other, with
	// room for one session: when they meet, the one started first keeps
	// it, and the other learns that it is over the limit.
	tn := newTestNet(t)
	cfg := func(name string) Config {
		c := tn.config(name)
		c.MaxSessions = 1
		return c
	}
	first := tn.start("sam", cfg("s1"))
	exported, err := first.ExportIdentity(nil)
	require.NoError(t, err)
	require.NoError(t, AddDevice(filepath.Join(tn.base, "s2"), exported, nil))
	second := tn.start("sam", cfg("s2"))
	_, err = second.IssueToken(time.Minute)
	require.NoError(t, err, "alone, the second is within the limit")

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	events := second.Watch(ctx)
	require.NoError(t, second.sw.Connect(addrOf(first.Self())))
	e := nextEvent(t, events, func(e Event) bool { return e.Kind == EventSessionLimit })
	require.Equal(t, second.Self().Device, e.Session.Device)
	require.False(t, e.Session.Online)
	require.False(t, second.Self().Online)
	_, err = second.IssueToken(time.Minute)
	require.ErrorIs(t, err, ErrSessionLimit)
	s, err := second.FindUserSession("sam")
	require.NoError(t, err)
	require.Equal(t, first.Self().Device, s.Device, "the session started first is the one online")
	require.True(t, s.Online)
}

func TestNodeTokens(t *testing.T) {
	tn := newTestNet(t)
	a := tn.start("alice", tn.config("a"))
	b := tn.start("bob", tn.config("b", a))
	meshed(t, a, b)
	errs := []error{ErrTokenInvalid, ErrTokenExpired, ErrTokenRevoked, ErrTokenUnknown, ErrSessionLimit}
	only := func(err, want error) {
		t.Helper()
		require.ErrorIs(t, err, want)
		for _, other := range errs {
			if other != want {
				require.NotErrorIs(t, err, other)
			}
		}
	}

	tok, err := b.IssueToken(time.Hour)
	require.NoError(t, err)
	got, err := a.VerifyToken(tok)
	require.NoError(t, err)
	require.Equal(t, "bob", got.Name)
	require.Equal(t, b.Self().Identity, got.Identity)
	require.Equal(t, b.Self().Device, got.Device)

	// Tampered: one character of the claims changed.
	i := len("hft1.") + 10
	flip := byte('A')
	if tok[i] == 'A' {
		flip = 'B'
	}
	_, err = a.VerifyToken(tok[:i] + string(flip) + tok[i+1:])
	only(err, ErrTokenInvalid)

	// Expired: signed by Bob's device for an hour that has passed.
	now := time.Now()
	old, err := IssueToken(b.ownSecret, TokenClaims{
		Identity: b.id.Key(), Device: b.ownKey, Alias: "bob", Login: b.login,
		Issued: now.Add(-2 * time.Hour).UnixMilli(), Expires: now.Add(-time.Hour).UnixMilli(),
	})
	require.NoError(t, err)
	_, err = a.VerifyToken(old)
	only(err, ErrTokenExpired)

	// Unknown: a device of another directory.
	other := newTestNet(t)
	x := other.start("xavier", other.config("x"))
	foreign, err := x.IssueToken(time.Hour)
	require.NoError(t, err)
	_, err = a.VerifyToken(foreign)
	only(err, ErrTokenUnknown)

	// Revoked: Bob logged out.
	ctx, cancel := context.WithTimeout(context.Background(), testWait)
	defer cancel()
	require.NoError(t, b.Logout(ctx))
	require.Eventually(t, func() bool {
		_, err := a.VerifyToken(tok)
		return errors.Is(err, ErrTokenRevoked)
	}, testWait, 5*time.Millisecond)
	_, err = a.VerifyToken(tok)
	only(err, ErrTokenRevoked)

	_, err = a.IssueToken(0)
	require.Error(t, err)
}

func TestNetworkSecret(t *testing.T) {
	tn := newTestNet(t)
	secret := make([]byte, 32)
	rand.Read(secret)
	cfg := func(name string, peers ...*Node) Config {
		c := tn.config(name, peers...)
		c.Secret = secret
		return c
	}
	a := tn.start("alice", cfg("a"))
	b := tn.start("bob", cfg("b", a))
	meshed(t, a, b)

	// Mallory has Alice's address but not the secret: her handshakes fail,
	// so her first start finds nobody and she sees only herself.
	m := tn.start("mallory", tn.config("m", a))
	require.Equal(t, []string{"mallory"}, names(m))
	require.Empty(t, m.sw.Peers())

	// Carol, with the secret, connects after Mallory tried: once Alice
	// sees Carol, she has had every chance to see Mallory, and did not.
	c := tn.start("carol", cfg("c", a))
	meshed(t, a, b, c)
	require.Equal(t, []string{"alice", "bob", "carol"}, names(a))
	require.Equal(t, []string{"mallory"}, names(m))
	require.Empty(t, m.sw.Peers())
}

func TestNodeWatch(t *testing.T) {
	tn := newTestNet(t)
	a := tn.start("alice", tn.config("a"))
	ctx, cancel := context.WithCancel(context.Background())
	events := a.Watch(ctx)
	b := tn.start("bob", tn.config("b", a))
	e := nextEvent(t, events, func(e Event) bool { return e.Session.Alias == "bob" && e.Kind != EventUpdated })
	require.Equal(t, EventJoined, e.Kind)
	require.Equal(t, b.Self().Device, e.Session.Device)

	lctx, lcancel := context.WithTimeout(context.Background(), testWait)
	defer lcancel()
	require.NoError(t, b.Logout(lctx))
	e = nextEvent(t, events, func(e Event) bool { return e.Session.Alias == "bob" && e.Kind != EventUpdated })
	require.Equal(t, EventLeft, e.Kind)

	// The channel closes when ctx ends, and at once for a closed node.
	cancel()
	for range events {
	}
	require.NoError(t, a.Close())
	_, ok := <-a.Watch(context.Background())
	require.False(t, ok)
	require.Equal(t, []string{"alice", "bob"}, names(a), "a closed node still answers")
	require.False(t, a.Self().Online)
}

func TestStartRefusesBadInput(t *testing.T) {
	tn := newTestNet(t)
	cases := map[string]struct {
		s    UserSession
		edit func(*Config)
		want error
	}{
		"no alias":           {UserSession{}, nil, ErrInvalidAlias},
		"bad alias":          {UserSession{Alias: "a b"}, nil, ErrInvalidAlias},
		"host name as IP":    {UserSession{Alias: "a", IP: "example.com"}, nil, ErrBadEntry},
		"unspecified IP":     {UserSession{Alias: "a", IP: "0.0.0.0"}, nil, ErrBadEntry},
		"port too large":     {UserSession{Alias: "a", Port: 65536}, nil, ErrBadEntry},
		"negative port":      {UserSession{Alias: "a", Port: -1}, nil, ErrBadEntry},
		"long device name":   {UserSession{Alias: "a", DeviceName: strings.Repeat("x", 65)}, nil, ErrBadEntry},
		"bad metadata":       {UserSession{Alias: "a", Metadata: map[string]string{"": "x"}}, nil, ErrBadEntry},
		"short secret":       {UserSession{Alias: "a"}, func(c *Config) { c.Secret = []byte("short") }, ErrInvalidConfig},
		"negative sessions":  {UserSession{Alias: "a"}, func(c *Config) { c.MaxSessions = -1 }, ErrInvalidConfig},
		"tiny heartbeat":     {UserSession{Alias: "a"}, func(c *Config) { c.HeartbeatInterval = time.Millisecond }, ErrInvalidConfig},
		"offline too soon":   {UserSession{Alias: "a"}, func(c *Config) { c.OfflineAfter = testHeartbeat / 2 }, ErrInvalidConfig},
		"bad peer":           {UserSession{Alias: "a"}, func(c *Config) { c.Peers = []string{"127.0.0.1"} }, ErrInvalidConfig},
		"empty peer":         {UserSession{Alias: "a"}, func(c *Config) { c.Peers = []string{""} }, ErrInvalidConfig},
		"listen address bad": {UserSession{Alias: "a"}, func(c *Config) { c.ListenAddr = "127.0.0.1:99999" }, nil},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			cfg := tn.config(strings.ReplaceAll(name, " ", "-"))
			if tc.edit != nil {
				tc.edit(&cfg)
			}
			ctx, cancel := context.WithTimeout(context.Background(), testWait)
			defer cancel()
			n, err := StartUserSession(ctx, tc.s, cfg)
			require.Error(t, err)
			require.Nil(t, n)
			if tc.want != nil {
				require.ErrorIs(t, err, tc.want)
			}
		})
	}
	// Whatever failed before the node opened its data directory left none.
	_, err := os.Stat(filepath.Join(tn.base, "bad-alias"))
	require.ErrorIs(t, err, os.ErrNotExist)
}

func TestStartHonoursContext(t *testing.T) {
	// A first start with a peer that never sends its device list waits for
	// it (up to OfflineAfter); a context that ends first ends the start,
	// and leaves nothing running.
	tn := newTestNet(t)
	other := newTestNet(t)
	a := other.start("alice", other.config("a")) // another topic: no list
	cfg := tn.config("b", a)
	cfg.OfflineAfter = time.Hour
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err := StartUserSession(ctx, UserSession{Alias: "bob"}, cfg)
	require.ErrorIs(t, err, context.DeadlineExceeded)
}

func TestDeviceListEncoding(t *testing.T) {
	list := []listedDevice{{Key: make([]byte, 32), Length: 1}, {Key: append(make([]byte, 31), 9), Length: 1 << 40}}
	b := encodeDeviceList(list)
	got, err := decodeDeviceList(b)
	require.NoError(t, err)
	require.Equal(t, list, got)
	require.Equal(t, []byte{0x90}, encodeDeviceList([]listedDevice{}), "an empty list is an empty array")

	full := make([]listedDevice, devicesPerChunk)
	for i := range full {
		full[i] = listedDevice{Key: make([]byte, 32), Length: 1 << 63}
	}
	require.LessOrEqual(t, len(encodeDeviceList(full)), swarm.MaxExtensionPayload, "a full chunk fits an extension")

	for name, bad := range map[string][]byte{
		"short key":   encodeDeviceList([]listedDevice{{Key: make([]byte, 31)}}),
		"too many":    encodeDeviceList(append(full, full[0])),
		"trailing":    append(encodeDeviceList(list), 0),
		"not msgpack": {0xc1},
		"truncated":   b[:len(b)-1],
	} {
		_, err := decodeDeviceList(bad)
		require.Error(t, err, name)
	}
}

func TestNewErrorsAreDistinct(t *testing.T) {
	all := []error{
		ErrInvalidAlias, ErrBadEntry, ErrBadSignature, ErrBadCertificate, ErrOutOfOrder,
		ErrPassphrase, ErrCorruptIdentity, ErrInsecureIdentity, ErrIdentityExists,
		ErrTokenInvalid, ErrTokenExpired, ErrTokenRevoked, ErrTokenUnknown,
		ErrUserNotFound, ErrUnknownDevice, ErrUnregistered, ErrNotLoggedIn, ErrSessionLimit,
	}
	for _, e := range []error{ErrNoSession, ErrAliasTaken, ErrAliasMismatch, ErrInvalidConfig} {
		require.False(t, errorsIsAny(e, all...), e.Error())
		for _, o := range all {
			require.NotEqual(t, o.Error(), e.Error())
		}
		all = append(all, e)
	}
}

func TestDirectoryKey(t *testing.T) {
	// Pinned: every node of a topic must derive the same rendezvous.
	require.Equal(t, directoryKey("hyperfeed-users"), directoryKey(DefaultTopic))
	require.NotEqual(t, directoryKey("a"), directoryKey("b"))
	require.Equal(t, "9e4d61b8cf207a25335ac54e7f2143d6072f6995b0b84b5cf40dd1ae376e6a4e", directoryKey(DefaultTopic).String())
}

func TestDataDirectoryIsExclusive(t *testing.T) {
	tn := newTestNet(t)
	tn.start("alice", tn.config("a"))
	_, err := tn.tryStart("alice", tn.config("a"))
	require.ErrorIs(t, err, feed.ErrLocked)
}

func TestPassphrase(t *testing.T) {
	tn := newTestNet(t)
	cfg := tn.config("a")
	cfg.Passphrase = []byte("correct horse")
	a := tn.start("alice", cfg)
	id := a.Self().Identity
	require.NoError(t, a.Close())
	data, err := os.ReadFile(filepath.Join(cfg.Dir, identityFile))
	require.NoError(t, err)
	_, err = ImportIdentity(data, nil)
	require.ErrorIs(t, err, ErrPassphrase, "the identity file is encrypted")

	wrong := cfg
	wrong.Passphrase = []byte("battery staple")
	_, err = tn.tryStart("alice", wrong)
	require.ErrorIs(t, err, ErrPassphrase)

	a = tn.start("alice", cfg)
	require.Equal(t, id, a.Self().Identity)

	// Another device of the same user, carried by an encrypted export.
	exported, err := a.ExportIdentity([]byte("for the phone"))
	require.NoError(t, err)
	dir := filepath.Join(tn.base, "phone")
	require.ErrorIs(t, AddDevice(dir, exported, []byte("wrong")), ErrPassphrase)
	require.NoError(t, AddDevice(dir, exported, []byte("for the phone")))
	phone := tn.config("phone", a)
	phone.Passphrase = []byte("for the phone")
	p := tn.start("alice", phone)
	require.Equal(t, id, p.Self().Identity)
	require.NotEqual(t, a.Self().Device, p.Self().Device)
	require.Eventually(t, func() bool { return len(a.Devices("alice")) == 2 }, testWait, 5*time.Millisecond)
}
