package feed_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/hyperfeed/hyperfeed/feed"
	"github.com/hyperfeed/hyperfeed/merkle"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	if runCrashChild() {
		return
	}
	goleak.VerifyTestMain(m)
}

// forModes runs a test with the default durability and with Sync.
func forModes(t *testing.T, test func(t *testing.T, syncMode bool)) {
	for _, m := range []bool{false, true} {
		t.Run(fmt.Sprintf("sync=%v", m), func(t *testing.T) { test(t, m) })
	}
}

func openFeed(t testing.TB, dir string, o *feed.Options) *feed.Feed {
	t.Helper()
	f, err := feed.Open(dir, o)
	require.NoError(t, err)
	t.Cleanup(func() { f.Close() })
	return f
}

func block(i int) []byte {
	return []byte(fmt.Sprintf("block %d %s", i, bytes.Repeat([]byte{byte(i)}, i%97)))
}

func appendN(t testing.TB, f *feed.Feed, from, n int) {
	t.Helper()
	bs := make([][]byte, n)
	for i := range bs {
		bs[i] = block(from + i)
	}
	_, err := f.Append(bs...)
	require.NoError(t, err)
}

func TestAppendGetReopen(t *testing.T) {
	dir := t.TempDir()
	f, err := feed.Open(dir, nil)
	require.NoError(t, err)
	require.True(t, f.Writable())
	require.Equal(t, uint64(0), f.Len())

	n, err := f.Append(block(0))
	require.NoError(t, err)
	require.Equal(t, uint64(1), n)
	appendN(t, f, 1, 99)
	n, err = f.Append()
	require.NoError(t, err)
	require.Equal(t, uint64(100), n)

	ctx := context.Background()
	var byteLen uint64
	for i := range 100 {
		b, err := f.Get(ctx, uint64(i))
		require.NoError(t, err)
		require.Equal(t, block(i), b)
		byteLen += uint64(len(b))
	}
	require.Equal(t, byteLen, f.ByteLen())
	_, err = f.Get(ctx, 100)
	require.ErrorIs(t, err, feed.ErrOutOfRange)

	head := f.Head()
	require.Equal(t, uint64(100), head.Length)
	require.True(t, merkle.VerifySignature(f.Key(), head.TreeHash, head.Length, head.Fork, head.Signature))
	key := f.Key()
	require.NoError(t, f.Verify(ctx))
	require.NoError(t, f.Close())
	_, err = f.Get(ctx, 0)
	require.ErrorIs(t, err, feed.ErrClosed)

	// The generated key pair was saved, so the feed reopens writable.
	f = openFeed(t, dir, nil)
	require.True(t, f.Writable())
	require.Equal(t, key, f.Key())
	require.Equal(t, head, f.Head())
	b, err := f.Get(ctx, 42)
	require.NoError(t, err)
	require.Equal(t, block(42), b)
	appendN(t, f, 100, 5)
	require.Equal(t, uint64(105), f.Len())
	require.NoError(t, f.Verify(ctx))
}

func TestOpenKeys(t *testing.T) {
	_, sk, err := ed25519.GenerateKey(nil)
	require.NoError(t, err)
	_, other, err := ed25519.GenerateKey(nil)
	require.NoError(t, err)
	dir := t.TempDir()

	f, err := feed.Open(dir, &feed.Options{SecretKey: sk})
	require.NoError(t, err)
	appendN(t, f, 0, 3)
	require.NoError(t, f.Close())

	// A given secret key is not saved: without it the feed opens read-only.
	f, err = feed.Open(dir, nil)
	require.NoError(t, err)
	require.False(t, f.Writable())
	require.Equal(t, uint64(3), f.Len())
	_, err = f.Append([]byte("x"))
	require.ErrorIs(t, err, feed.ErrNotWritable)
	require.NoError(t, f.Close())

	_, err = feed.Open(dir, &feed.Options{SecretKey: other})
	require.ErrorIs(t, err, feed.ErrKeyMismatch)
	_, err = feed.Open(dir, &feed.Options{Key: feed.KeyOf(other)})
	require.ErrorIs(t, err, feed.ErrKeyMismatch)
	_, err = feed.Open(t.TempDir(), &feed.Options{Key: feed.KeyOf(other), SecretKey: sk})
	require.ErrorIs(t, err, feed.ErrKeyMismatch)
	_, err = feed.Open(t.TempDir(), &feed.Options{SecretKey: sk[:10]})
	require.ErrorIs(t, err, feed.ErrKeyMismatch)

	f, err = feed.Open(dir, &feed.Options{SecretKey: sk, Key: feed.KeyOf(sk)})
	require.NoError(t, err)
	require.True(t, f.Writable())

	// One process at a time.
	_, err = feed.Open(dir, nil)
	require.ErrorIs(t, err, feed.ErrLocked)
	require.NoError(t, f.Close())

	r := openFeed(t, t.TempDir(), &feed.Options{Key: feed.KeyOf(sk)})
	require.False(t, r.Writable())
	require.Equal(t, feed.KeyOf(sk), r.Key())
	require.Equal(t, feed.KeyOf(sk).DiscoveryKey(), r.DiscoveryKey())
}

