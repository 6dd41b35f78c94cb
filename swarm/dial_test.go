package swarm

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hyperfeed/hyperfeed/internal/memnet"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

// noLeaksAfter checks, once the test and its cleanups are done, that no
// goroutine is left. Registered first, it runs after every swarm's Close.
func noLeaksAfter(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
}

// memSwarm starts a swarm listening on host:7000 of n, adding one to dials
// (if not nil) for each dial it makes.
func memSwarm(t *testing.T, n *memnet.Network, host string, cfg Config, dials *atomic.Int64) *Swarm {
	t.Helper()
	ln, err := n.Listen(host + ":7000")
	require.NoError(t, err)
	dial := n.Dialer(host)
	cfg.Listener = ln
	cfg.Dial = func(ctx context.Context, addr string) (net.Conn, error) {
		if dials != nil {
			dials.Add(1)
		}
		return dial(ctx, addr)
	}
	s, err := New(nil, cfg)
	require.NoError(t, err)
	t.Cleanup(func() { s.Close() })
	return s
}

// dialerOf returns the dial loop of addr, or nil.
func dialerOf(s *Swarm, addr string) *dialer {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.dialing[netip.MustParseAddrPort(addr)]
}

// waiting reports whether addr's dial loop waits for a session to end.
func waiting(s *Swarm, addr string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	d := s.dialing[netip.MustParseAddrPort(addr)]
	return d != nil && d.waiting
}

func sessionWith(s *Swarm, k PeerKey) *Session {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sessions[k]
}

func requireEnds(t *testing.T, d *dialer, what string) {
	t.Helper()
	select {
	case <-d.done:
	case <-time.After(5 * time.Second):
		t.Fatalf("%s: the dial loop did not end", what)
	}
}

// TestSimultaneousConnectSettles: two swarms that Connect to each other at
// once end with one session, the same connection on both sides (the one
// the smaller key dialled), and stop dialling: the loop whose connection
// lost waits on the session that won instead of redialling.
func TestSimultaneousConnectSettles(t *testing.T) {
	noLeaksAfter(t)
	for round := range 5 {
		n := memnet.New(memnet.Config{Seed: uint64(round)})
		cfg := Config{ReconnectMin: 5 * time.Millisecond, ReconnectMax: 20 * time.Millisecond}
		var dials atomic.Int64
		a := memSwarm(t, n, "10.0.0.1", cfg, &dials)
		b := memSwarm(t, n, "10.0.0.2", cfg, &dials)
		require.NoError(t, a.Connect("10.0.0.2:7000"))
		require.NoError(t, b.Connect("10.0.0.1:7000"))

		// Settled: both sides hold a live session on the same connection,
		// and both loops wait for a session to end, which they do before
		// dialling. (Until then a side may hold the connection the other
		// has dropped, not having read its end yet.)
		waitFor(t, "one connection, both loops waiting", func() bool {
			sa, sb := sessionWith(a, b.Key()), sessionWith(b, a.Key())
			return sa != nil && !ended(sa) && sb != nil && !ended(sb) &&
				bytes.Equal(sa.conn.ChannelBinding(), sb.conn.ChannelBinding()) &&
				waiting(a, "10.0.0.2:7000") && waiting(b, "10.0.0.1:7000")
		})
		sa, sb := sessionWith(a, b.Key()), sessionWith(b, a.Key())
		smaller, other := a, b
		if less(b.Key(), a.Key()) {
			smaller, other = b, a
		}
		require.True(t, sessionWith(smaller, other.Key()).conn.Initiator(), "round %d: the smaller key dialled the survivor", round)
		before := dials.Load()

		// That nothing more happens cannot be waited for; the loops are
		// parked on the sessions (checked above), and this window, many
		// backoffs long, is what catches a regression: a loop that redials
		// after losing did so every 20 ms at most, replacing or fighting
		// the working session.
		time.Sleep(100 * time.Millisecond) // an observation window, not synchronisation
		require.Equal(t, before, dials.Load(), "round %d: dials after settling", round)
		require.Same(t, sa, sessionWith(a, b.Key()), "round %d: session replaced", round)
		require.Same(t, sb, sessionWith(b, a.Key()), "round %d: session replaced", round)
		require.False(t, ended(sa), "round %d", round)
		require.Len(t, a.Peers(), 1)
		require.Len(t, b.Peers(), 1)
		require.NoError(t, a.Close())
		require.NoError(t, b.Close())
	}
}

