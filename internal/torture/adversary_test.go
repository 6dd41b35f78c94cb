package torture

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"math/rand/v2"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hyperfeed/hyperfeed/feed"
	"github.com/hyperfeed/hyperfeed/internal/memnet"
	"github.com/hyperfeed/hyperfeed/internal/wire"
	"github.com/hyperfeed/hyperfeed/swarm"
	"github.com/stretchr/testify/require"
)

// These tests put hostile peers against honest Swarms on a memnet network
// while honest readers download from the same nodes. Whatever the attacker
// does, the honest node must keep serving the readers, its memory must stay
// within a generous bound, and an attacker that provably breaks the
// protocol must be disconnected.

const (
	writerHost   = "10.0.2.1"
	replicaHost  = "10.0.2.2"
	attackerHost = "10.0.2.66"
	// heapBound is the generous bound on the heap of the whole test (three
	// honest nodes, readers, the attacker) over its start: the honest
	// session's queues are bounded at a few MiB (see swarm/doc.go), and
	// TestAdversaryBaseline measures the same without an attacker.
	heapBound = 128 << 20
)

// advFixture is a writer node, a replica node downloading from it, and
// honest readers downloading from both.
type advFixture struct {
	net     *memnet.Network
	sk      ed25519.PrivateKey
	w, r    *feed.Feed
	ws, rs  *swarm.Swarm
	readers []*swarm.Download
	rfeeds  []*feed.Feed
	rdone   *swarm.Download // the replica node's own download
	forger  *feed.Feed      // the writer's blocks and more, signed by another key
}

func newAdvFixture(t *testing.T, n int) *advFixture {
	t.Helper()
	fx := &advFixture{net: memnet.New(memnet.Config{})}
	_, fx.sk, _ = ed25519.GenerateKey(nil)
	fx.w = openFeed(t, &feed.Options{SecretKey: fx.sk})
	_, err := fx.w.Append(blocksFor(0, 0, n)...)
	require.NoError(t, err)
	cfg := swarm.Config{KeepAlive: 200 * time.Millisecond}
	fx.ws = swarmOn(t, fx.net, writerHost, nil, cfg)
	_, err = fx.ws.Replicate(fx.w)
	require.NoError(t, err)
	fx.r = openFeed(t, &feed.Options{Key: fx.w.Key()})
	fx.rs = swarmOn(t, fx.net, replicaHost, nil, cfg)
	fx.rdone, err = fx.rs.Download(fx.r, 0, uint64(n))
	require.NoError(t, err)
	require.NoError(t, fx.rs.Connect(fx.ws.Addr().String()))
	return fx
}

// startReaders starts k honest readers downloading the whole feed, each
// from the writer node and the replica node.
func (fx *advFixture) startReaders(t *testing.T, k int) {
	t.Helper()
	for i := range k {
		f := openFeed(t, &feed.Options{Key: fx.w.Key()})
		s := swarmOn(t, fx.net, fmt.Sprintf("10.0.2.%d", 10+i), nil, swarm.Config{})
		d, err := s.Download(f, 0, fx.w.Len())
		require.NoError(t, err)
		require.NoError(t, s.Connect(fx.ws.Addr().String()))
		require.NoError(t, s.Connect(fx.rs.Addr().String()))
		fx.readers = append(fx.readers, d)
		fx.rfeeds = append(fx.rfeeds, f)
	}
}

// readersDone waits for every honest reader (and the replica node) to have
// the whole feed.
func (fx *advFixture) readersDone(t *testing.T) time.Duration {
	t.Helper()
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	require.NoError(t, fx.rdone.Wait(ctx), "the replica node stopped downloading")
	for i, d := range fx.readers {
		require.NoError(t, d.Wait(ctx), "honest reader %d was not served", i)
		requireSame(t, fx.w, fx.rfeeds[i])
	}
	requireSame(t, fx.w, fx.r)
	return time.Since(start)
}

