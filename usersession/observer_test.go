package usersession

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/hyperfeed/hyperfeed/feed"
)

// observe starts an observer of tn with cfg, closed when the test ends.
func (tn *testNet) observe(cfg Config) *Observer {
	tn.t.Helper()
	o, err := Observe(cfg)
	require.NoError(tn.t, err)
	tn.t.Cleanup(func() { o.Close() })
	return o
}

// observerConfig is an observer's configuration. Its heartbeat is long, so
// that Settle's wait for logged-in devices to connect is bounded by
// connecting, not by the clock, however slow the machine.
func (tn *testNet) observerConfig(name string, peers ...*Node) Config {
	cfg := tn.config(name, peers...)
	cfg.HeartbeatInterval = 5 * time.Second
	return cfg
}

func settle(t *testing.T, o *Observer) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testWait)
	defer cancel()
	require.NoError(t, o.Settle(ctx))
}

func TestObserverFollowsTheDirectory(t *testing.T) {
	tn := newTestNet(t)
	a := tn.start("alice", tn.config("a"))
	b := tn.start("bob", tn.config("b", a))
	meshed(t, a, b)

	// The observer knows only Alice: it learns of Bob from her device list,
	// and dials the address his login publishes, as a node would.
	cfg := tn.observerConfig("o", a)
	o := tn.observe(cfg)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	events := o.Watch(ctx)
	settle(t, o)

	users := o.GetUsers()
	require.Len(t, users, 2)
	for _, n := range []*Node{a, b} {
		self := n.Self()
		s := users[self.Alias]
		require.True(t, s.Online, "%s is online once settled", self.Alias)
		require.Equal(t, addrOf(self), addrOf(s))
		require.Equal(t, self.Device, s.Device)
		require.Equal(t, self.Identity, s.Identity)
		require.WithinDuration(t, time.Now(), s.LastSeen, time.Minute)
		require.Len(t, o.Devices(self.Alias), 1)
		// Listed offline first, maybe, if the feed came before the
		// connection: that is an update.
		e := nextEvent(t, events, func(e Event) bool { return e.Session.Alias == self.Alias && e.Kind != EventUpdated })
		require.Equal(t, EventJoined, e.Kind)
	}
	s, err := o.FindUserSession("BOB")
	require.NoError(t, err)
	require.Equal(t, b.Self().Device, s.Device)
	_, err = o.FindUserSession("carol")
	require.ErrorIs(t, err, ErrUserNotFound)

	// Bob logs out: the observer shows him offline with no address. His
	// connection may end before his logout is folded in, so the address
	// may go in a later update.
	lctx, lcancel := context.WithTimeout(context.Background(), testWait)
	defer lcancel()
	require.NoError(t, b.Logout(lctx))
	e := nextEvent(t, events, func(e Event) bool { return e.Session.Alias == "bob" && e.Kind != EventUpdated })
	require.Equal(t, EventLeft, e.Kind)
	require.Eventually(t, func() bool {
		s, err := o.FindUserSession("bob")
		return err == nil && !s.Online && s.IP == "" && s.Port == 0
	}, testWait, 5*time.Millisecond)

	// Alice goes away without logging out: offline, the address kept.
	require.NoError(t, a.Close())
	e = nextEvent(t, events, func(e Event) bool { return e.Session.Alias == "alice" && e.Kind != EventUpdated })
	require.Equal(t, EventLeft, e.Kind)
	require.Equal(t, "127.0.0.1", e.Session.IP)

	// Nobody lists the observer, and it wrote nothing: no identity, and
	// every feed it holds is a replica.
	require.Equal(t, []string{"alice", "bob"}, names(b))
	require.NoError(t, o.Close())
	_, err = os.Stat(filepath.Join(cfg.Dir, identityFile))
	require.ErrorIs(t, err, os.ErrNotExist)
	store, err := feed.OpenStore(filepath.Join(cfg.Dir, feedsDir), nil)
	require.NoError(t, err)
	defer store.Close()
	dks, err := store.List()
	require.NoError(t, err)
	require.Len(t, dks, 3, "the rendezvous feed and two device feeds")
	for _, dk := range dks {
		f, err := store.Find(dk)
		require.NoError(t, err)
		require.False(t, f.Writable(), "the observer holds the secret key of feed %s", f.Key())
	}

	// Closed, it still answers, with every device offline.
	require.Len(t, o.GetUsers(), 2)
	require.False(t, o.GetUsers()["alice"].Online)
	require.ErrorIs(t, o.Settle(context.Background()), ErrClosed)
	_, ok := <-o.Watch(context.Background())
	require.False(t, ok)
}