func TestBlockTooLarge(t *testing.T) {
	f := openFeed(t, t.TempDir(), nil)
	appendN(t, f, 0, 2)
	head := f.Head()
	_, err := f.Append([]byte("ok"), make([]byte, feed.MaxBlockSize+1))
	require.ErrorIs(t, err, feed.ErrBlockTooLarge)
	require.Equal(t, head, f.Head(), "a failed append changes nothing")
	n, err := f.Append(make([]byte, feed.MaxBlockSize))
	require.NoError(t, err)
	require.Equal(t, uint64(3), n)
}

func TestEmptyBlocks(t *testing.T) {
	f := openFeed(t, t.TempDir(), nil)
	_, err := f.Append([]byte{}, []byte("a"), nil, []byte("bc"))
	require.NoError(t, err)
	ctx := context.Background()
	for i, want := range []string{"", "a", "", "bc"} {
		b, err := f.Get(ctx, uint64(i))
		require.NoError(t, err)
		require.Equal(t, want, string(b))
	}
	i, rel, err := f.Seek(0)
	require.NoError(t, err)
	require.Equal(t, [2]uint64{1, 0}, [2]uint64{i, rel})
	i, rel, err = f.Seek(2)
	require.NoError(t, err)
	require.Equal(t, [2]uint64{3, 1}, [2]uint64{i, rel})
	_, _, err = f.Seek(3)
	require.ErrorIs(t, err, feed.ErrOutOfRange)
}

func TestSeek(t *testing.T) {
	f := openFeed(t, t.TempDir(), nil)
	appendN(t, f, 0, 300)
	var off uint64
	for i := range 300 {
		for _, rel := range []int{0, len(block(i)) - 1} {
			idx, r, err := f.Seek(off + uint64(rel))
			require.NoError(t, err)
			require.Equal(t, uint64(i), idx, "offset %d", off+uint64(rel))
			require.Equal(t, uint64(rel), r)
		}
		off += uint64(len(block(i)))
	}
}

func TestTruncate(t *testing.T) { forModes(t, testTruncate) }

func testTruncate(t *testing.T, syncMode bool) {
	dir := t.TempDir()
	f, err := feed.Open(dir, &feed.Options{Sync: syncMode})
	require.NoError(t, err)
	appendN(t, f, 0, 10)
	require.ErrorIs(t, f.Truncate(11), feed.ErrOutOfRange)
	require.NoError(t, f.Truncate(5))
	require.Equal(t, uint64(5), f.Len())
	require.Equal(t, uint64(1), f.Fork())
	h := f.Head()
	require.True(t, merkle.VerifySignature(f.Key(), h.TreeHash, 5, 1, h.Signature))
	ctx := context.Background()
	_, err = f.Get(ctx, 5)
	require.ErrorIs(t, err, feed.ErrOutOfRange)
	_, err = f.Append([]byte("new 5"), []byte("new 6"))
	require.NoError(t, err)
	b, err := f.Get(ctx, 6)
	require.NoError(t, err)
	require.Equal(t, "new 6", string(b))
	require.NoError(t, f.Verify(ctx))
	require.NoError(t, f.Truncate(0))
	require.Equal(t, uint64(2), f.Fork())
	require.Equal(t, uint64(0), f.ByteLen())
	appendN(t, f, 0, 3)
	head := f.Head()
	require.NoError(t, f.Close())

	f = openFeed(t, dir, &feed.Options{Sync: syncMode})
	require.Equal(t, head, f.Head())
	require.NoError(t, f.Verify(ctx))
}

func TestSubscribe(t *testing.T) {
	f := openFeed(t, t.TempDir(), nil)
	events := make(chan feed.Event, 10)
	cancel := f.Subscribe(func(e feed.Event) { events <- e })
	appendN(t, f, 0, 3)
	require.Equal(t, feed.Event{Kind: feed.EventAppend, Length: 3}, <-events)
	require.NoError(t, f.Truncate(1))
	require.Equal(t, feed.Event{Kind: feed.EventTruncate, Length: 1, Fork: 1}, <-events)
	cancel()
	appendN(t, f, 1, 1)
	select {
	case e := <-events:
		t.Fatalf("event after cancel: %+v", e)
	default:
	}
}

func TestConcurrentAppendAndRead(t *testing.T) {
	for _, syncMode := range []bool{false, true} {
		t.Run(fmt.Sprintf("sync=%v", syncMode), func(t *testing.T) {
			dir := t.TempDir()
			f := openFeed(t, dir, &feed.Options{Sync: syncMode})
			const writers, per = 4, 50
			var wg sync.WaitGroup
			for w := range writers {
				wg.Go(func() {
					for i := range per {
						_, err := f.Append([]byte(fmt.Sprintf("w%d-%d", w, i)))
						if err != nil {
							t.Error(err)
							return
						}
					}
				})
			}
			wg.Go(func() {
				ctx := context.Background()
				for f.Len() < writers*per {
					n := f.Len()
					if n == 0 {
						continue
					}
					if _, err := f.Get(ctx, n-1); err != nil {
						t.Error(err)
						return
					}
				}
			})
			wg.Wait()
			require.Equal(t, uint64(writers*per), f.Len())
			require.NoError(t, f.Verify(context.Background()))
			seen := map[string]bool{}
			for i := range uint64(writers * per) {
				b, err := f.Get(context.Background(), i)
				require.NoError(t, err)
				seen[string(b)] = true
			}
			require.Len(t, seen, writers*per)
			head := f.Head()
			require.NoError(t, f.Close())
			f2 := openFeed(t, dir, nil)
			require.Equal(t, head, f2.Head())
		})
	}
}