// attack dials the node at addr as an attacker.
func (fx *advFixture) attack(t *testing.T, node *swarm.Swarm, read bool) *peer {
	t.Helper()
	conn, err := fx.net.Dial(context.Background(), attackerHost, node.Addr().String())
	require.NoError(t, err)
	p := dialPeer(t, conn, read)
	waitUntil(t, 10*time.Second, "the node taking the attacker's connection", func() bool { return node.Connected(swarm.PeerKey(p.key.Public)) })
	return p
}

// disconnected waits until node has dropped the attacker (whose session
// has ended: the node forgets it when its goroutines are gone).
func disconnected(t *testing.T, node *swarm.Swarm, p *peer, within time.Duration) bool {
	t.Helper()
	for deadline := time.Now().Add(within); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if !node.Connected(swarm.PeerKey(p.key.Public)) {
			return true
		}
	}
	return false
}

// countRequests answers the node's messages with reply until stop, and
// counts the Requests among them.
func countRequests(p *peer, stop <-chan struct{}, reply func(q *wire.Request) []wire.Message) *atomic.Int64 {
	var n atomic.Int64
	p.wg.Go(func() {
		for {
			select {
			case m, ok := <-p.in:
				if !ok {
					return
				}
				switch m := m.(type) {
				case *wire.Ping:
					p.send(&wire.Pong{Nonce: m.Nonce})
				case *wire.Request:
					n.Add(1)
					if reply != nil {
						p.send(reply(m)...)
					}
				}
			case <-stop:
				return
			case <-p.stop:
				return
			}
		}
	})
	return &n
}

// rate counts what happens in one second, after the node has settled.
func rate(t *testing.T, n *atomic.Int64) int64 {
	t.Helper()
	before, start := n.Load(), time.Now()
	waitUntil(t, 5*time.Second, "a second", func() bool { return time.Since(start) >= time.Second })
	return n.Load() - before
}

// TestAdversaryBaseline measures what the fixture costs without an
// attacker, for comparison with the attacks' figures.
func TestAdversaryBaseline(t *testing.T) {
	noLeaks(t)
	fx := newAdvFixture(t, 2000)
	mem := startMemPeak()
	fx.startReaders(t, 3)
	took := fx.readersDone(t)
	peak := mem.Stop()
	figure(t, "adversary.baseline", "no attacker: 3 honest readers served in %v; heap peak +%.1f MiB", took.Round(time.Millisecond), mib(peak))
}

// TestAdversaryFloodsRequests floods the writer node with requests it
// never reads the answers to, while honest readers download.
func TestAdversaryFloodsRequests(t *testing.T) {
	noLeaks(t)
	const n = 2000
	fx := newAdvFixture(t, n)
	mem := startMemPeak()
	p := fx.attack(t, fx.ws, false)
	require.NoError(t, p.open(1, fx.w.Key(), 0, 0, false))
	sent := make(chan int, 1)
	go func() {
		k := 0
		for ; k < scale.floodRequests; k += 1000 {
			ms := make([]wire.Message, 1000)
			for j := range ms {
				id := uint64(k + j + 1)
				ms[j] = &wire.Request{Channel: 1, ID: id, Length: n, Block: &wire.BlockRequest{Index: id % n, Nodes: 12}}
			}
			if p.send(ms...) != nil {
				break
			}
		}
		sent <- k
	}()
	fx.startReaders(t, 3)
	took := fx.readersDone(t)
	require.True(t, disconnected(t, fx.ws, p, 30*time.Second), "the flooder was never disconnected")
	peak := mem.Stop()
	k := <-sent
	figure(t, "adversary.requestflood", "a peer sending %d requests and reading nothing was disconnected after %d were taken; 3 honest readers served meanwhile in %v; heap peak +%.1f MiB",
		scale.floodRequests, k, took.Round(time.Millisecond), mib(peak))
	require.Less(t, peak, uint64(heapBound))
}