// A node's first start waits for the device list of every peer connected:
// an observer publishes its own, so that it holds nobody up.
func TestObserverDoesNotHoldUpAFirstStart(t *testing.T) {
	tn := newTestNet(t)
	o := tn.observe(tn.observerConfig("o"))
	cfg := tn.config("a")
	cfg.Peers = []string{o.n.sw.Addr().String()}
	cfg.OfflineAfter = time.Hour // what a peer that never lists would cost
	a := tn.start("alice", cfg)
	require.Eventually(t, func() bool {
		s, err := o.FindUserSession("alice")
		return err == nil && s.Online && s.Device == a.Self().Device
	}, testWait, 5*time.Millisecond)
	require.Equal(t, []string{"alice"}, names(a))
}

// The observer answers from what its directory holds of earlier runs
// before it meets anyone, and a restarted one settles again.
func TestObserverRestarts(t *testing.T) {
	tn := newTestNet(t)
	a := tn.start("alice", tn.config("a"))
	cfg := tn.observerConfig("o", a)
	o := tn.observe(cfg)
	settle(t, o)
	require.True(t, o.GetUsers()["alice"].Online)
	require.NoError(t, o.Close())

	cfg.Peers = nil
	cfg.HeartbeatInterval = testHeartbeat
	o = tn.observe(cfg)
	s, err := o.FindUserSession("alice")
	require.NoError(t, err, "known from disk")
	require.Equal(t, a.Self().Device, s.Device)
	// No peer given, but Alice's login says where she is.
	settle(t, o)
	require.Eventually(t, func() bool { return online(a, "alice") && o.GetUsers()["alice"].Online }, testWait, 5*time.Millisecond)
}

func TestObserveRefusesBadConfig(t *testing.T) {
	tn := newTestNet(t)
	a := tn.start("alice", tn.config("a"))
	for name, edit := range map[string]func(*Config){
		"a node's directory": func(c *Config) { c.Dir = filepath.Join(tn.base, "a") },
		"short secret":       func(c *Config) { c.Secret = []byte("short") },
		"bad peer":           func(c *Config) { c.Peers = []string{"127.0.0.1"} },
		"tiny heartbeat":     func(c *Config) { c.HeartbeatInterval = time.Millisecond },
	} {
		cfg := tn.config("o-" + name)
		edit(&cfg)
		o, err := Observe(cfg)
		require.ErrorIs(t, err, ErrInvalidConfig, name)
		require.Nil(t, o)
	}

	// One observer per directory at a time: the second fails at once,
	// without a warning for each device feed that the first holds.
	cfg := tn.observerConfig("o", a)
	settle(t, tn.observe(cfg))
	var logged bytes.Buffer
	cfg.Logger = slog.New(slog.NewTextHandler(&logged, &slog.HandlerOptions{Level: slog.LevelWarn}))
	_, err := Observe(cfg)
	require.ErrorIs(t, err, feed.ErrLocked)
	require.Empty(t, logged.String())
}

func TestObserverDefaultDir(t *testing.T) {
	cache := t.TempDir()
	t.Setenv("XDG_CACHE_HOME", cache)
	t.Setenv("HOME", cache) // where os.UserCacheDir looks on macOS
	base, err := os.UserCacheDir()
	require.NoError(t, err)
	dirOf := func(topic string) string {
		c := Config{Topic: topic}
		require.NoError(t, c.observerDefaults())
		return c.Dir
	}
	def := dirOf("")
	require.Equal(t, filepath.Join(base, "hyperfeed", "usersession", "observer", directoryKey(DefaultTopic).DiscoveryKey().String()[:16]), def)
	require.Equal(t, def, dirOf(DefaultTopic))
	require.NotEqual(t, def, dirOf("other"), "one directory per topic")
	require.Equal(t, def, dirOf(DefaultTopic))
}