// replicate copies the writer into the replica block by block, in a random
// order, through proofs, as a replicator would.
func replicate(t testing.TB, w, r *feed.Feed, rng *rand.Rand) {
	t.Helper()
	idx := rng.Perm(int(w.Len()))
	for _, i := range idx {
		req := r.BlockRequest(uint64(i))
		p, data, err := w.Prove(req)
		require.NoError(t, err)
		require.NoError(t, r.ApplyProof(p, data), "block %d", i)
	}
}

func TestReplicaFromProofs(t *testing.T) { forModes(t, testReplicaFromProofs) }

func testReplicaFromProofs(t *testing.T, syncMode bool) {
	rng := rand.New(rand.NewPCG(1, 2))
	w := openFeed(t, t.TempDir(), &feed.Options{Sync: syncMode})
	appendN(t, w, 0, 1)
	appendN(t, w, 1, 200)
	rdir := t.TempDir()
	r := openFeed(t, rdir, &feed.Options{Key: w.Key(), Sync: syncMode})

	// An upgrade alone gives the head but no blocks.
	p, _, err := w.Prove(r.UpgradeRequest())
	require.NoError(t, err)
	require.NoError(t, r.ApplyProof(p, nil))
	require.Equal(t, w.Head(), r.Head())
	require.False(t, r.Has(0))
	require.ErrorIs(t, r.ApplyProof(p, nil), feed.ErrStale)

	replicate(t, w, r, rng)
	require.Equal(t, w.Len(), r.Downloaded())
	ctx := context.Background()
	require.NoError(t, r.Verify(ctx))

	// Live: new appends reach the replica with upgrades in the block proofs.
	appendN(t, w, 201, 37)
	for i := uint64(201); i < 238; i++ {
		p, data, err := w.Prove(r.BlockRequest(i))
		require.NoError(t, err)
		require.NoError(t, r.ApplyProof(p, data))
	}
	require.Equal(t, w.Head(), r.Head())
	require.NoError(t, r.Verify(ctx))
	for i := range w.Len() {
		a, err := w.Get(ctx, i)
		require.NoError(t, err)
		b, err := r.Get(ctx, i)
		require.NoError(t, err)
		require.Equal(t, a, b)
	}
	require.Equal(t, w.ByteLen(), r.ByteLen())
	head := r.Head()
	require.NoError(t, r.Close())
	r = openFeed(t, rdir, &feed.Options{Sync: syncMode})
	require.Equal(t, head, r.Head())
	require.False(t, r.Writable())
	require.NoError(t, r.Verify(ctx))

	// A replica can serve another replica.
	r2 := openFeed(t, t.TempDir(), &feed.Options{Key: w.Key(), Sync: syncMode})
	replicate(t, r, r2, rng)
	require.Equal(t, w.Head(), r2.Head())
	require.NoError(t, r2.Verify(ctx))
}

func TestSparseReplicaGetWaits(t *testing.T) { forModes(t, testSparseReplicaGetWaits) }

func testSparseReplicaGetWaits(t *testing.T, syncMode bool) {
	w := openFeed(t, t.TempDir(), &feed.Options{Sync: syncMode})
	appendN(t, w, 0, 64)
	r := openFeed(t, t.TempDir(), &feed.Options{Key: w.Key(), Sync: syncMode})

	wants := make(chan uint64, 16)
	r.Subscribe(func(e feed.Event) {
		if e.Kind == feed.EventWant {
			wants <- e.Index
		}
	})
	got := make(chan []byte, 1)
	go func() {
		b, err := r.Get(context.Background(), 40)
		if err != nil {
			t.Error(err)
		}
		got <- b
	}()
	// Act as the replicator: serve what the replica wants.
	i := <-wants
	require.Equal(t, uint64(40), i)
	p, data, err := w.Prove(r.BlockRequest(i))
	require.NoError(t, err)
	require.NoError(t, r.ApplyProof(p, data))
	require.Equal(t, block(40), <-got)
	require.True(t, r.Has(40))
	require.False(t, r.Has(39))
	require.Equal(t, uint64(1), r.Downloaded())

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	_, err = r.Get(ctx, 3)
	require.ErrorIs(t, err, context.DeadlineExceeded)

	// Closing the feed releases a waiting Get.
	done := make(chan error, 1)
	go func() { _, err := r.Get(context.Background(), 5); done <- err }()
	<-wants
	<-wants
	require.NoError(t, r.Close())
	require.ErrorIs(t, <-done, feed.ErrClosed)
}

