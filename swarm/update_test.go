package swarm

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/hyperfeed/hyperfeed/feed"
	"github.com/stretchr/testify/require"
)

// TestUpdate: a replica's Update returns once a peer has told its head and
// the replica has caught up with it, not before; a writer's returns as soon
// as a peer has spoken.
func TestUpdate(t *testing.T) {
	wst := openStore(t)
	w, err := wst.Named("log")
	require.NoError(t, err)
	appendBlocks(t, w, 0, 300)
	ws := newTestSwarm(t, wst, Config{})
	rw, err := ws.Attach(w)
	require.NoError(t, err)

	rst := openStore(t)
	r, err := rst.Get(w.Key())
	require.NoError(t, err)
	rs := newTestSwarm(t, rst, Config{})
	rr, err := rs.Attach(r)
	require.NoError(t, err)

	// No peer yet: Update waits for one, as long as its context allows.
	short, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	require.ErrorIs(t, rr.Update(short), context.DeadlineExceeded)
	cancel()

	require.NoError(t, rs.Connect(ws.Addr().String()))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(t, rr.Update(ctx))
	require.Equal(t, w.Len(), r.Len(), "Update returned before the replica had the writer's head")
	require.NoError(t, rw.Update(ctx))

	appendBlocks(t, w, 300, 10)
	require.NoError(t, rr.Update(ctx))
	waitFor(t, "the new head at the replica", func() bool { return r.Len() == 310 })
}

// TestDelivered: a writer's Delivered(n) returns once every connected peer
// holds the first n blocks, which is what a node that logs out waits for.
func TestDelivered(t *testing.T) {
	wst := openStore(t)
	w, err := wst.Named("log")
	require.NoError(t, err)
	appendBlocks(t, w, 0, 50)
	ws := newTestSwarm(t, wst, Config{})
	rw, err := ws.Attach(w)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(t, rw.Delivered(ctx, 50), "no peer: nothing to wait for")

	var replicas []*feed.Feed
	for range 2 {
		st := openStore(t)
		r, err := st.Get(w.Key())
		require.NoError(t, err)
		s := newTestSwarm(t, st, Config{})
		rep, err := s.Attach(r)
		require.NoError(t, err)
		rep.Download(0, Live)
		require.NoError(t, s.Connect(ws.Addr().String()))
		replicas = append(replicas, r)
	}
	waitFor(t, "both peers on the channel", func() bool {
		rw.mu.Lock()
		defer rw.mu.Unlock()
		return len(rw.peers) == 2
	})
	appendBlocks(t, w, 50, 1)
	require.NoError(t, rw.Delivered(ctx, 51))
	for _, r := range replicas {
		require.True(t, r.Has(50), "Delivered returned before a peer held the last block")
	}
}

// TestNewBlockAnnouncedAfterHead: a sparse replica that gets a new block,
// and the head with it, from one peer tells its other peers the new head
// before the block, since a peer keeps nothing of a Range past the length
// it knows: else they never ask it for the block.
func TestNewBlockAnnouncedAfterHead(t *testing.T) {
	w := openTestFeed(t, nil)
	appendBlocks(t, w, 0, 10)
	// r holds blocks 0 to 9 but 3, as if fetched from w elsewhere.
	r := openTestFeed(t, &feed.Options{Key: w.Key()})
	give := func(i uint64, upgrade bool) {
		t.Helper()
		req := r.BlockRequest(i)
		req.Upgrade = upgrade
		p, data, err := w.Prove(req)
		require.NoError(t, err)
		require.NoError(t, r.ApplyProof(p, data))
	}
	give(0, true)
	for i := uint64(1); i < 10; i++ {
		if i != 3 {
			give(i, false)
		}
	}
	c := openTestFeed(t, &feed.Options{Key: w.Key()})
	sr, sc := sessionPair(t, false, SessionConfig{}, SessionConfig{})
	sr.Replicate(replicator(t, r))
	rc := replicator(t, c)
	sc.Replicate(rc)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(t, rc.Download(0, 3).Wait(ctx))

	appendBlocks(t, w, 10, 1)
	give(10, true) // block 10 and the head of length 11, from w
	require.NoError(t, rc.Download(10, 11).Wait(ctx), "r holds block 10 and did not say so")
}