// TestAdversaryOpensChannels opens thousands of channels for feeds the
// writer node does not have (its Lookup is asked for each).
func TestAdversaryOpensChannels(t *testing.T) {
	noLeaks(t)
	fx := newAdvFixture(t, 1000)
	mem := startMemPeak()
	p := fx.attack(t, fx.ws, true)
	g := rand.NewChaCha8([32]byte{1})
	var ms []wire.Message
	for i := range scale.openFlood {
		dk := make([]byte, 32)
		g.Read(dk)
		ms = append(ms, &wire.Open{Channel: uint32(i + 1), DiscoveryKey: dk, Capability: make([]byte, 32)},
			&wire.Sync{Channel: uint32(i + 1), Length: 1 << 40}, &wire.Range{Channel: uint32(i + 1), Length: 1 << 40})
	}
	go p.send(ms...)
	fx.startReaders(t, 3)
	took := fx.readersDone(t)
	require.True(t, disconnected(t, fx.ws, p, 30*time.Second), "the peer opening %d channels was never disconnected", scale.openFlood)
	peak := mem.Stop()
	figure(t, "adversary.openflood", "a peer opening %d channels for unknown feeds was disconnected; 3 honest readers served meanwhile in %v; heap peak +%.1f MiB",
		scale.openFlood, took.Round(time.Millisecond), mib(peak))
	require.Less(t, peak, uint64(heapBound))
}