func TestReplicaFollowsFork(t *testing.T) { forModes(t, testReplicaFollowsFork) }

func testReplicaFollowsFork(t *testing.T, syncMode bool) {
	rng := rand.New(rand.NewPCG(3, 4))
	w := openFeed(t, t.TempDir(), &feed.Options{Sync: syncMode})
	appendN(t, w, 0, 20)
	r := openFeed(t, t.TempDir(), &feed.Options{Key: w.Key(), Sync: syncMode})
	replicate(t, w, r, rng)

	require.NoError(t, w.Truncate(12))
	_, err := w.Append([]byte("fork 1, block 12"), []byte("fork 1, block 13"))
	require.NoError(t, err)

	// The replica's block request is from fork 0: the answer is an upgrade
	// from the shared prefix only.
	p, data, err := w.Prove(r.BlockRequest(13))
	require.NoError(t, err)
	require.Nil(t, p.Block)
	require.Equal(t, uint64(12), p.Upgrade.Start)
	events := make(chan feed.Event, 10)
	cancel := r.Subscribe(func(e feed.Event) { events <- e })
	require.NoError(t, r.ApplyProof(p, data))
	cancel()
	require.Equal(t, feed.EventTruncate, (<-events).Kind)
	require.Equal(t, feed.Event{Kind: feed.EventAppend, Length: 14, Fork: 1}, <-events)
	require.Equal(t, w.Head(), r.Head())
	require.Equal(t, uint64(12), r.Downloaded())
	require.False(t, r.Has(12))
	require.False(t, r.Has(13))
	replicate(t, w, r, rng)
	ctx := context.Background()
	b, err := r.Get(ctx, 13)
	require.NoError(t, err)
	require.Equal(t, "fork 1, block 13", string(b))
	require.NoError(t, r.Verify(ctx))

	// A stale proof from the old fork is refused and changes nothing.
	require.ErrorIs(t, r.ApplyProof(&merkle.Proof{Fork: 0}, nil), feed.ErrStaleFork)

	// Two more truncations; a replica two forks behind still catches up.
	r2 := openFeed(t, t.TempDir(), &feed.Options{Key: w.Key(), Sync: syncMode})
	replicate(t, w, r2, rng)
	require.NoError(t, w.Truncate(3))
	appendN(t, w, 100, 2)
	require.NoError(t, w.Truncate(4))
	appendN(t, w, 200, 6)
	p, data, err = w.Prove(r2.UpgradeRequest())
	require.NoError(t, err)
	require.Equal(t, uint64(3), p.Upgrade.Start)
	require.NoError(t, r2.ApplyProof(p, data))
	replicate(t, w, r2, rng)
	require.Equal(t, w.Head(), r2.Head())
	require.NoError(t, r2.Verify(ctx))
	for i := range w.Len() {
		a, _ := w.Get(ctx, i)
		b, err := r2.Get(ctx, i)
		require.NoError(t, err)
		require.Equal(t, a, b)
	}
}