func less(a, b PeerKey) bool { return bytes.Compare(a[:], b[:]) < 0 }

// TestLoopWaitsOnInboundSession: a loop started for a peer that is
// connected already (it dialled this side) connects, loses to the working
// session, and waits on it; when it ends, the persistent loop dials again.
func TestLoopWaitsOnInboundSession(t *testing.T) {
	noLeaksAfter(t)
	n := memnet.New(memnet.Config{})
	cfg := Config{ReconnectMin: 5 * time.Millisecond, ReconnectMax: 20 * time.Millisecond}
	var aDials, bDials atomic.Int64
	a := memSwarm(t, n, "10.0.0.1", cfg, &aDials)
	b := memSwarm(t, n, "10.0.0.2", cfg, &bDials)
	// The dialler of the first session has the smaller key, so that it
	// wins against the second: the case where a redial used to recur.
	first, firstAddr, second, secondAddr := a, "10.0.0.2:7000", b, "10.0.0.1:7000"
	if less(b.Key(), a.Key()) {
		first, firstAddr, second, secondAddr = b, secondAddr, a, firstAddr
	}
	require.NoError(t, first.Connect(firstAddr))
	waitFor(t, "the first session", func() bool { return second.Connected(first.Key()) })
	kept := sessionWith(second, first.Key())

	require.NoError(t, second.Connect(secondAddr))
	waitFor(t, "the second loop waiting", func() bool { return waiting(second, secondAddr) })
	require.Same(t, kept, sessionWith(second, first.Key()), "the working session was replaced")

	// The peer drops the session (and forgets it, so as not to redial):
	// the second loop, persistent, dials it again and settles on its own.
	require.NoError(t, first.Forget(firstAddr))
	require.NoError(t, sessionWith(first, second.Key()).Close())
	waitFor(t, "the second side's own session", func() bool {
		sess := sessionWith(second, first.Key())
		return sess != nil && sess != kept && !ended(sess) && sess.conn.Initiator() && waiting(second, secondAddr)
	})
}

// TestForgetStopsLoopInBackoff: Forget ends a persistent loop at once,
// though it waits a minute between dials to an address that refuses them,
// and leaves the address free to be connected to again.
func TestForgetStopsLoopInBackoff(t *testing.T) {
	noLeaksAfter(t)
	n := memnet.New(memnet.Config{})
	attempts := make(chan struct{}, 10)
	ln, err := n.Listen("10.0.0.1:7000")
	require.NoError(t, err)
	s, err := New(nil, Config{
		Listener: ln,
		Dial: func(ctx context.Context, addr string) (net.Conn, error) {
			attempts <- struct{}{}
			return n.Dial(ctx, "10.0.0.1", addr)
		},
		ReconnectMin: time.Minute,
		ReconnectMax: time.Minute,
	})
	require.NoError(t, err)
	defer s.Close()

	const addr = "10.0.0.9:7000" // nothing listens there
	for range 2 {
		require.NoError(t, s.Connect(addr))
		d := dialerOf(s, addr)
		require.NotNil(t, d)
		<-attempts // the dial failed; the loop waits 30 s to a minute
		require.NoError(t, s.Forget(addr))
		requireEnds(t, d, "forgotten")
		require.Empty(t, attempts)
		require.Nil(t, dialerOf(s, addr))
	}
	require.NoError(t, s.Forget(addr), "forgetting twice")
	require.NoError(t, s.Forget("10.0.0.8:7000"), "forgetting an address never dialled")
	require.Error(t, s.Forget("no port"))
	require.NoError(t, s.Close())
	require.ErrorIs(t, s.Connect(addr), ErrClosed)
	require.ErrorIs(t, s.Dial(addr), ErrClosed)
}