// TestAdversaryLiesAboutLength claims a head far longer than the writer's,
// to the replica node, and answers its requests with nothing (NoData),
// with a forged upgrade, or with an old head the writer did sign.
func TestAdversaryLiesAboutLength(t *testing.T) {
	const n = 1000
	for _, tc := range []struct {
		name string
		// reply is the liar's answer; old is a head of 50 blocks the
		// writer signed (before it grew).
		reply func(fx *advFixture, old wire.Message) func(q *wire.Request) []wire.Message
		// provable: the lie shows in what the liar sends, and must cost it
		// the connection.
		provable bool
	}{
		{name: "answers nothing", reply: func(*advFixture, wire.Message) func(*wire.Request) []wire.Message {
			return func(q *wire.Request) []wire.Message { return []wire.Message{&wire.NoData{Channel: 1, ID: q.ID}} }
		}},
		{name: "forges the upgrade", provable: true, reply: func(fx *advFixture, _ wire.Message) func(*wire.Request) []wire.Message {
			return func(q *wire.Request) []wire.Message { return []wire.Message{answer(fx.forger, 1, q)} }
		}},
		{name: "replays an old head", reply: func(_ *advFixture, old wire.Message) func(*wire.Request) []wire.Message {
			return func(q *wire.Request) []wire.Message {
				d := *old.(*wire.Data)
				d.ID = q.ID
				return []wire.Message{&d}
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			noLeaks(t)
			fx := newAdvFixture(t, n)
			// An old head: the writer's at 50 blocks, from a feed that then
			// grew. Build it from a copy cut at 50.
			short := openFeed(t, &feed.Options{SecretKey: fx.sk})
			_, err := short.Append(blocksFor(0, 0, 50)...)
			require.NoError(t, err)
			ps, ds, err := short.Prove(feed.Request{Upgrade: true, Block: &feed.BlockRequest{Index: 0, Nodes: 64}})
			require.NoError(t, err)
			oldHead := wire.DataFrom(1, 0, ps, ds)
			fx.forger = openFeed(t, nil)
			_, err = fx.forger.Append(blocksFor(0, 0, n+1000)...)
			require.NoError(t, err)

			// Let the replica node hold the writer's head first.
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			require.NoError(t, fx.rdone.Wait(ctx))
			mem := startMemPeak()
			p := fx.attack(t, fx.rs, true)
			require.NoError(t, p.open(1, fx.w.Key(), 0, n+1000, true))
			stop := make(chan struct{})
			defer close(stop)
			requests := countRequests(p, stop, tc.reply(fx, oldHead))
			fx.startReaders(t, 2)
			took := fx.readersDone(t)
			if tc.provable {
				require.True(t, disconnected(t, fx.rs, p, 30*time.Second), "the liar was not disconnected")
			}
			perSecond := rate(t, requests)
			peak := mem.Stop()
			require.Equal(t, fx.w.Head(), fx.r.Head(), "the replica node took the liar's head")
			figure(t, "adversary.liar."+tc.name, "a peer claiming %d blocks of a %d-block feed (it %s): the replica node kept the writer's head, served 2 readers in %v, asked the liar %d times (%d in the last second), heap peak +%.1f MiB; disconnected: %v",
				n+1000, n, tc.name, took.Round(time.Millisecond), requests.Load(), perSecond, mib(peak), !fx.rs.Connected(swarm.PeerKey(p.key.Public)))
			require.Less(t, peak, uint64(heapBound))
			require.LessOrEqual(t, perSecond, int64(100), "a peer that announces a longer head (%d) than it can prove, "+
				"and %s when asked for it, is asked for it again and again", n+1000, tc.name)
		})
	}
}

// TestAdversaryForkedHistory is a peer holding the writer's secret key
// (a stolen or duplicated device) that signs another history of the
// same fork, longer than the writer's: the replica node must refuse its
// upgrade (it does not extend what the replica verified), disconnect it,
// and keep the writer's head.
func TestAdversaryForkedHistory(t *testing.T) {
	noLeaks(t)
	const n = 1000
	fx := newAdvFixture(t, n)
	forger := openFeed(t, &feed.Options{SecretKey: fx.sk})
	_, err := forger.Append(blocksFor(7, 0, n+100)...) // other blocks, same key, same fork
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(t, fx.rdone.Wait(ctx))
	mem := startMemPeak()
	p := fx.attack(t, fx.rs, true)
	require.NoError(t, p.open(1, fx.w.Key(), 0, n+100, true))
	stop := make(chan struct{})
	defer close(stop)
	countRequests(p, stop, func(q *wire.Request) []wire.Message { return []wire.Message{answer(forger, 1, q)} })
	fx.startReaders(t, 2)
	took := fx.readersDone(t)
	require.True(t, disconnected(t, fx.rs, p, 30*time.Second), "the forker was not disconnected")
	peak := mem.Stop()
	require.Equal(t, fx.w.Head(), fx.r.Head(), "the replica node took the forged history")
	figure(t, "adversary.forkedhistory", "a peer with the writer's key signing another %d-block history of the same fork was disconnected; the replica node kept the writer's head and served 2 readers in %v; heap peak +%.1f MiB",
		n+100, took.Round(time.Millisecond), mib(peak))
	require.Less(t, peak, uint64(heapBound))
}

// TestAdversaryLiesToWriter claims, to the writer node itself, a longer
// head of the writer's own feed, and answers nothing: the writer cannot be
// upgraded by anyone, and must not keep asking.
func TestAdversaryLiesToWriter(t *testing.T) {
	noLeaks(t)
	const n = 500
	fx := newAdvFixture(t, n)
	p := fx.attack(t, fx.ws, true)
	require.NoError(t, p.open(1, fx.w.Key(), 0, n+1000, true))
	stop := make(chan struct{})
	defer close(stop)
	requests := countRequests(p, stop, func(q *wire.Request) []wire.Message {
		return []wire.Message{&wire.NoData{Channel: 1, ID: q.ID}}
	})
	fx.startReaders(t, 2)
	took := fx.readersDone(t)
	perSecond := rate(t, requests)
	figure(t, "adversary.liar.to-writer", "a peer claiming a longer head of the writer's own feed: the writer served 2 readers in %v and asked the liar %d times (%d in the last second)",
		took.Round(time.Millisecond), requests.Load(), perSecond)
	require.LessOrEqual(t, perSecond, int64(100), "the writer node asks a peer that claims a longer head of the "+
		"writer's own feed for an upgrade again and again, though a writable feed takes no proof")
}