func TestTamperedProofsRejected(t *testing.T) {
	w := openFeed(t, t.TempDir(), nil)
	appendN(t, w, 0, 50)
	r := openFeed(t, t.TempDir(), &feed.Options{Key: w.Key()})
	replicate(t, w, r, rand.New(rand.NewPCG(5, 6)))
	twin := openFeed(t, t.TempDir(), &feed.Options{Key: w.Key()})
	replicate(t, w, twin, rand.New(rand.NewPCG(5, 6)))
	appendN(t, w, 50, 13)

	// Ask for exactly the path the upgrade leaves missing, which the twin
	// shows, so that every node of the proof is one the replica checks:
	// surplus nodes are dropped unread (TestSurplusPathDropped).
	up, _, err := w.Prove(twin.UpgradeRequest())
	require.NoError(t, err)
	require.NoError(t, twin.ApplyProof(up, nil))
	req := r.BlockRequest(55)
	req.Block.Nodes = twin.BlockRequest(55).Block.Nodes
	good, data, err := w.Prove(req)
	require.NoError(t, err)
	require.NotNil(t, good.Upgrade)
	require.NotEmpty(t, good.Block.Nodes)
	before := r.Head()

	clone := func() *merkle.Proof {
		p := *good
		b := *good.Block
		b.Nodes = append([]merkle.Node(nil), good.Block.Nodes...)
		u := *good.Upgrade
		u.Nodes = append([]merkle.Node(nil), good.Upgrade.Nodes...)
		u.Signature = append([]byte(nil), good.Upgrade.Signature...)
		p.Block, p.Upgrade = &b, &u
		return &p
	}
	type tamper struct {
		name string
		edit func(p *merkle.Proof, d []byte) []byte
	}
	var cases []tamper
	for i := range len(data) {
		cases = append(cases, tamper{fmt.Sprintf("data byte %d", i), func(p *merkle.Proof, d []byte) []byte { d[i] ^= 1; return d }})
	}
	cases = append(cases,
		tamper{"data appended", func(p *merkle.Proof, d []byte) []byte { return append(d, 0) }},
		tamper{"block index", func(p *merkle.Proof, d []byte) []byte { p.Block.Index++; return d }},
		tamper{"signature", func(p *merkle.Proof, d []byte) []byte { p.Upgrade.Signature[7] ^= 1; return d }},
		tamper{"short signature", func(p *merkle.Proof, d []byte) []byte { p.Upgrade.Signature = p.Upgrade.Signature[:63]; return d }},
		tamper{"length", func(p *merkle.Proof, d []byte) []byte { p.Upgrade.Length++; return d }},
		tamper{"start", func(p *merkle.Proof, d []byte) []byte { p.Upgrade.Start--; return d }},
		tamper{"fork", func(p *merkle.Proof, d []byte) []byte { p.Fork++; return d }},
		tamper{"dropped block node", func(p *merkle.Proof, d []byte) []byte { p.Block.Nodes = p.Block.Nodes[1:]; return d }},
		tamper{"extra block node", func(p *merkle.Proof, d []byte) []byte {
			p.Block.Nodes = append([]merkle.Node{p.Block.Nodes[0]}, p.Block.Nodes...)
			return d
		}},
	)
	for k := range good.Block.Nodes {
		cases = append(cases,
			tamper{fmt.Sprintf("block node %d hash", k), func(p *merkle.Proof, d []byte) []byte { p.Block.Nodes[k].Hash[3] ^= 1; return d }},
			tamper{fmt.Sprintf("block node %d size", k), func(p *merkle.Proof, d []byte) []byte { p.Block.Nodes[k].Size++; return d }},
			tamper{fmt.Sprintf("block node %d index", k), func(p *merkle.Proof, d []byte) []byte { p.Block.Nodes[k].Index += 2; return d }},
		)
	}
	for k := range good.Upgrade.Nodes {
		cases = append(cases,
			tamper{fmt.Sprintf("upgrade node %d hash", k), func(p *merkle.Proof, d []byte) []byte { p.Upgrade.Nodes[k].Hash[0] ^= 0x80; return d }},
			tamper{fmt.Sprintf("upgrade node %d size", k), func(p *merkle.Proof, d []byte) []byte { p.Upgrade.Nodes[k].Size--; return d }},
		)
	}
	for _, c := range cases {
		p := clone()
		d := c.edit(p, append([]byte(nil), data...))
		err := r.ApplyProof(p, d)
		require.Error(t, err, c.name)
		require.True(t, errors.Is(err, feed.ErrInvalidProof) || errors.Is(err, feed.ErrNotAvailable), "%s: %v", c.name, err)
		require.Equal(t, before, r.Head(), c.name)
		require.False(t, r.Has(55), c.name)
	}
	require.NoError(t, r.Verify(context.Background()))
	require.NoError(t, r.ApplyProof(good, data))
	require.True(t, r.Has(55))
	require.Equal(t, w.Head(), r.Head())

	// A writer takes no proofs.
	require.ErrorIs(t, w.ApplyProof(good, data), feed.ErrWritable)
	// A proof for another feed's key fails its signature.
	other := openFeed(t, t.TempDir(), &feed.Options{Key: feed.KeyOf(mustKey(t))})
	require.ErrorIs(t, other.ApplyProof(good, data), feed.ErrInvalidProof)
}

func mustKey(t testing.TB) ed25519.PrivateKey {
	_, sk, err := ed25519.GenerateKey(nil)
	require.NoError(t, err)
	return sk
}

func TestStore(t *testing.T) {
	root := t.TempDir()
	s, err := feed.OpenStore(root, nil)
	require.NoError(t, err)
	a, err := s.Named("alice")
	require.NoError(t, err)
	require.True(t, a.Writable())
	again, err := s.Named("alice")
	require.NoError(t, err)
	require.Same(t, a, again)
	appendN(t, a, 0, 4)
	aKey := a.Key()

	b, err := s.Named("bob")
	require.NoError(t, err)
	require.NotEqual(t, aKey, b.Key())
	_, err = s.Named("")
	require.Error(t, err)

	other := mustKey(t)
	rep, err := s.Get(feed.KeyOf(other))
	require.NoError(t, err)
	require.False(t, rep.Writable())

	_, err = s.Find(feed.KeyOf(mustKey(t)).DiscoveryKey())
	require.ErrorIs(t, err, feed.ErrNotFound)
	list, err := s.List()
	require.NoError(t, err)
	require.ElementsMatch(t, []feed.DiscoveryKey{aKey.DiscoveryKey(), b.DiscoveryKey(), rep.DiscoveryKey()}, list)
	require.NoError(t, s.Close())
	_, err = s.Named("alice")
	require.ErrorIs(t, err, feed.ErrClosed)

	// A restart derives the same keys and finds the feeds by key or
	// discovery key, the named ones writable.
	s, err = feed.OpenStore(root, nil)
	require.NoError(t, err)
	defer s.Close()
	a, err = s.Named("alice")
	require.NoError(t, err)
	require.Equal(t, aKey, a.Key())
	require.Equal(t, uint64(4), a.Len())
	bb, err := s.Find(b.DiscoveryKey())
	require.NoError(t, err)
	require.True(t, bb.Writable())
	aa, err := s.Get(aKey)
	require.NoError(t, err)
	require.Same(t, a, aa)

	// Closing a feed lets the store open it afresh.
	require.NoError(t, a.Close())
	a2, err := s.Named("alice")
	require.NoError(t, err)
	require.NotSame(t, a, a2)
	require.Equal(t, uint64(4), a2.Len())

	// The same seed elsewhere derives the same named keys.
	seeded := filepath.Join(t.TempDir(), "s")
	s1, err := feed.OpenStore(seeded, &feed.StoreOptions{Seed: bytes.Repeat([]byte{7}, 32)})
	require.NoError(t, err)
	defer s1.Close()
	s2, err := feed.OpenStore(t.TempDir(), &feed.StoreOptions{Seed: bytes.Repeat([]byte{7}, 32)})
	require.NoError(t, err)
	defer s2.Close()
	k1, _ := s1.NamedKey("x")
	k2, _ := s2.NamedKey("x")
	require.Equal(t, k1, k2)
}