// TestOneUpgradeAtATime: a replica whose peers all announce each new head
// asks one of them for it, not each: in a mesh of n peers every head would
// otherwise be proved n times to every replica.
func TestOneUpgradeAtATime(t *testing.T) {
	const peers, heads = 8, 20
	w := openTestFeed(t, nil)
	appendBlocks(t, w, 0, 1)
	ww := replicator(t, w)
	r := openTestFeed(t, &feed.Options{Key: w.Key()})
	rr := replicator(t, r)
	rr.Download(0, Live)
	var ps []*feed.Feed
	for range peers {
		p := openTestFeed(t, &feed.Options{Key: w.Key()})
		rp := replicator(t, p)
		rp.Download(0, Live)
		a, b := sessionPair(t, false, SessionConfig{}, SessionConfig{})
		a.Replicate(ww)
		b.Replicate(rp)
		c, d := sessionPair(t, false, SessionConfig{}, SessionConfig{})
		c.Replicate(rp)
		d.Replicate(rr)
		ps = append(ps, p)
	}
	waitFor(t, "the first block everywhere", func() bool { return r.Has(0) })
	before := rr.upgrades.Load()
	for i := 1; i <= heads; i++ {
		appendBlocks(t, w, i, 1)
		waitFor(t, "the new block at the replica and its peers", func() bool {
			for _, p := range ps {
				if !p.Has(uint64(i)) {
					return false
				}
			}
			return r.Has(uint64(i))
		})
	}
	asked := rr.upgrades.Load() - before
	t.Logf("%d upgrade requests for %d heads announced by %d peers each", asked, heads, peers)
	// One per head, and a second where a peer took longer than the lease.
	require.LessOrEqual(t, asked, int64(2*heads))
}

// TestSwarmOverCustomTransport runs two swarms over net.Pipe through
// Config.Listener and Config.Dial, as tests over an in-memory network do.
func TestSwarmOverCustomTransport(t *testing.T) {
	ln := newPipeListener("10.0.0.1:7")
	wst := openStore(t)
	w, err := wst.Named("log")
	require.NoError(t, err)
	appendBlocks(t, w, 0, 100)
	ws := newTestSwarm(t, wst, Config{Listener: ln})
	require.Equal(t, 7, ws.Port())

	rst := openStore(t)
	r, err := rst.Get(w.Key())
	require.NoError(t, err)
	dialed := make(chan string, 10)
	rs := newTestSwarm(t, rst, Config{Dial: func(ctx context.Context, addr string) (net.Conn, error) {
		dialed <- addr
		return ln.dial(ctx)
	}})
	require.NoError(t, rs.Connect("10.0.0.1:7"))
	d, err := rs.Download(r, 0, 100)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(t, d.Wait(ctx))
	require.Equal(t, "10.0.0.1:7", <-dialed)
	requireSame(t, w, r)
}

// pipeListener is a net.Listener whose connections are net.Pipes.
type pipeListener struct {
	addr   pipeAddr
	conns  chan net.Conn
	closed chan struct{}
	once   sync.Once
}

type pipeAddr string

func (a pipeAddr) Network() string { return "pipe" }
func (a pipeAddr) String() string  { return string(a) }

func newPipeListener(addr string) *pipeListener {
	return &pipeListener{addr: pipeAddr(addr), conns: make(chan net.Conn), closed: make(chan struct{})}
}

func (l *pipeListener) dial(ctx context.Context) (net.Conn, error) {
	a, b := net.Pipe()
	select {
	case l.conns <- b:
		return a, nil
	case <-l.closed:
		return nil, net.ErrClosed
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *pipeListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *pipeListener) Addr() net.Addr { return l.addr }