// TestForgetLeavesSession: forgetting an address a session runs to leaves
// the session up; it is not redialled once it ends.
func TestForgetLeavesSession(t *testing.T) {
	noLeaksAfter(t)
	n := memnet.New(memnet.Config{})
	cfg := Config{ReconnectMin: 5 * time.Millisecond}
	a := memSwarm(t, n, "10.0.0.1", cfg, nil)
	b := memSwarm(t, n, "10.0.0.2", cfg, nil)
	require.NoError(t, a.Connect("10.0.0.2:7000"))
	waitFor(t, "the session", func() bool { return waiting(a, "10.0.0.2:7000") })
	d := dialerOf(a, "10.0.0.2:7000")
	sess := sessionWith(a, b.Key())
	require.NoError(t, a.Forget("10.0.0.2:7000"))
	requireEnds(t, d, "forgotten")
	require.False(t, ended(sess))
	require.True(t, a.Connected(b.Key()))

	// Connecting again finds the session, and waits on it without dialling.
	require.NoError(t, a.Connect("10.0.0.2:7000"))
	waitFor(t, "the new loop waiting", func() bool { return waiting(a, "10.0.0.2:7000") })
	require.Same(t, sess, sessionWith(a, b.Key()))
	require.Equal(t, 1, n.Stats().Dials)
}

// TestDialGivesUp: Dial gives up on an address after maxDialFailures failed
// dials, and its goroutine ends.
func TestDialGivesUp(t *testing.T) {
	noLeaksAfter(t)
	n := memnet.New(memnet.Config{})
	var dials atomic.Int64
	s := memSwarm(t, n, "10.0.0.1", Config{ReconnectMin: time.Millisecond, ReconnectMax: 4 * time.Millisecond}, &dials)
	const addr = "10.0.0.9:7000"
	require.NoError(t, s.Dial(addr))
	d := dialerOf(s, addr)
	require.NotNil(t, d)
	requireEnds(t, d, "Dial")
	require.Equal(t, int64(maxDialFailures), dials.Load())
	require.Nil(t, dialerOf(s, addr))
	require.Error(t, s.Dial("10.0.0.9"), "no port")
}

// TestConnectMakesDialPersistent: Connect on an address Dial is dialling
// makes that loop persistent: it dials on past maxDialFailures.
func TestConnectMakesDialPersistent(t *testing.T) {
	noLeaksAfter(t)
	n := memnet.New(memnet.Config{})
	var dials atomic.Int64
	// Five failures take 40 ms at least, so the loop is still there for
	// Connect to find.
	s := memSwarm(t, n, "10.0.0.1", Config{ReconnectMin: 20 * time.Millisecond, ReconnectMax: 20 * time.Millisecond}, &dials)
	const addr = "10.0.0.9:7000"
	require.NoError(t, s.Dial(addr))
	d := dialerOf(s, addr)
	require.NoError(t, s.Connect(addr))
	require.Same(t, d, dialerOf(s, addr), "Connect started a loop of its own")
	waitFor(t, "dials past the limit", func() bool { return dials.Load() > 2*maxDialFailures })
	require.Same(t, d, dialerOf(s, addr))
	require.NoError(t, s.Forget(addr))
	requireEnds(t, d, "forgotten")
}

// TestDialSelf: an address that turns out to be the swarm's own is dialled
// once, makes no session, and is not dialled again.
func TestDialSelf(t *testing.T) {
	noLeaksAfter(t)
	n := memnet.New(memnet.Config{})
	var dials atomic.Int64
	s := memSwarm(t, n, "10.0.0.1", Config{ReconnectMin: time.Millisecond}, &dials)
	const addr = "10.0.0.1:7000"
	require.NoError(t, s.Connect(addr))
	waitFor(t, "the loop idle", func() bool { return waiting(s, addr) })
	require.NoError(t, s.Dial(addr))
	require.Equal(t, int64(1), dials.Load())
	require.Empty(t, s.Peers())
	d := dialerOf(s, addr)
	require.NoError(t, s.Forget(addr))
	requireEnds(t, d, "forgotten")
}

// TestStaticPeerDialledUntilUp: a Static's peer that is down for more
// than maxDialFailures dials is reached once it comes up, since a Static
// never reports it again.
func TestStaticPeerDialledUntilUp(t *testing.T) {
	noLeaksAfter(t)
	n := memnet.New(memnet.Config{})
	static, err := NewStatic("10.0.0.2:7000")
	require.NoError(t, err)
	var dials atomic.Int64
	a := memSwarm(t, n, "10.0.0.1", Config{
		Discovery:    []Discovery{static},
		ReconnectMin: 2 * time.Millisecond,
		ReconnectMax: 4 * time.Millisecond,
	}, &dials)
	require.NoError(t, a.Join(Topic{1}))
	waitFor(t, "failed dials", func() bool { return dials.Load() > maxDialFailures })
	b := memSwarm(t, n, "10.0.0.2", Config{}, nil)
	waitFor(t, "the static peer", func() bool { return a.Connected(b.Key()) })
}

