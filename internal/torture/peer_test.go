package torture

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/hyperfeed/hyperfeed/feed"
	"github.com/hyperfeed/hyperfeed/internal/noiseconn"
	"github.com/hyperfeed/hyperfeed/internal/wire"
	"github.com/hyperfeed/hyperfeed/swarm"
	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/blake2b"
)

// peer is a hand-driven end of a connection to an honest Session or
// Swarm, built from the protocol's real pieces (the Noise handshake, the
// wire codec) so that it can say anything in any order: the honest
// writer's part in an exact interleaving, or a liar's.
type peer struct {
	nc  *noiseconn.Conn
	key noiseconn.KeyPair

	wmu sync.Mutex
	w   *wire.Writer

	in   chan wire.Message // what the honest side sends; closed when reading fails
	rerr error             // why reading stopped; written before in is closed
	stop chan struct{}
	wg   sync.WaitGroup
}

// dialPeer runs the handshake on conn as the initiator and starts reading,
// unless read is false (a peer that reads nothing).
func dialPeer(t testing.TB, conn net.Conn, read bool) *peer {
	t.Helper()
	kp, err := noiseconn.GenerateKeyPair()
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	nc, err := noiseconn.Handshake(ctx, conn, true, noiseconn.Config{KeyPair: kp})
	require.NoError(t, err)
	p := &peer{nc: nc, key: kp, w: wire.NewWriter(nc), in: make(chan wire.Message, 4096), stop: make(chan struct{})}
	t.Cleanup(p.close)
	if read {
		p.wg.Go(p.readLoop)
	}
	return p
}

// peerWithSession connects a peer to a fresh honest Session (the
// responder) over an in-memory pipe.
func peerWithSession(t testing.TB, cfg swarm.SessionConfig, read bool) (*swarm.Session, *peer) {
	t.Helper()
	if cfg.KeyPair.Public.IsZero() {
		cfg.KeyPair = mustKeyPair()
	}
	ca, cb := net.Pipe()
	type res struct {
		s   *swarm.Session
		err error
	}
	ch := make(chan res, 1)
	go func() {
		s, err := swarm.NewSession(context.Background(), cb, false, cfg)
		ch <- res{s, err}
	}()
	p := dialPeer(t, ca, read)
	r := <-ch
	require.NoError(t, r.err)
	t.Cleanup(func() { r.s.Close() })
	return r.s, p
}

func (p *peer) readLoop() {
	r := wire.NewReader(p.nc)
	for {
		m, err := r.Read()
		if err != nil {
			p.rerr = err
			close(p.in)
			return
		}
		select {
		case p.in <- m:
		case <-p.stop:
			return
		}
	}
}

func (p *peer) close() {
	select {
	case <-p.stop:
		return
	default:
	}
	close(p.stop)
	p.nc.Close()
	p.wg.Wait()
}

// send writes messages and flushes them, returning the error: writing to
// a side that hung up is how many attacks end.
func (p *peer) send(ms ...wire.Message) error {
	p.wmu.Lock()
	defer p.wmu.Unlock()
	for _, m := range ms {
		if err := p.w.Write(m); err != nil {
			return err
		}
	}
	return p.w.Flush()
}

// next returns the honest side's next message, or nil once it has hung
// up; it fails the test after 30 s of silence.
func (p *peer) next(t testing.TB) wire.Message {
	t.Helper()
	timer := time.NewTimer(30 * time.Second)
	defer timer.Stop()
	select {
	case m, ok := <-p.in:
		if !ok {
			return nil
		}
		return m
	case <-timer.C:
		t.Fatal("the honest side said nothing for 30 s")
		return nil
	}
}

// until returns the honest side's first message for which match holds,
// answering Pings on the way; it fails the test if the side hangs up.
func (p *peer) until(t testing.TB, what string, match func(wire.Message) bool) wire.Message {
	t.Helper()
	for {
		m := p.next(t)
		if m == nil {
			t.Fatalf("the honest side hung up (%v) before %s", p.rerr, what)
		}
		if match(m) {
			return m
		}
		if ping, ok := m.(*wire.Ping); ok {
			p.send(&wire.Pong{Nonce: ping.Nonce})
		}
	}
}

// capabilityFor computes, from swarm/doc.go rather than from the session's
// code, the capability a peer in the given role owes for key on a session
// with handshake hash binding.
func capabilityFor(binding []byte, initiator bool, key [32]byte) []byte {
	h, err := blake2b.New256(binding)
	if err != nil {
		panic(err)
	}
	h.Write([]byte("hyperfeed/capability/v1\x00"))
	if initiator {
		h.Write([]byte{1})
	} else {
		h.Write([]byte{2})
	}
	h.Write(key[:])
	return h.Sum(nil)
}

// open opens feed key on channel ch with a good capability, and announces
// head (fork, length) and, if holds, every block of it.
func (p *peer) open(ch uint32, key feed.Key, fork, length uint64, holds bool) error {
	dk := key.DiscoveryKey()
	ms := []wire.Message{
		&wire.Open{Channel: ch, DiscoveryKey: dk[:], Capability: capabilityFor(p.nc.ChannelBinding(), true, key)},
		&wire.Sync{Channel: ch, Fork: fork, Length: length},
	}
	if holds && length > 0 {
		ms = append(ms, &wire.Range{Channel: ch, Start: 0, Length: length})
	}
	return p.send(ms...)
}

// answer is what an honest peer holding w answers to q on channel ch.
func answer(w *feed.Feed, ch uint32, q *wire.Request) wire.Message {
	p, data, err := w.Prove(feedRequest(q))
	if err != nil {
		return &wire.NoData{Channel: ch, ID: q.ID}
	}
	return wire.DataFrom(ch, q.ID, p, data)
}

func feedRequest(q *wire.Request) feed.Request {
	req := feed.Request{Fork: q.Fork, Length: q.Length, Upgrade: q.Upgrade}
	if q.Block != nil {
		req.Block = &feed.BlockRequest{Index: q.Block.Index, Nodes: q.Block.Nodes}
	}
	return req
}

// waitEnd waits for s to end and returns why.
func waitEnd(t testing.TB, s *swarm.Session, within time.Duration) error {
	t.Helper()
	timer := time.NewTimer(within)
	defer timer.Stop()
	select {
	case <-s.Done():
		return s.Err()
	case <-timer.C:
		t.Fatalf("the honest session did not end in %v", within)
		return nil
	}
}

// ended reports whether s has ended.
func ended(s *swarm.Session) bool {
	select {
	case <-s.Done():
		return true
	default:
		return false
	}
}
