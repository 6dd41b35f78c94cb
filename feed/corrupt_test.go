package feed_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/hyperfeed/hyperfeed/feed"
	"github.com/hyperfeed/hyperfeed/merkle"
	"github.com/stretchr/testify/require"
)

// The corruption tests damage one byte of one file at a time and check that
// the feed either repairs it on Open (a header slot has a twin, a bitfield
// page is rebuilt from the blocks it covers, a parent past the head is
// cleared) or reports ErrCorrupt from Open, Get, Prove or Verify, and that
// nothing it returns is wrong.

type corruptCase struct {
	dir      string
	writable bool
	key      feed.Key
	head     feed.Head
	blocks   map[uint64][]byte // what the feed holds
	pristine map[string][]byte
}

func newCorruptCase(t *testing.T, dir string, f *feed.Feed, blocks map[uint64][]byte) *corruptCase {
	c := &corruptCase{dir: dir, writable: f.Writable(), key: f.Key(), head: f.Head(), blocks: blocks, pristine: map[string][]byte{}}
	require.NoError(t, f.Close())
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		require.NoError(t, err)
		c.pristine[e.Name()] = b
	}
	return c
}

func (c *corruptCase) restore(t *testing.T) {
	for name, b := range c.pristine {
		require.NoError(t, os.WriteFile(filepath.Join(c.dir, name), b, 0o600))
	}
}

// check opens the feed and reads everything it can. It reports whether the
// damage was detected, and fails the test on any wrong answer.
func (c *corruptCase) check(t *testing.T, what string) (detected bool) {
	corrupt := func(err error) bool {
		if err == nil {
			return false
		}
		require.ErrorIs(t, err, feed.ErrCorrupt, what)
		return true
	}
	f, err := feed.Open(c.dir, nil)
	if corrupt(err) {
		return true
	}
	defer f.Close()
	require.Equal(t, c.key, f.Key(), what)
	require.Equal(t, c.head, f.Head(), what)
	ctx := context.Background()
	for i, want := range c.blocks {
		b, err := f.Get(ctx, i)
		if corrupt(err) {
			detected = true
			continue
		}
		require.Equal(t, want, b, "%s: block %d", what, i)
	}
	// A fresh requester asks for every block with the whole upgrade: what
	// comes back must verify, or be refused as corrupt.
	p, _, err := f.Prove(feed.Request{Upgrade: true})
	if corrupt(err) {
		detected = true
	} else {
		roots, _, err := p.Upgrade.Verify(c.key, p.Fork, nil)
		require.NoError(t, err, what)
		for i := range c.blocks {
			p, data, err := f.Prove(feed.Request{Fork: c.head.Fork, Length: c.head.Length, Block: &feed.BlockRequest{Index: i, Nodes: 64}})
			if corrupt(err) {
				detected = true
				continue
			}
			_, err = p.Block.Verify(data, func(j uint64) (merkle.Node, bool) {
				for _, r := range roots {
					if r.Index == j {
						return r, true
					}
				}
				return merkle.Node{}, false
			})
			require.NoError(t, err, "%s: block %d", what, i)
		}
	}
	if corrupt(f.Verify(ctx)) {
		detected = true
	}
	return detected
}

func (c *corruptCase) run(t *testing.T, sample func(name string, size int) []int) {
	require.False(t, c.check(t, "pristine"), "the undamaged feed reads as corrupt")
	rng := rand.New(rand.NewPCG(7, 7))
	for name, orig := range c.pristine {
		flips := 0
		for _, pos := range sample(name, len(orig)) {
			damaged := bytes.Clone(orig)
			damaged[pos] ^= byte(1 + rng.IntN(255))
			require.NoError(t, os.WriteFile(filepath.Join(c.dir, name), damaged, 0o600))
			what := fmt.Sprintf("%s byte %d", name, pos)
			detected := c.check(t, what)
			got, err := os.ReadFile(filepath.Join(c.dir, name))
			require.NoError(t, err)
			repaired := bytes.Equal(orig, got)
			switch name {
			case "header", "bitfield":
				// Each header slot has a twin, and a bitfield page records
				// only what the blocks show: Open repairs either, and the
				// feed is whole.
				require.False(t, detected, "%s: a damaged slot or page should be repaired", what)
				require.True(t, repaired, "%s: not repaired", what)
			default:
				require.True(t, detected || repaired, "%s: damage went unnoticed", what)
			}
			c.restore(t)
			flips++
		}
		t.Logf("%s: %d bytes damaged one at a time", name, flips)
	}

	// Both header slots damaged: nothing to repair from.
	h := bytes.Clone(c.pristine["header"])
	h[100] ^= 1
	h[512+100] ^= 1
	require.NoError(t, os.WriteFile(filepath.Join(c.dir, "header"), h, 0o600))
	_, err := feed.Open(c.dir, nil)
	require.ErrorIs(t, err, feed.ErrCorrupt)
	c.restore(t)

	// Files cut short.
	for _, name := range []string{"tree", "data", "index"} {
		orig := c.pristine[name]
		require.NoError(t, os.WriteFile(filepath.Join(c.dir, name), orig[:len(orig)/2], 0o600))
		require.True(t, c.check(t, name+" truncated"), "%s cut in half went unnoticed", name)
		c.restore(t)
	}
}

