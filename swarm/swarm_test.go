package swarm

import (
	"bytes"
	"context"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/hyperfeed/hyperfeed/feed"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// newTestSwarm starts a swarm on loopback only.
func newTestSwarm(t testing.TB, store *feed.Store, cfg Config) *Swarm {
	t.Helper()
	cfg.ListenAddr = "127.0.0.1:0"
	if cfg.ReconnectMin == 0 {
		cfg.ReconnectMin = 10 * time.Millisecond
	}
	s, err := New(store, cfg)
	require.NoError(t, err)
	t.Cleanup(func() { s.Close() })
	return s
}

func openStore(t testing.TB) *feed.Store {
	st, err := feed.OpenStore(t.TempDir(), nil)
	require.NoError(t, err)
	t.Cleanup(func() { st.Close() })
	return st
}

func TestSwarmReplicatesStoreFeeds(t *testing.T) {
	// The writer's swarm serves its store's feeds to whoever proves it knows
	// the key; it does not need to be told which.
	wst := openStore(t)
	w, err := wst.Named("log")
	require.NoError(t, err)
	appendBlocks(t, w, 0, 2000)
	ws := newTestSwarm(t, wst, Config{})

	rst := openStore(t)
	r, err := rst.Get(w.Key())
	require.NoError(t, err)
	rs := newTestSwarm(t, rst, Config{})
	require.NoError(t, rs.Connect(ws.Addr().String()))
	// Both dial: the swarms must settle on one connection.
	require.NoError(t, ws.Connect(rs.Addr().String()))

	d, err := rs.Download(r, 0, 2000)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(t, d.Wait(ctx))
	requireSame(t, w, r)
	waitFor(t, "one connection each way", func() bool {
		return len(ws.Peers()) == 1 && len(rs.Peers()) == 1
	})
	require.Equal(t, rs.Key(), ws.Peers()[0])

	// Live: appends keep flowing.
	live, err := rs.Download(r, 0, Live)
	require.NoError(t, err)
	defer live.Cancel()
	appendBlocks(t, w, 2000, 3)
	waitFor(t, "live appends", func() bool { return r.Downloaded() == 2003 })
}

func TestSwarmReconnectsAndResumes(t *testing.T) {
	w := openTestFeed(t, nil)
	appendBlocks(t, w, 0, 20000)
	ws := newTestSwarm(t, nil, Config{})
	_, err := ws.Replicate(w)
	require.NoError(t, err)

	r := openTestFeed(t, &feed.Options{Key: w.Key()})
	rs := newTestSwarm(t, nil, Config{Window: 16})
	require.NoError(t, rs.Connect(ws.Addr().String()))
	d, err := rs.Download(r, 0, 20000)
	require.NoError(t, err)

	// Cut the connection in the middle of the download, twice.
	for cut := 1; cut <= 2; cut++ {
		waitFor(t, "some progress", func() bool { return r.Downloaded() > uint64(cut)*3000 })
		rs.mu.Lock()
		for _, sess := range rs.sessions {
			sess.conn.Close()
		}
		rs.mu.Unlock()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	require.NoError(t, d.Wait(ctx))
	requireSame(t, w, r)
}

func TestSwarmFirewall(t *testing.T) {
	w := openTestFeed(t, nil)
	appendBlocks(t, w, 0, 5)
	refused := make(chan PeerKey, 10)
	ws := newTestSwarm(t, nil, Config{Firewall: func(k PeerKey) bool {
		refused <- k
		return false
	}})
	_, err := ws.Replicate(w)
	require.NoError(t, err)
	rs := newTestSwarm(t, nil, Config{})
	require.NoError(t, rs.Connect(ws.Addr().String()))
	require.Equal(t, rs.Key(), <-refused)
	require.Empty(t, ws.Peers())
}

func TestSwarmNetworkSecret(t *testing.T) {
	secret := bytes.Repeat([]byte{7}, 32)
	w := openTestFeed(t, nil)
	appendBlocks(t, w, 0, 5)
	ws := newTestSwarm(t, nil, Config{Secret: secret})
	_, err := ws.Replicate(w)
	require.NoError(t, err)

	// A member connects and reads.
	r := openTestFeed(t, &feed.Options{Key: w.Key()})
	member := newTestSwarm(t, nil, Config{Secret: secret})
	require.NoError(t, member.Connect(ws.Addr().String()))
	d, err := member.Download(r, 0, 5)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(t, d.Wait(ctx))

	// An outsider, even knowing the feed key, gets nowhere.
	o := openTestFeed(t, &feed.Options{Key: w.Key()})
	outsider := newTestSwarm(t, nil, Config{})
	_, err = outsider.Replicate(o)
	require.NoError(t, err)
	sess, err := outsider.connect(ws.Addr().(*net.TCPAddr).AddrPort())
	require.Error(t, err)
	require.Nil(t, sess)
	require.Equal(t, uint64(0), o.Len())
}

// TestLoadOrCreateKeyPair: the key pair is created with its directory,
// mode 0600, and loaded again; many concurrent creators agree on one.
func TestLoadOrCreateKeyPair(t *testing.T) {
	file := filepath.Join(t.TempDir(), "a", "b", "peer.key")
	keys := make(chan PeerKey, 8)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			kp, err := LoadOrCreateKeyPair(file)
			assert.NoError(t, err)
			keys <- kp.Public
		})
	}
	wg.Wait()
	close(keys)
	first := <-keys
	for k := range keys {
		require.Equal(t, first, k)
	}
	fi, err := os.Stat(file)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
	kp, err := LoadOrCreateKeyPair(file)
	require.NoError(t, err)
	require.Equal(t, first, kp.Public)
	require.NoError(t, os.WriteFile(file, []byte("short"), 0o600))
	_, err = LoadOrCreateKeyPair(file)
	require.Error(t, err)
}
