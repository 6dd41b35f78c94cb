package swarm

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/hyperfeed/hyperfeed/feed"
	"github.com/hyperfeed/hyperfeed/internal/wire"
	"github.com/hyperfeed/hyperfeed/merkle"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	if arg := os.Getenv(rssChildEnv); arg != "" {
		if err := rssReader(arg); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	goleak.VerifyTestMain(m)
}

func testKeyPair(t testing.TB) KeyPair {
	kp, err := GenerateKeyPair()
	require.NoError(t, err)
	return kp
}

func openTestFeed(t testing.TB, o *feed.Options) *feed.Feed {
	f, err := feed.Open(t.TempDir(), o)
	require.NoError(t, err)
	t.Cleanup(func() { f.Close() })
	return f
}

func appendBlocks(t testing.TB, f *feed.Feed, from, n int) {
	t.Helper()
	const batch = 1000
	for i := 0; i < n; i += batch {
		bs := make([][]byte, 0, batch)
		for j := i; j < min(n, i+batch); j++ {
			bs = append(bs, testBlock(from+j))
		}
		_, err := f.Append(bs...)
		require.NoError(t, err)
	}
}

func testBlock(i int) []byte { return []byte(fmt.Sprintf("block %d", i)) }

// sessionPair connects two sessions over a net.Pipe (or TCP when tcp is set).
func sessionPair(t testing.TB, tcp bool, a, b SessionConfig) (*Session, *Session) {
	t.Helper()
	var ca, cb net.Conn
	if tcp {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		defer ln.Close()
		accepted := make(chan net.Conn, 1)
		go func() {
			c, _ := ln.Accept()
			accepted <- c
		}()
		ca, err = net.Dial("tcp", ln.Addr().String())
		require.NoError(t, err)
		cb = <-accepted
		require.NotNil(t, cb)
	} else {
		ca, cb = net.Pipe()
	}
	if a.KeyPair.Public.IsZero() {
		a.KeyPair = testKeyPair(t)
	}
	if b.KeyPair.Public.IsZero() {
		b.KeyPair = testKeyPair(t)
	}
	ctx := context.Background()
	type res struct {
		s   *Session
		err error
	}
	ch := make(chan res, 1)
	go func() {
		s, err := NewSession(ctx, cb, false, b)
		ch <- res{s, err}
	}()
	sa, err := NewSession(ctx, ca, true, a)
	require.NoError(t, err)
	r := <-ch
	require.NoError(t, r.err)
	t.Cleanup(func() {
		sa.Close()
		r.s.Close()
	})
	require.Equal(t, b.KeyPair.Public, sa.RemoteKey())
	require.Equal(t, a.KeyPair.Public, r.s.RemoteKey())
	return sa, r.s
}

func replicator(t testing.TB, f *feed.Feed) *Replicator {
	r := NewReplicator(f)
	t.Cleanup(r.Close)
	return r
}

func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond) // polling with a deadline, not synchronising
	}
}

func requireSame(t testing.TB, w, r *feed.Feed) {
	t.Helper()
	require.Equal(t, w.Head(), r.Head())
	ctx := context.Background()
	require.NoError(t, r.Verify(ctx))
	for i := range w.Len() {
		a, err := w.Get(ctx, i)
		require.NoError(t, err)
		b, err := r.Get(ctx, i)
		require.NoError(t, err)
		require.Equal(t, a, b, "block %d", i)
	}
}

func TestSessionFullDownload(t *testing.T) {
	for _, tcp := range []bool{false, true} {
		t.Run(fmt.Sprintf("tcp=%v", tcp), func(t *testing.T) {
			w := openTestFeed(t, nil)
			appendBlocks(t, w, 0, 5000)
			r := openTestFeed(t, &feed.Options{Key: w.Key()})
			sa, sb := sessionPair(t, tcp, SessionConfig{}, SessionConfig{})
			rw, rr := replicator(t, w), replicator(t, r)
			sa.Replicate(rw)
			sb.Replicate(rr)
			d := rr.Download(0, 5000)
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			require.NoError(t, d.Wait(ctx))
			have, total := d.Progress()
			require.Equal(t, uint64(5000), have)
			require.Equal(t, uint64(5000), total)
			requireSame(t, w, r)
		})
	}
}

func TestSessionSparseAndLive(t *testing.T) {
	w := openTestFeed(t, nil)
	appendBlocks(t, w, 0, 100)
	r := openTestFeed(t, &feed.Options{Key: w.Key()})
	sa, sb := sessionPair(t, false, SessionConfig{}, SessionConfig{})
	sa.Replicate(replicator(t, w))
	sb.Replicate(replicator(t, r))

	// Sparse: a Get on the replica fetches just that block.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := r.Get(ctx, 77)
	require.NoError(t, err)
	require.Equal(t, testBlock(77), b)
	require.False(t, r.Has(76))

	// Live: the replica's head follows new appends without polling.
	appended := time.Now()
	appendBlocks(t, w, 100, 1)
	b, err = r.Get(ctx, 100)
	require.NoError(t, err)
	require.Equal(t, testBlock(100), b)
	t.Logf("a new block reached the replica in %v", time.Since(appended))
	waitFor(t, "the replica's head", func() bool { return r.Len() == 101 })
}