// A writer's directory opened without its secret key is a replica that holds
// every block; once it takes proofs its bitfield must speak for all of them.
func TestWriterDirectoryAsReplica(t *testing.T) {
	sk := mustKey(t)
	w := openFeed(t, t.TempDir(), &feed.Options{SecretKey: sk})
	appendN(t, w, 0, 10)
	copyDir := t.TempDir()
	c := openFeed(t, copyDir, &feed.Options{SecretKey: sk})
	appendN(t, c, 0, 10)
	require.Equal(t, w.Head(), c.Head(), "same key, same blocks, same signed head")
	require.NoError(t, c.Close())

	r := openFeed(t, copyDir, nil)
	require.False(t, r.Writable())
	require.Equal(t, uint64(10), r.Downloaded())
	appendN(t, w, 10, 5)
	for i := uint64(10); i < 15; i++ {
		p, data, err := w.Prove(r.BlockRequest(i))
		require.NoError(t, err)
		require.NoError(t, r.ApplyProof(p, data))
	}
	require.Equal(t, uint64(15), r.Downloaded())
	require.NoError(t, r.Close())

	r = openFeed(t, copyDir, nil)
	require.Equal(t, w.Head(), r.Head())
	require.Equal(t, uint64(15), r.Downloaded())
	require.NoError(t, r.Verify(context.Background()))
	for i := range uint64(15) {
		b, err := r.Get(context.Background(), i)
		require.NoError(t, err)
		require.Equal(t, block(int(i)), b)
	}
}

// A proof may carry more of the path than the replica lacks by the time it
// arrives (requests made while others were in flight): the surplus above the
// lowest trusted node is dropped unread, whatever it holds.
func TestSurplusPathDropped(t *testing.T) {
	w := openFeed(t, t.TempDir(), nil)
	appendN(t, w, 0, 64)
	r := openFeed(t, t.TempDir(), &feed.Options{Key: w.Key()})
	p, _, err := w.Prove(r.UpgradeRequest())
	require.NoError(t, err)
	require.NoError(t, r.ApplyProof(p, nil))
	// Both requests are made before either answer is applied.
	req10, req11 := r.BlockRequest(10), r.BlockRequest(11)
	p10, d10, err := w.Prove(req10)
	require.NoError(t, err)
	p11, d11, err := w.Prove(req11)
	require.NoError(t, err)
	require.NoError(t, r.ApplyProof(p10, d10))
	// Block 11's leaf came with block 10's proof: all of 11's path is surplus,
	// and garbage there changes nothing.
	for k := range p11.Block.Nodes {
		p11.Block.Nodes[k].Hash[0] ^= 0xff
	}
	require.NoError(t, r.ApplyProof(p11, d11))
	require.NoError(t, r.Verify(context.Background()))
	b, err := r.Get(context.Background(), 11)
	require.NoError(t, err)
	require.Equal(t, block(11), b)
}

func TestApplyProofsBatch(t *testing.T) { forModes(t, testApplyProofsBatch) }

func testApplyProofsBatch(t *testing.T, syncMode bool) {
	w := openFeed(t, t.TempDir(), nil)
	appendN(t, w, 0, 300)
	r := openFeed(t, t.TempDir(), &feed.Options{Key: w.Key(), Sync: syncMode})
	rng := rand.New(rand.NewPCG(9, 9))

	// All requests first, as a pipelined download makes them; the batch
	// opens with the upgrade they all depend on.
	up, _, err := w.Prove(r.UpgradeRequest())
	require.NoError(t, err)
	batch := []feed.ProofData{{Proof: up}}
	for _, i := range rng.Perm(300) {
		req := r.BlockRequest(uint64(i))
		req.Upgrade = false
		req.Fork, req.Length = w.Fork(), w.Len()
		p, data, err := w.Prove(req)
		require.NoError(t, err)
		batch = append(batch, feed.ProofData{Proof: p, Data: data})
	}
	bad := 150
	batch[bad].Data = append([]byte("forged "), batch[bad].Data...)
	events := make(chan feed.Event, 400)
	cancel := r.Subscribe(func(e feed.Event) {
		if e.Kind == feed.EventBlock {
			events <- e
		}
	})
	errs := r.ApplyProofs(batch)
	cancel()
	for k, err := range errs {
		if k == bad {
			require.ErrorIs(t, err, feed.ErrInvalidProof)
			continue
		}
		require.NoError(t, err, "proof %d", k)
	}
	require.Equal(t, uint64(299), r.Downloaded())
	require.Len(t, events, 299)
	badIndex := batch[bad].Proof.Block.Index
	require.False(t, r.Has(badIndex))
	require.NoError(t, r.Verify(context.Background()))

	p, data, err := w.Prove(r.BlockRequest(badIndex))
	require.NoError(t, err)
	require.Empty(t, r.ApplyProofs([]feed.ProofData{{Proof: p, Data: data}})[0])
	requireFeedsEqual(t, w, r)
}