// sampleBytes damages every byte of small files; with -short, every byte of
// the header and a few hundred elsewhere. The bitfield is mostly one page
// of zero bits under one checksum: a sample of it says as much as all of it.
func sampleBytes(t *testing.T) func(string, int) []int {
	rng := rand.New(rand.NewPCG(1, 1))
	return func(name string, size int) []int {
		all := make([]int, size)
		for i := range all {
			all[i] = i
		}
		limit := size
		if name == "bitfield" {
			limit = 256
		}
		if testing.Short() && name != "header" {
			limit = min(limit, 64)
		}
		if limit >= size {
			return all
		}
		rng.Shuffle(size, func(i, j int) { all[i], all[j] = all[j], all[i] })
		return all[:limit]
	}
}

func TestCorruptionWriter(t *testing.T) {
	dir := t.TempDir()
	f, err := feed.Open(dir, nil)
	require.NoError(t, err)
	blocks := map[uint64][]byte{}
	for i := range 14 {
		blocks[uint64(i)] = block(i + 1)
	}
	for _, batch := range [][2]int{{0, 5}, {5, 6}, {6, 14}} {
		var bs [][]byte
		for i := batch[0]; i < batch[1]; i++ {
			bs = append(bs, blocks[uint64(i)])
		}
		_, err := f.Append(bs...)
		require.NoError(t, err)
	}
	require.NoError(t, f.Truncate(11))
	for i := uint64(11); i < 14; i++ {
		delete(blocks, i)
	}
	_, err = f.Append(blocks[3])
	require.NoError(t, err)
	blocks[11] = blocks[3]
	newCorruptCase(t, dir, f, blocks).run(t, sampleBytes(t))
}

func TestCorruptionReplica(t *testing.T) {
	w := openFeed(t, t.TempDir(), nil)
	appendN(t, w, 1, 20)
	dir := t.TempDir()
	r, err := feed.Open(dir, &feed.Options{Key: w.Key()})
	require.NoError(t, err)
	blocks := map[uint64][]byte{}
	for _, i := range []uint64{3, 4, 9, 17} {
		p, data, err := w.Prove(r.BlockRequest(i))
		require.NoError(t, err)
		require.NoError(t, r.ApplyProof(p, data))
		blocks[i] = data
	}
	c := newCorruptCase(t, dir, r, blocks)
	// A replica's files have holes for the blocks and nodes it lacks;
	// damage there touches nothing it holds or serves (a write that did
	// not finish leaves such records), so only the bytes of held blocks
	// and stored nodes are damaged in those files.
	held := func(name string, size int) []int {
		switch name {
		case "tree":
			var out []int
			tree := c.pristine["tree"]
			for at := 0; at < len(tree); at += feed.NodeRecordSize {
				if rec := tree[at : at+feed.NodeRecordSize]; !bytes.Equal(rec, make([]byte, feed.NodeRecordSize)) {
					for k := range rec {
						out = append(out, at+k)
					}
				}
			}
			return out
		case "index":
			var out []int
			for i := range blocks {
				for k := range 16 { // its index entry
					out = append(out, int(i)*16+k)
				}
			}
			return out
		case "data":
			var out []int
			var off int
			for i := range 20 {
				n := len(block(i + 1))
				if _, ok := blocks[uint64(i)]; ok {
					for k := range n {
						out = append(out, off+k)
					}
				}
				off += n
			}
			return out
		}
		return sampleBytes(t)(name, size)
	}
	c.run(t, held)
}

func TestCorruptSecretOrKeyIsClear(t *testing.T) {
	dir := t.TempDir()
	f, err := feed.Open(dir, nil)
	require.NoError(t, err)
	appendN(t, f, 0, 3)
	require.NoError(t, f.Close())
	require.NoError(t, os.WriteFile(filepath.Join(dir, "secret"), []byte("short"), 0o600))
	_, err = feed.Open(dir, nil)
	require.ErrorIs(t, err, feed.ErrCorrupt)
	require.True(t, errors.Is(err, feed.ErrCorrupt))
}
