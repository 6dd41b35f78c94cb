package usersession

import (
	"context"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/hyperfeed/hyperfeed/feed"
	"github.com/hyperfeed/hyperfeed/swarm"
)

// appendBlocks appends "name i" for i in [from, to) to f.
func appendBlocks(t *testing.T, f *feed.Feed, name string, from, to int) {
	t.Helper()
	for i := from; i < to; i++ {
		_, err := f.Append(fmt.Appendf(nil, "%s %d", name, i))
		require.NoError(t, err)
	}
}

// requireBlocks checks that f holds "name i" for i in [0, to).
func requireBlocks(t *testing.T, ctx context.Context, f *feed.Feed, name string, to int) {
	t.Helper()
	for i := range to {
		b, err := f.Get(ctx, uint64(i))
		require.NoError(t, err)
		require.Equal(t, fmt.Sprintf("%s %d", name, i), string(b))
	}
}

// openAppStore opens the application's own feed store in dir, apart from
// the node's. Open it before starting the node: cleanups run last first,
// so the node closes, and stops replicating its feeds, before the store.
func openAppStore(t *testing.T, dir string) *feed.Store {
	t.Helper()
	s, err := feed.OpenStore(dir, nil)
	require.NoError(t, err)
	t.Cleanup(func() { s.Close() })
	return s
}

// An application feed, kept in a store of the application's own, goes
// from one node to another over the directory's own connections,
// extensions too, and leaves the directory alone. Its key, announced in
// the session's metadata, is known before the node starts.
func TestSharedSwarmReplicatesAppFeed(t *testing.T) {
	tn := newTestNet(t)
	storeA, storeB := openAppStore(t, t.TempDir()), openAppStore(t, t.TempDir())
	f, err := storeA.Named("notes")
	require.NoError(t, err)
	appendBlocks(t, f, "note", 0, 3)

	ctx, cancel := context.WithTimeout(context.Background(), testWait)
	defer cancel()
	a, err := StartUserSession(ctx, UserSession{Alias: "alice", Metadata: map[string]string{"notes": f.Key().String()}}, tn.config("a"))
	require.NoError(t, err)
	t.Cleanup(func() { a.Close() })
	b := tn.start("bob", tn.config("b", a))
	meshed(t, a, b)

	// Bob learns the feed's key from alice's session, and sets his
	// extension handler before alice publishes: a value that comes before
	// its handler is dropped, and the node's connections are up already,
	// so the channel opens as soon as both sides have the feed.
	key, err := feed.ParseKey(b.GetUsers()["alice"].Metadata["notes"])
	require.NoError(t, err)
	require.Equal(t, f.Key(), key)
	got := make(chan string, 1)
	r, err := storeB.Get(key)
	require.NoError(t, err)
	require.False(t, r.Writable())
	repB, err := b.Swarm().Replicate(r)
	require.NoError(t, err)
	repB.HandleExtension("test/hello", func(_ swarm.PeerKey, p []byte) {
		select {
		case got <- string(p):
		default:
		}
	})

	repA, err := a.Swarm().Replicate(f)
	require.NoError(t, err)
	require.NoError(t, repA.Publish("test/hello", []byte("from alice")))
	require.NoError(t, repB.Download(0, 3).Wait(ctx))
	requireBlocks(t, ctx, r, "note", 3)
	select {
	case p := <-got:
		require.Equal(t, "from alice", p)
	case <-ctx.Done():
		t.Fatal("no extension value from alice")
	}

	// Live: what alice appends next comes too.
	appendBlocks(t, f, "note", 3, 4)
	require.NoError(t, repB.Download(3, 4).Wait(ctx))
	requireBlocks(t, ctx, r, "note", 4)

	// One listener each: the session publishes the swarm's port, and the
	// feed came on the connection the directory made. The feed is no
	// device of anyone's.
	require.Equal(t, a.Swarm().Port(), a.Self().Port)
	require.Equal(t, []swarm.PeerKey{a.Swarm().Key()}, b.Swarm().Peers())
	requireNoAppDevices(t, a, b)
}