func requireFeedsEqual(t *testing.T, w, r *feed.Feed) {
	t.Helper()
	require.Equal(t, w.Head(), r.Head())
	for i := range w.Len() {
		a, err := w.Get(context.Background(), i)
		require.NoError(t, err)
		b, err := r.Get(context.Background(), i)
		require.NoError(t, err)
		require.Equal(t, a, b)
	}
}

// ProveMany answers as Prove does, including for runs it reads ahead, and
// still reports damage inside such a run as ErrCorrupt.
func TestProveMany(t *testing.T) {
	dir := t.TempDir()
	w := openFeed(t, dir, nil)
	appendN(t, w, 0, 200)
	r := openFeed(t, t.TempDir(), &feed.Options{Key: w.Key()})
	var reqs []feed.Request
	for _, i := range []uint64{5, 6, 7, 8, 9, 10, 100, 3, 11, 150, 12} {
		req := r.BlockRequest(i)
		req.Upgrade, req.Fork, req.Length = false, w.Fork(), w.Len()
		reqs = append(reqs, req)
	}
	reqs = append(reqs, r.UpgradeRequest(), feed.Request{Fork: 5, Upgrade: true})
	got := w.ProveMany(reqs)
	require.Len(t, got, len(reqs))
	for k, req := range reqs {
		p, data, err := w.Prove(req)
		require.Equal(t, err, got[k].Err, "request %d", k)
		require.Equal(t, p, got[k].Proof, "request %d", k)
		require.Equal(t, data, got[k].Data, "request %d", k)
	}

	// Damage one block inside the run read ahead.
	require.NoError(t, w.Close())
	var off int
	for i := range 8 {
		off += len(block(i))
	}
	data, err := os.ReadFile(filepath.Join(dir, "data"))
	require.NoError(t, err)
	data[off] ^= 1
	require.NoError(t, os.WriteFile(filepath.Join(dir, "data"), data, 0o600))
	w = openFeed(t, dir, nil)
	got = w.ProveMany(reqs)
	for k, req := range reqs {
		if req.Block != nil && req.Block.Index == 8 {
			require.ErrorIs(t, got[k].Err, feed.ErrCorrupt)
			continue
		}
		_, _, err := w.Prove(req)
		require.Equal(t, err, got[k].Err, "request %d", k)
	}
}

// TestProveManyDamagedNodes damages, one at a time, each tree node that the
// proofs of a run of consecutive blocks climb through: ProveMany, which
// stops hashing where an earlier proof of the batch checked the path, must
// report damage wherever Prove alone does.
func TestProveManyDamagedNodes(t *testing.T) {
	dir := t.TempDir()
	w := openFeed(t, dir, nil)
	appendN(t, w, 0, 64)
	r := openFeed(t, t.TempDir(), &feed.Options{Key: w.Key()})
	var reqs []feed.Request
	for i := uint64(20); i < 44; i++ {
		req := r.BlockRequest(i)
		req.Upgrade, req.Fork, req.Length = false, w.Fork(), w.Len()
		reqs = append(reqs, req)
	}
	require.NoError(t, w.Close())
	tree := filepath.Join(dir, "tree")
	clean, err := os.ReadFile(tree)
	require.NoError(t, err)
	for n := 0; n < len(clean)/feed.NodeRecordSize; n++ {
		damaged := bytes.Clone(clean)
		damaged[n*feed.NodeRecordSize+merkle.NodeSize-1] ^= 1 // the last byte of its hash
		require.NoError(t, os.WriteFile(tree, damaged, 0o600))
		w, err := feed.Open(dir, nil)
		if errors.Is(err, feed.ErrCorrupt) {
			continue // a damaged root: Open reports it
		}
		require.NoError(t, err)
		got := w.ProveMany(reqs)
		for k, req := range reqs {
			p, data, err := w.Prove(req)
			require.Equal(t, errors.Is(err, feed.ErrCorrupt), errors.Is(got[k].Err, feed.ErrCorrupt), "node %d damaged, block %d: Prove says %v, ProveMany %v", n, req.Block.Index, err, got[k].Err)
			if err == nil {
				require.Equal(t, p, got[k].Proof)
				require.Equal(t, data, got[k].Data)
			}
		}
		require.NoError(t, w.Close())
	}
}