// flakyListener fails its first fails Accepts as a process out of file
// descriptors does.
type flakyListener struct {
	net.Listener
	mu     sync.Mutex
	fails  int
	failed int
}

func (l *flakyListener) Accept() (net.Conn, error) {
	l.mu.Lock()
	if l.fails > 0 {
		l.fails--
		l.failed++
		l.mu.Unlock()
		return nil, &net.OpError{Op: "accept", Net: "tcp", Addr: l.Addr(), Err: os.NewSyscallError("accept4", syscall.EMFILE)}
	}
	l.mu.Unlock()
	return l.Listener.Accept()
}

// TestAcceptSurvivesErrors: Accept errors other than the listener closing
// pause accepting; they do not end it.
func TestAcceptSurvivesErrors(t *testing.T) {
	noLeaksAfter(t)
	real, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ln := &flakyListener{Listener: real, fails: 4}
	a := newTestSwarm(t, nil, Config{Listener: ln})
	b := newTestSwarm(t, nil, Config{})
	require.NoError(t, b.Connect(a.Addr().String()))
	waitFor(t, "the connection", func() bool { return a.Connected(b.Key()) })
	ln.mu.Lock()
	require.Equal(t, 4, ln.failed)
	ln.mu.Unlock()
	require.NoError(t, a.Close(), "Close ends the accept loop")
}

// stallListener hands out its stalled connections, whose far ends never
// send a byte, before the real listener's; it records, at each Accept, how
// many inbound handshakes the swarm has in progress.
type stallListener struct {
	net.Listener
	stalled chan net.Conn
	start   chan struct{} // Accept waits for it, so that swarm is set
	swarm   atomic.Pointer[Swarm]

	mu      sync.Mutex
	accepts int
	most    int32 // handshakes in progress at an Accept, at most
}

func (l *stallListener) Accept() (net.Conn, error) {
	<-l.start
	l.mu.Lock()
	l.accepts++
	l.most = max(l.most, l.swarm.Load().handshaking.Load())
	l.mu.Unlock()
	select {
	case c := <-l.stalled:
		return c, nil
	default:
		return l.Listener.Accept()
	}
}

func (l *stallListener) counts() (accepts int, most int32) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.accepts, l.most
}

// TestHandshakeBound: at most MaxHandshakes inbound handshakes run at
// once; at the bound the swarm does not Accept, and a real peer waiting in
// the backlog gets in once the stalled handshakes end.
func TestHandshakeBound(t *testing.T) {
	noLeaksAfter(t)
	const bound, extra = 4, 3
	real, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ln := &stallListener{Listener: real, stalled: make(chan net.Conn, bound+extra), start: make(chan struct{})}
	var far []net.Conn
	for range bound + extra {
		near, f := net.Pipe()
		ln.stalled <- near
		far = append(far, f)
	}
	a := newTestSwarm(t, nil, Config{Listener: ln, MaxHandshakes: bound})
	ln.swarm.Store(a)
	close(ln.start)

	waitFor(t, "the bound reached", func() bool { return a.handshaking.Load() == bound })
	accepts, most := ln.counts()
	require.Equal(t, bound, accepts, "Accept called at the bound")
	require.Less(t, most, int32(bound))

	b := newTestSwarm(t, nil, Config{})
	require.NoError(t, b.Connect(a.Addr().String()))
	for _, f := range far {
		f.Close()
	}
	waitFor(t, "the real peer", func() bool { return a.Connected(b.Key()) })
	accepts, most = ln.counts()
	require.GreaterOrEqual(t, accepts, bound+extra+1)
	require.Less(t, most, int32(bound))
	require.LessOrEqual(t, a.handshaking.Load(), int32(bound))
}

// TestJitter: a backoff's wait is drawn from [d/2, d], and varies.
func TestJitter(t *testing.T) {
	for _, d := range []time.Duration{0, 1, 2, 3, time.Millisecond, 30 * time.Second} {
		seen := map[time.Duration]bool{}
		for range 200 {
			j := jitter(d)
			require.GreaterOrEqual(t, j, d/2, "jitter(%v)", d)
			require.LessOrEqual(t, j, d, "jitter(%v)", d)
			seen[j] = true
		}
		if d >= time.Millisecond {
			require.Greater(t, len(seen), 10, fmt.Sprintf("jitter(%v) varies", d))
		}
	}
}
