package torture

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/hyperfeed/hyperfeed/feed"
	"github.com/hyperfeed/hyperfeed/internal/memnet"
	"github.com/hyperfeed/hyperfeed/internal/wire"
	"github.com/hyperfeed/hyperfeed/swarm"
	"github.com/stretchr/testify/require"
)

// These tests truncate a writer while a replica is still downloading it,
// the case the crash and network tests kept running into: the replica must
// move to the new fork and complete it.

// sessionOver connects two honest sessions over conns a (the initiator's)
// and b.
func sessionOver(t testing.TB, a, b net.Conn, ca, cb swarm.SessionConfig) (*swarm.Session, *swarm.Session) {
	t.Helper()
	if ca.KeyPair.Public.IsZero() {
		ca.KeyPair = mustKeyPair()
	}
	if cb.KeyPair.Public.IsZero() {
		cb.KeyPair = mustKeyPair()
	}
	type res struct {
		s   *swarm.Session
		err error
	}
	ch := make(chan res, 1)
	go func() {
		s, err := swarm.NewSession(context.Background(), b, false, cb)
		ch <- res{s, err}
	}()
	sa, err := swarm.NewSession(context.Background(), a, true, ca)
	require.NoError(t, err)
	r := <-ch
	require.NoError(t, r.err)
	t.Cleanup(func() {
		sa.Close()
		r.s.Close()
	})
	return sa, r.s
}

// memPair dials a connection over n from host "10.0.0.1" to "10.0.0.2".
func memPair(t testing.TB, n *memnet.Network) (net.Conn, net.Conn) {
	t.Helper()
	ln, err := n.Listen("10.0.0.2:0")
	require.NoError(t, err)
	defer ln.Close()
	a, err := n.Dial(context.Background(), "10.0.0.1", ln.Addr().String())
	require.NoError(t, err)
	b, err := ln.Accept()
	require.NoError(t, err)
	return a, b
}

func openFeed(t testing.TB, o *feed.Options) *feed.Feed {
	t.Helper()
	f, err := feed.Open(t.TempDir(), o)
	require.NoError(t, err)
	t.Cleanup(func() { f.Close() })
	return f
}

func newReplicator(t testing.TB, f *feed.Feed) *swarm.Replicator {
	r := swarm.NewReplicator(f)
	t.Cleanup(r.Close)
	return r
}

// converged reports whether replica r holds writer w's head and all of it.
func converged(w, r *feed.Feed) bool {
	return r.Fork() == w.Fork() && r.Len() == w.Len() && r.Downloaded() == r.Len()
}

// TestForkWhileDownloading truncates the writer (and appends to its new
// fork) while a replica is half way through downloading it: the replica
// must move to the new fork and download it all.
func TestForkWhileDownloading(t *testing.T) {
	const n, cut, more = 3000, 100, 200
	w := openFeed(t, nil)
	_, err := w.Append(blocksFor(0, 0, n)...)
	require.NoError(t, err)
	r := openFeed(t, &feed.Options{Key: w.Key()})
	rr := newReplicator(t, r)
	rr.Download(0, swarm.Live)
	mn := memnet.New(memnet.Config{})
	a, b := memPair(t, mn)
	sw, sr := sessionOver(t, a, b, swarm.SessionConfig{}, swarm.SessionConfig{})
	sw.Replicate(newReplicator(t, w))
	sr.Replicate(rr)
	waitUntil(t, 30*time.Second, "the replica downloading", func() bool { return r.Downloaded() >= n/3 })
	require.NoError(t, w.Truncate(n-cut))
	_, err = w.Append(blocksFor(1, n-cut, more)...)
	require.NoError(t, err)
	deadline := time.Now().Add(scale.stallWait)
	for !converged(w, r) && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond) // polling with a deadline
	}
	if !converged(w, r) {
		// Measure what the stalled replica does meanwhile.
		before := mn.Sent("10.0.0.2")
		start := time.Now()
		waitUntil(t, 5*time.Second, "a second to pass", func() bool { return time.Since(start) >= time.Second })
		// (a measurement window, not a synchronisation)
		rate := float64(mn.Sent("10.0.0.2")-before) / time.Since(start).Seconds()
		p, data, perr := w.Prove(r.UpgradeRequest())
		aerr := fmt.Errorf("no proof: %w", perr)
		if perr == nil {
			aerr = r.ApplyProof(p, data)
		}
		t.Fatalf("a replica holding %d of %d blocks, whose writer truncated to %d (fork %d) and appended %d, "+
			"did not converge in %v (replica fork %d length %d): it sends %.0f KB/s of requests. The writer's "+
			"answer to its upgrade request, an upgrade from the shared prefix (%d), gives: %v",
			r.Downloaded(), n, n-cut, w.Fork(), more, scale.stallWait, r.Fork(), r.Len(), rate/1000, n-cut, aerr)
	}
	requireSame(t, w, r)
}

