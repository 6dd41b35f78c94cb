package torture

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hyperfeed/hyperfeed/feed"
	"github.com/hyperfeed/hyperfeed/internal/memnet"
	"github.com/hyperfeed/hyperfeed/swarm"
	"github.com/stretchr/testify/require"
)

// registry is discovery on a memnet network: every swarm that joins a
// topic is told of every other member, as mDNS would on a LAN. Announce
// tells them all again, as mDNS's periodic announcements do.
type registry struct {
	mu      sync.Mutex
	members map[swarm.Topic]map[netip.AddrPort]func(swarm.Candidate)
}

func newRegistry() *registry {
	return &registry{members: map[swarm.Topic]map[netip.AddrPort]func(swarm.Candidate){}}
}

// member is the Discovery of the swarm listening on addr.
func (g *registry) member(addr string) swarm.Discovery {
	return &regMember{g: g, self: netip.MustParseAddrPort(addr)}
}

// Announce reports every member of every topic to every other.
func (g *registry) Announce() {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, m := range g.members {
		for a, found := range m {
			for b := range m {
				if a != b {
					found(swarm.Candidate{Addr: b})
				}
			}
		}
	}
}

type regMember struct {
	g    *registry
	self netip.AddrPort
}

// Join reports the topic's members, and this one to them. found is called
// under the registry's lock, so that none is called after Leave or Close.
func (m *regMember) Join(topic swarm.Topic, port int, found func(swarm.Candidate)) error {
	m.g.mu.Lock()
	defer m.g.mu.Unlock()
	ms := m.g.members[topic]
	if ms == nil {
		ms = map[netip.AddrPort]func(swarm.Candidate){}
		m.g.members[topic] = ms
	}
	for other, f := range ms {
		found(swarm.Candidate{Addr: other})
		f(swarm.Candidate{Addr: m.self})
	}
	ms[m.self] = found
	return nil
}

func (m *regMember) Leave(topic swarm.Topic) error {
	m.g.mu.Lock()
	defer m.g.mu.Unlock()
	delete(m.g.members[topic], m.self)
	return nil
}

func (m *regMember) Close() error {
	m.g.mu.Lock()
	defer m.g.mu.Unlock()
	for _, ms := range m.g.members {
		delete(ms, m.self)
	}
	return nil
}

// TestSwarmsConvergeUnderNetworkFaults runs a writer and several replicas,
// each a Swarm on the memnet network, finding each other by discovery. The
// links delay, re-chunk and now and then reset; each round the writer
// appends and the network does something worse: a partition between random
// halves, a heal, a broken link, a burst of flipped bits or reordered
// writes (which Noise must refuse, ending the session). At the end the
// network heals, and every replica must converge on the writer's signed
// head with every block, and nothing may leak.
//
// The writer does not truncate here: replicas that lag a truncation hit
// the bugs TestForkWhileDownloading and TestNewForkHoldingsKept describe.
func TestSwarmsConvergeUnderNetworkFaults(t *testing.T) {
	noLeaks(t)
	rng := rand.New(rand.NewPCG(6, 6))
	net := memnet.New(memnet.Config{Seed: 6})
	base := memnet.Faults{Latency: time.Millisecond, Jitter: 2 * time.Millisecond, Chunk: 4096, Reset: 0.0005}
	net.SetFaults(base)
	reg := newRegistry()
	cfg := func(host string) swarm.Config {
		return swarm.Config{Discovery: []swarm.Discovery{reg.member(host + ":7000")}, KeepAlive: 500 * time.Millisecond}
	}
	hosts := []string{"10.0.1.1"}
	w := openFeed(t, nil)
	_, err := w.Append(blocksFor(0, 0, 200)...)
	require.NoError(t, err)
	ws := swarmOn(t, net, hosts[0], nil, cfg(hosts[0]))
	_, err = ws.Replicate(w)
	require.NoError(t, err)
	rs := make([]*feed.Feed, scale.netReplicas)
	for i := range rs {
		host := fmt.Sprintf("10.0.1.%d", i+2)
		hosts = append(hosts, host)
		rs[i] = openFeed(t, &feed.Options{Key: w.Key()})
		s := swarmOn(t, net, host, nil, cfg(host))
		_, err := s.Download(rs[i], 0, swarm.Live)
		require.NoError(t, err)
	}
	events := map[string]int{}
	for range scale.netRounds {
		_, err := w.Append(blocksFor(0, w.Len(), 1+rng.IntN(50))...)
		require.NoError(t, err)
		switch rng.IntN(7) {
		case 0:
			perm := rng.Perm(len(hosts))
			cut := 1 + rng.IntN(len(hosts)-1)
			var a, b []string
			for k, i := range perm {
				if k < cut {
					a = append(a, hosts[i])
				} else {
					b = append(b, hosts[i])
				}
			}
			net.Partition(a, b)
			events["partitions"]++
		case 1:
			net.Heal()
			reg.Announce()
			events["heals"]++
		case 2:
			a, b := hosts[rng.IntN(len(hosts))], hosts[rng.IntN(len(hosts))]
			events["links broken"] += net.Break(a, b)
		case 3:
			f := base
			f.Corrupt = 0.05
			net.SetFaults(f)
			events["bursts of flipped bits"]++
		case 4:
			f := base
			f.Reorder = 0.05
			net.SetFaults(f)
			events["bursts of reordering"]++
		default:
			net.SetFaults(base)
		}
		// Let the round's traffic run: a pace, not a synchronisation.
		time.Sleep(time.Duration(20+rng.IntN(80)) * time.Millisecond)
	}
	net.Heal()
	net.ClearFaults()
	reg.Announce()
	healed := time.Now()
	for i, r := range rs {
		waitUntil(t, 60*time.Second, fmt.Sprintf("replica %d converging (it has length %d, %d blocks; the writer %d)",
			i, r.Len(), r.Downloaded(), w.Len()), func() bool { return converged(w, r) })
	}
	took := time.Since(healed)
	for _, r := range rs {
		requireSame(t, w, r)
	}
	st := net.Stats()
	figure(t, "netfaults.converge", "%d replicas converged on the writer's head (%d blocks) %v after healing; %d rounds: %v; memnet: %d connections, %d resets, %d partitions refusing %d dials, %d writes re-chunked into %d pieces, %d reordered, %d corrupted",
		len(rs), w.Len(), took.Round(time.Millisecond), scale.netRounds, events, st.Dials, st.Resets, st.Partitions, st.Outs, st.Writes, st.Chunks, st.Reordered, st.Corrupted)
}