func TestSessionTruncation(t *testing.T) {
	w := openTestFeed(t, nil)
	appendBlocks(t, w, 0, 50)
	r := openTestFeed(t, &feed.Options{Key: w.Key()})
	sa, sb := sessionPair(t, false, SessionConfig{}, SessionConfig{})
	sa.Replicate(replicator(t, w))
	rr := replicator(t, r)
	sb.Replicate(rr)
	rr.Download(0, Live)
	waitFor(t, "the first 50 blocks", func() bool { return r.Downloaded() == 50 })

	require.NoError(t, w.Truncate(30))
	_, err := w.Append([]byte("new 30"), []byte("new 31"))
	require.NoError(t, err)
	defer func() { t.Logf("replica fork %d len %d downloaded %d", r.Fork(), r.Len(), r.Downloaded()) }()
	waitFor(t, "the new fork", func() bool {
		return r.Fork() == 1 && r.Len() == 32 && r.Downloaded() == 32
	})
	requireSame(t, w, r)
}

func TestSessionManyFeeds(t *testing.T) {
	sa, sb := sessionPair(t, false, SessionConfig{}, SessionConfig{})
	// Feeds only one side has shift the channel numbers the two sides give
	// the shared ones: every message must name the right channel anyway.
	for range 3 {
		sb.Replicate(replicator(t, openTestFeed(t, nil)))
	}
	var ws, rs []*feed.Feed
	var ds []*Download
	for i := range 20 {
		w := openTestFeed(t, nil)
		appendBlocks(t, w, i*1000, 10+i)
		r := openTestFeed(t, &feed.Options{Key: w.Key()})
		sa.Replicate(replicator(t, w))
		rr := replicator(t, r)
		sb.Replicate(rr)
		ds = append(ds, rr.Download(0, w.Len()))
		ws, rs = append(ws, w), append(rs, r)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i, d := range ds {
		require.NoError(t, d.Wait(ctx))
		requireSame(t, ws[i], rs[i])
	}
}

func TestSessionWrongCapability(t *testing.T) {
	// A peer that knows only the discovery key cannot open the channel.
	w := openTestFeed(t, nil)
	appendBlocks(t, w, 0, 10)
	sa, sb := sessionPair(t, false, SessionConfig{}, SessionConfig{})
	sa.Replicate(replicator(t, w))
	dk := w.DiscoveryKey()
	sb.send(wireOpen(1, dk[:], make([]byte, 32)))
	<-sa.Done()
	require.ErrorIs(t, sa.Err(), ErrProtocol)
}

func wireOpen(ch uint32, dk, capability []byte) *wire.Open {
	return &wire.Open{Channel: ch, DiscoveryKey: dk, Capability: capability}
}

// A feed taken off a session and put back replicates again.
func TestSessionUnreplicateThenReplicate(t *testing.T) {
	w := openTestFeed(t, nil)
	appendBlocks(t, w, 0, 10)
	r := openTestFeed(t, &feed.Options{Key: w.Key()})
	sa, sb := sessionPair(t, false, SessionConfig{}, SessionConfig{})
	rw, rr := replicator(t, w), replicator(t, r)
	sa.Replicate(rw)
	sb.Replicate(rr)
	rr.Download(0, Live)
	waitFor(t, "the first blocks", func() bool { return r.Downloaded() == 10 })

	sa.Unreplicate(rw)
	sa.Replicate(rw)
	appendBlocks(t, w, 10, 5)
	waitFor(t, "blocks appended after the channel reopened", func() bool { return r.Downloaded() == 15 })
	requireSame(t, w, r)
}

// TestRootPrefix: the lengths an upgrade may start from for a feed that
// holds only the roots of its head.
func TestRootPrefix(t *testing.T) {
	for _, tc := range []struct{ length, limit, want uint64 }{
		{3000, 2900, 2048 + 512 + 256},
		{3000, 3000, 3000},
		{3000, 5000, 3000},
		{3000, 2047, 0},
		{3000, 0, 0},
		{4096, 4095, 0},
		{4097, 4096, 4096},
		{0, 10, 0},
		{7, 6, 6},
	} {
		got := rootPrefix(tc.length, tc.limit)
		require.Equal(t, tc.want, got, "rootPrefix(%d, %d)", tc.length, tc.limit)
		// Every root of the result is a root of the head.
		require.Subset(t, merkle.Roots(tc.length), merkle.Roots(got))
	}
}

// TestReadError: whatever ends the reading, the session's error says so
// in its own words.
func TestReadError(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
		is   error
	}{
		{io.EOF, "swarm: peer closed the connection: EOF", io.EOF},
		{io.ErrUnexpectedEOF, "swarm: peer closed the connection: unexpected EOF", io.ErrUnexpectedEOF},
		{fmt.Errorf("read: %w", syscall.ECONNRESET), "swarm: receive: read: connection reset by peer", syscall.ECONNRESET},
		{wire.ErrMalformed, "", ErrProtocol},
	} {
		err := readError(tc.err)
		require.ErrorIs(t, err, tc.is)
		if tc.want != "" {
			require.EqualError(t, err, tc.want)
		}
	}
}
