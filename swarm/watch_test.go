package swarm

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// nextEvent returns the next event from a watch, failing the test if none
// comes or the channel closes.
func nextEvent(t testing.TB, events <-chan PeerEvent) PeerEvent {
	t.Helper()
	timer := time.NewTimer(30 * time.Second)
	defer timer.Stop()
	select {
	case e, ok := <-events:
		require.True(t, ok, "the watch ended")
		return e
	case <-timer.C:
		t.Fatal("no peer event for 30 s")
		return PeerEvent{}
	}
}

// requireClosed waits for a watch's channel to close, failing the test if
// an event comes first.
func requireClosed(t testing.TB, events <-chan PeerEvent) {
	t.Helper()
	timer := time.NewTimer(30 * time.Second)
	defer timer.Stop()
	select {
	case e, ok := <-events:
		require.False(t, ok, "an event (%+v) instead of the end of the watch", e)
	case <-timer.C:
		t.Fatal("the watch did not end in 30 s")
	}
}

func tcpAddrPort(a net.Addr) netip.AddrPort { return a.(*net.TCPAddr).AddrPort() }

// TestWatch follows a peer found by static discovery: up when it connects,
// down and up again when the connection is cut and redialled, down when the
// peer closes.
func TestWatch(t *testing.T) {
	b := newTestSwarm(t, nil, Config{})
	static, err := NewStatic(b.Addr().String())
	require.NoError(t, err)
	a := newTestSwarm(t, nil, Config{Discovery: []Discovery{static}})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	aw, bw := a.Watch(ctx), b.Watch(ctx)
	require.False(t, a.Connected(b.Key()))

	require.NoError(t, a.Join(Topic{1}))
	up := PeerEvent{Key: b.Key(), Addr: tcpAddrPort(b.Addr()), Up: true}
	require.Equal(t, up, nextEvent(t, aw))
	require.True(t, a.Connected(b.Key()))
	e := nextEvent(t, bw)
	require.Equal(t, a.Key(), e.Key)
	require.True(t, e.Up)
	require.Equal(t, netip.MustParseAddr("127.0.0.1"), e.Addr.Addr())
	require.True(t, b.Connected(a.Key()))

	// Cut the connection: a's dial loop redials.
	a.mu.Lock()
	for _, sess := range a.sessions {
		sess.conn.Close()
	}
	a.mu.Unlock()
	down := up
	down.Up = false
	require.Equal(t, down, nextEvent(t, aw))
	require.Equal(t, up, nextEvent(t, aw))
	require.True(t, a.Connected(b.Key()))
	for _, want := range []bool{false, true} {
		e := nextEvent(t, bw)
		require.Equal(t, a.Key(), e.Key)
		require.Equal(t, want, e.Up)
	}

	// The peer closes.
	require.NoError(t, b.Close())
	require.Equal(t, down, nextEvent(t, aw))
	require.False(t, a.Connected(b.Key()))
	requireClosed(t, bw)
}

// TestWatchStartsWithConnectedPeers: a watch begun after a peer connected
// reports it first.
func TestWatchStartsWithConnectedPeers(t *testing.T) {
	b := newTestSwarm(t, nil, Config{})
	a := newTestSwarm(t, nil, Config{})
	require.NoError(t, a.Connect(b.Addr().String()))
	waitFor(t, "the connection", func() bool { return a.Connected(b.Key()) })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	e := nextEvent(t, a.Watch(ctx))
	require.Equal(t, PeerEvent{Key: b.Key(), Addr: tcpAddrPort(b.Addr()), Up: true}, e)
}

// TestWatchEnds: a watch's channel closes when its context ends or the
// swarm closes, and at once for a swarm closed already.
func TestWatchEnds(t *testing.T) {
	s := newTestSwarm(t, nil, Config{})
	ctx, cancel := context.WithCancel(context.Background())
	cancelled := s.Watch(ctx)
	kept := s.Watch(context.Background())
	cancel()
	requireClosed(t, cancelled)
	require.NoError(t, s.Close())
	requireClosed(t, kept)
	requireClosed(t, s.Watch(context.Background()))
}

// TestWatchKeepsEveryEvent: events pile up for a watcher that does not
// read, and all of them come, in order, when it does.
func TestWatchKeepsEveryEvent(t *testing.T) {
	const n = 10000
	s := newTestSwarm(t, nil, Config{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	events := s.Watch(ctx)
	s.mu.Lock()
	for i := range n {
		s.emit(PeerEvent{Key: PeerKey{byte(i), byte(i >> 8)}, Up: i%2 == 0})
	}
	s.mu.Unlock()
	for i := range n {
		require.Equal(t, PeerEvent{Key: PeerKey{byte(i), byte(i >> 8)}, Up: i%2 == 0}, nextEvent(t, events), "event %d", i)
	}
}