// An application feed outlives its node: after a restart, of the node and
// of the application's store, it is read from disk and replicates again
// over the new node's swarm.
func TestSharedSwarmAfterRestart(t *testing.T) {
	tn := newTestNet(t)
	storeA := openAppStore(t, t.TempDir())
	dirB := t.TempDir()
	storeB := openAppStore(t, dirB)
	a := tn.start("alice", tn.config("a"))
	b := tn.start("bob", tn.config("b", a))
	meshed(t, a, b)

	ctx, cancel := context.WithTimeout(context.Background(), testWait)
	defer cancel()
	f, err := storeA.Named("notes")
	require.NoError(t, err)
	appendBlocks(t, f, "note", 0, 2)
	_, err = a.Swarm().Attach(f)
	require.NoError(t, err)
	r, err := storeB.Get(f.Key())
	require.NoError(t, err)
	repB, err := b.Swarm().Attach(r)
	require.NoError(t, err)
	require.NoError(t, repB.Download(0, 2).Wait(ctx))

	// Bob's application stops, node first, and starts again.
	require.NoError(t, b.Close())
	require.NoError(t, storeB.Close())
	storeB = openAppStore(t, dirB)
	b = tn.start("bob", tn.config("b", a))
	r, err = storeB.Get(f.Key())
	require.NoError(t, err)
	requireBlocks(t, ctx, r, "note", 2)
	repB, err = b.Swarm().Attach(r)
	require.NoError(t, err)
	meshed(t, a, b)
	appendBlocks(t, f, "note", 2, 3)
	require.NoError(t, repB.Download(0, 3).Wait(ctx))
	requireBlocks(t, ctx, r, "note", 3)

	requireNoAppDevices(t, a, b)
}

// After Close, Swarm still answers, with the closed swarm; the
// application's store stays open, its own to close.
func TestSharedSwarmAfterClose(t *testing.T) {
	tn := newTestNet(t)
	st := openAppStore(t, t.TempDir())
	a := tn.start("alice", tn.config("a"))
	sw := a.Swarm()
	f, err := st.Named("notes")
	require.NoError(t, err)
	_, err = sw.Attach(f)
	require.NoError(t, err)
	// A replica of a feed nobody has: its download waits until Close.
	r, err := st.Get(feed.Key{1})
	require.NoError(t, err)
	dl, err := sw.Download(r, 0, 1)
	require.NoError(t, err)

	require.NoError(t, a.Close())
	require.Same(t, sw, a.Swarm())
	_, err = sw.Attach(f)
	require.ErrorIs(t, err, swarm.ErrClosed)
	_, err = sw.Replicate(f)
	require.ErrorIs(t, err, swarm.ErrClosed)
	_, err = sw.Download(r, 0, 1)
	require.ErrorIs(t, err, swarm.ErrClosed)
	require.ErrorIs(t, sw.Connect("127.0.0.1:1"), swarm.ErrClosed)
	_, ok := <-sw.Watch(context.Background())
	require.False(t, ok)
	ctx, cancel := context.WithTimeout(context.Background(), testWait)
	defer cancel()
	require.Error(t, dl.Wait(ctx))
	require.NoError(t, ctx.Err(), "the download failed at Close")

	_, err = f.Append([]byte("late"))
	require.NoError(t, err, "the node closed no feed of the application's")
}

// requireNoAppDevices checks that alice and bob list each other, each with
// the one device the node made: an application feed is no device.
func requireNoAppDevices(t *testing.T, a, b *Node) {
	t.Helper()
	for _, n := range []*Node{a, b} {
		require.Equal(t, []string{"alice", "bob"}, names(n))
		require.Len(t, n.Devices("alice"), 1)
		require.Len(t, n.Devices("bob"), 1)
	}
}