// frameSwapper is a connection that swaps two Noise frames: it parses what
// is written into frames (u24le length ‖ ciphertext, see noiseconn) and,
// once armed, holds the next frame back until the one after it is
// written. Unlike memnet's Reorder, which moves whole writes, it moves
// exactly one frame past exactly one other.
type frameSwapper struct {
	net.Conn
	mu    sync.Mutex
	buf   []byte
	held  []byte
	armed bool
	done  bool
}

func (c *frameSwapper) arm() {
	c.mu.Lock()
	c.armed = true
	c.mu.Unlock()
}

func (c *frameSwapper) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.buf = append(c.buf, p...)
	var out []byte
	for len(c.buf) >= 3 {
		size := 3 + (int(c.buf[0]) | int(c.buf[1])<<8 | int(c.buf[2])<<16)
		if len(c.buf) < size {
			break
		}
		frame := append([]byte(nil), c.buf[:size]...)
		c.buf = c.buf[size:]
		switch {
		case c.armed && !c.done && c.held == nil:
			c.held = frame
		case c.held != nil:
			out = append(append(out, frame...), c.held...)
			c.held, c.done = nil, true
		default:
			out = append(out, frame...)
		}
	}
	if len(out) > 0 {
		if _, err := c.Conn.Write(out); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

// TestReorderedFramesEndSession reorders and corrupts the encrypted stream
// of a replicating session pair, mid-download: the side that receives it
// must end the session with ErrProtocol (Noise's nonces and tags), store
// nothing of it, and then complete from a clean connection.
func TestReorderedFramesEndSession(t *testing.T) {
	for _, tc := range []struct {
		name  string
		fault func(n *memnet.Network, swap *frameSwapper)
		// oneWay: only the writer's frames are touched, so the replica's
		// side must be the one to refuse them; memnet's faults touch both
		// directions, and either side may notice first.
		oneWay bool
	}{
		{"two frames swapped", func(_ *memnet.Network, swap *frameSwapper) { swap.arm() }, true},
		{"writes reordered", func(n *memnet.Network, _ *frameSwapper) { n.SetFaults(memnet.Faults{Reorder: 1}) }, false},
		{"a bit flipped", func(n *memnet.Network, _ *frameSwapper) { n.SetFaults(memnet.Faults{Corrupt: 1}) }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			noLeaks(t)
			const n = 5000
			w := openFeed(t, nil)
			_, err := w.Append(blocksFor(0, 0, n)...)
			require.NoError(t, err)
			r := openFeed(t, &feed.Options{Key: w.Key()})
			rr := newReplicator(t, r)
			d := rr.Download(0, n)
			mn := memnet.New(memnet.Config{})
			a, b := memPair(t, mn)
			swap := &frameSwapper{Conn: a} // the writer's side writes through it
			sw, sr := sessionOver(t, swap, b, swarm.SessionConfig{}, swarm.SessionConfig{})
			sw.Replicate(newReplicator(t, w))
			sr.Replicate(rr)
			waitUntil(t, 30*time.Second, "the download under way", func() bool { return r.Downloaded() >= 100 })
			tc.fault(mn, swap)
			errW, errR := waitEnd(t, sw, 30*time.Second), waitEnd(t, sr, 30*time.Second)
			t.Logf("the writer's session: %v; the replica's: %v", errW, errR)
			// The session wraps Noise's error as text.
			refused := errR
			if !tc.oneWay && !errors.Is(errR, swarm.ErrProtocol) {
				refused = errW
			}
			require.ErrorIs(t, refused, swarm.ErrProtocol)
			// A write reordered may have held part of a frame (the
			// session writes in chunks of at most 64 KiB, whatever the
			// frames): the receiver then reads ciphertext as a frame's
			// length, and refuses it as too long before any decryption.
			if msg := refused.Error(); !strings.Contains(msg, "decrypt") &&
				!(tc.name == "writes reordered" && strings.Contains(msg, "frame too long")) {
				t.Fatalf("refused with %v, not by decryption", refused)
			}
			requireOnlyWriters(t, w, r)
			held := r.Downloaded()
			require.Less(t, held, uint64(n), "the download finished before the fault")

			mn.ClearFaults()
			a2, b2 := memPair(t, mn)
			sw2, sr2 := sessionOver(t, a2, b2, swarm.SessionConfig{}, swarm.SessionConfig{})
			sw2.Replicate(newReplicator(t, w))
			sr2.Replicate(rr)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			require.NoError(t, d.Wait(ctx))
			requireSame(t, w, r)
			figure(t, "netfaults.noise."+tc.name, "the session ended (%v) with %d of %d blocks; the rest came over a clean connection", refused, held, n)
		})
	}
}