// TestBlockRequests checks that the batched BlockRequests, which reads the
// tree under its blocks at once, asks for the same proof nodes as
// BlockRequest does block by block, on a replica holding a random part of
// the feed.
func TestBlockRequests(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	w := openFeed(t, t.TempDir(), nil)
	appendN(t, w, 0, 300)
	r := openFeed(t, t.TempDir(), &feed.Options{Key: w.Key()})
	p, _, err := w.Prove(r.UpgradeRequest())
	require.NoError(t, err)
	require.NoError(t, r.ApplyProof(p, nil))
	for _, i := range rng.Perm(300)[:120] {
		p, data, err := w.Prove(r.BlockRequest(uint64(i)))
		require.NoError(t, err)
		require.NoError(t, r.ApplyProof(p, data))
	}
	sets := [][]uint64{{0, 1}, {299, 300, 301}, {5, 200, 17, 18, 19}}
	run := make([]uint64, 0, 300)
	for i := range uint64(300) {
		run = append(run, i)
	}
	sets = append(sets, run, []uint64{1, 1 << 20}) // the last: too wide to read at once
	for _, set := range sets {
		got := r.BlockRequests(set)
		require.Len(t, got, len(set))
		for k, i := range set {
			require.Equal(t, r.BlockRequest(i), got[k], "block %d of %v", i, set)
		}
	}
}

// TestApplyProofsMixedSizes stores a batch of consecutive blocks whose
// sizes straddle the size under which their data is gathered into one
// write, and reads every block back.
func TestApplyProofsMixedSizes(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	w := openFeed(t, t.TempDir(), nil)
	var blocks [][]byte
	for i := range 40 {
		size := []int{0, 1, 100, 16<<10 - 1, 16 << 10, 70 << 10}[rng.IntN(6)]
		b := make([]byte, size)
		for k := range b {
			b[k] = byte(i + k)
		}
		blocks = append(blocks, b)
	}
	_, err := w.Append(blocks...)
	require.NoError(t, err)
	r := openFeed(t, t.TempDir(), &feed.Options{Key: w.Key()})
	up, _, err := w.Prove(r.UpgradeRequest())
	require.NoError(t, err)
	require.NoError(t, r.ApplyProof(up, nil))
	var batch []feed.ProofData
	for i := range uint64(40) {
		p, data, err := w.Prove(r.BlockRequest(i))
		require.NoError(t, err)
		batch = append(batch, feed.ProofData{Proof: p, Data: data})
	}
	for k, err := range r.ApplyProofs(batch) {
		require.NoError(t, err, "block %d", k)
	}
	for i, want := range blocks {
		got, err := r.Get(context.Background(), uint64(i))
		require.NoError(t, err)
		require.Equal(t, want, got, "block %d", i)
	}
	require.NoError(t, r.Verify(context.Background()))
}

// TestPrepare applies proofs whose leaves Prepare hashed ahead, and checks
// that a Data replaced after Prepare is hashed again, not trusted.
func TestPrepare(t *testing.T) {
	w := openFeed(t, t.TempDir(), nil)
	appendN(t, w, 0, 20)
	r := openFeed(t, t.TempDir(), &feed.Options{Key: w.Key()})
	up, _, err := w.Prove(r.UpgradeRequest())
	require.NoError(t, err)
	require.NoError(t, r.ApplyProof(up, nil))
	var batch []feed.ProofData
	for i := range uint64(20) {
		p, data, err := w.Prove(r.BlockRequest(i))
		require.NoError(t, err)
		batch = append(batch, feed.Prepare(p, data))
	}
	batch[3].Data = []byte("forged")                              // replaced after Prepare
	batch[5].Proof.Block.Index, batch[6].Proof.Block.Index = 6, 5 // swapped after Prepare
	errs := r.ApplyProofs(batch)
	for k, err := range errs {
		if k == 3 || k == 5 || k == 6 {
			require.ErrorIs(t, err, feed.ErrInvalidProof, "proof %d", k)
			continue
		}
		require.NoError(t, err, "proof %d", k)
	}
	for i := range uint64(20) {
		require.Equal(t, i != 3 && i != 5 && i != 6, r.Has(i), "block %d", i)
	}
	require.NoError(t, r.Verify(context.Background()))
}

// TestMustExist: with MustExist, Open fails with ErrNotFound where no feed
// is stored, creates nothing, and opens a stored feed as usual.
func TestMustExist(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "typo")
	_, err := feed.Open(dir, &feed.Options{MustExist: true})
	require.ErrorIs(t, err, feed.ErrNotFound)
	_, err = os.Stat(dir)
	require.ErrorIs(t, err, os.ErrNotExist, "MustExist created the directory")

	w := openFeed(t, dir, nil)
	appendN(t, w, 0, 3)
	require.NoError(t, w.Close())
	f, err := feed.Open(dir, &feed.Options{MustExist: true})
	require.NoError(t, err)
	require.Equal(t, uint64(3), f.Len())
	require.NoError(t, f.Close())
}