// TestSparseReplicaTakesFork is the feed-level half of
// TestForkWhileDownloading: a replica holding a few blocks asks the writer,
// which has truncated since, for its head, and reaches the new fork in at
// most two requests without losing a block both forks share.
func TestSparseReplicaTakesFork(t *testing.T) {
	const n, keep = 3000, 2900
	w := openFeed(t, nil)
	_, err := w.Append(blocksFor(0, 0, n)...)
	require.NoError(t, err)
	r := openFeed(t, &feed.Options{Key: w.Key()})
	for _, i := range []uint64{0, 1, 2, 500} {
		p, d, err := w.Prove(r.BlockRequest(i))
		require.NoError(t, err)
		require.NoError(t, r.ApplyProof(p, d))
	}
	require.NoError(t, w.Truncate(keep))
	_, err = w.Append(blocksFor(1, keep, 200)...)
	require.NoError(t, err)
	// The writer proves the new fork from the shared prefix, whose roots a
	// replica that did not download it lacks: it must fail cleanly, and the
	// replica then asks from a length made of its own head's first roots
	// (2048+512+256), which it holds whatever blocks it holds, as
	// swarm's Session does.
	p, d, err := w.Prove(r.UpgradeRequest())
	require.NoError(t, err)
	require.ErrorIs(t, r.ApplyProof(p, d), feed.ErrNotAvailable)
	require.Equal(t, uint64(0), r.Fork(), "a failed upgrade changed the replica")
	req := r.UpgradeRequest()
	req.Length = 2816
	p, d, err = w.Prove(req)
	require.NoError(t, err)
	require.NoError(t, r.ApplyProof(p, d))
	require.Equal(t, w.Head(), r.Head())
	require.NoError(t, r.Verify(context.Background()))
	for _, i := range []uint64{0, 1, 2, 500} {
		require.True(t, r.Has(i), "block %d, below both forks' shared prefix, was dropped", i)
	}
}

func TestNewForkHoldingsKept(t *testing.T) {
	const n, keep = 100, 80
	const ch = 7
	w := openFeed(t, nil)
	_, err := w.Append(blocksFor(0, 0, n)...)
	require.NoError(t, err)
	r := openFeed(t, &feed.Options{Key: w.Key()})
	for i := range uint64(n) {
		p, d, err := w.Prove(r.BlockRequest(i))
		require.NoError(t, err)
		require.NoError(t, r.ApplyProof(p, d))
	}
	require.NoError(t, w.Truncate(keep))
	for k := range 2 {
		_, err = w.Append(blocksFor(1, keep+uint64(10*k), 10)...)
		require.NoError(t, err)
	}
	rr := newReplicator(t, r)
	rr.Download(0, swarm.Live)
	s, p := peerWithSession(t, swarm.SessionConfig{}, true)
	s.Replicate(rr)
	p.until(t, "the honest side's Open", func(m wire.Message) bool { _, ok := m.(*wire.Open); return ok })
	require.NoError(t, p.open(ch, w.Key(), 1, keep, true))
	require.NoError(t, p.send(
		&wire.Sync{Channel: ch, Fork: 1, Length: keep + 10}, &wire.Range{Channel: ch, Start: keep, Length: 10},
		&wire.Sync{Channel: ch, Fork: 1, Length: keep + 20}, &wire.Range{Channel: ch, Start: keep + 10, Length: 10}))
	deadline := time.NewTimer(scale.stallWait)
	defer deadline.Stop()
	for !converged(w, r) {
		select {
		case m := <-p.in:
			if q, ok := m.(*wire.Request); ok {
				require.NoError(t, p.send(answer(w, ch, q)))
			}
		case <-deadline.C:
			var lack []uint64
			for i := range r.Len() {
				if !r.Has(i) {
					lack = append(lack, i)
				}
			}
			t.Fatalf("the replica (fork %d, length %d) did not converge in %v: it lacks blocks %v, which the "+
				"peer announced on fork 1", r.Fork(), r.Len(), scale.stallWait, lack)
		}
	}
	requireSame(t, w, r)
}

// TestOldForkRequestsAfterTruncation holds the replica's requests for the
// blocks a truncation drops until after the writer's new head: the answers
// to them (proofs of the new fork) must bring the replica to the new fork.
func TestOldForkRequestsAfterTruncation(t *testing.T) {
	const n, keep = 300, 200
	const ch = 7
	w := openFeed(t, nil)
	_, err := w.Append(blocksFor(0, 0, n)...)
	require.NoError(t, err)
	r := openFeed(t, &feed.Options{Key: w.Key()})
	rr := newReplicator(t, r)
	rr.Download(0, swarm.Live)
	s, p := peerWithSession(t, swarm.SessionConfig{}, true)
	s.Replicate(rr)
	require.NoError(t, p.open(ch, w.Key(), 0, n, true))
	var held []*wire.Request
	for r.Downloaded() < keep || len(held) < n-keep {
		m := p.next(t)
		require.NotNil(t, m, "the honest side hung up: %v", p.rerr)
		if q, ok := m.(*wire.Request); ok {
			if q.Block != nil && q.Block.Index >= keep {
				held = append(held, q)
				continue
			}
			require.NoError(t, p.send(answer(w, ch, q)))
		}
	}
	require.NoError(t, w.Truncate(keep))
	_, err = w.Append(blocksFor(1, keep, n-keep)...)
	require.NoError(t, err)
	require.NoError(t, p.send(&wire.Sync{Channel: ch, Fork: 1, Length: n}, &wire.Range{Channel: ch, Start: 0, Length: n}))
	for _, q := range held {
		require.NoError(t, p.send(answer(w, ch, q)))
	}
	deadline := time.NewTimer(10 * time.Second)
	defer deadline.Stop()
	for !converged(w, r) {
		select {
		case m := <-p.in:
			if q, ok := m.(*wire.Request); ok {
				require.NoError(t, p.send(answer(w, ch, q)))
			}
		case <-deadline.C:
			t.Fatalf("stalled: replica fork %d length %d, %d blocks", r.Fork(), r.Len(), r.Downloaded())
		}
	}
	requireSame(t, w, r)
}
