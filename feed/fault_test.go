package feed_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/hyperfeed/hyperfeed/feed"
	"github.com/hyperfeed/hyperfeed/internal/faultfs"
	"github.com/stretchr/testify/require"
)

// The fault tests put the storage of a feed in the states a failed write,
// a failed read or a power loss leaves, and hold the feed to doc.go: a
// failed call reports what the disk said and leaves the feed as it was, the
// next write works, and a reopened feed opens, verifies, and holds what was
// acknowledged.

// applyBlock stores the writer's proof of block i in f.
func applyBlock(t testing.TB, w, f *feed.Feed, i uint64) error {
	t.Helper()
	p, data, err := w.Prove(f.BlockRequest(i))
	require.NoError(t, err)
	return f.ApplyProof(p, data)
}

// applyBatch stores the writer's proofs of blocks [from, to) in f as one
// batch, as a replicator does.
func applyBatch(t testing.TB, w, f *feed.Feed, from, to uint64) error {
	t.Helper()
	var batch []feed.ProofData
	for i := from; i < to; i++ {
		p, data, err := w.Prove(f.BlockRequest(i))
		require.NoError(t, err)
		batch = append(batch, feed.Prepare(p, data))
	}
	return errors.Join(f.ApplyProofs(batch)...)
}

// treeWrite fails, as fail says, the writes to the tree file for which at
// is true (given how many came before).
func treeWrite(at func(n int, c faultfs.Call) bool, fail func(c faultfs.Call) error) faultfs.Rule {
	n := 0
	return func(c faultfs.Call) error {
		if c.Op != faultfs.OpWrite || !strings.HasSuffix(c.Path, "/tree") {
			return nil
		}
		n++
		if at(n, c) {
			return fail(c)
		}
		return nil
	}
}

func eio(faultfs.Call) error { return faultfs.Errno(syscall.EIO) }

// requireDiskError checks that err is the injected EIO, not damage.
func requireDiskError(t testing.TB, err error, msgAndArgs ...any) {
	t.Helper()
	require.ErrorIs(t, err, syscall.EIO, msgAndArgs...)
	require.NotErrorIs(t, err, feed.ErrCorrupt, msgAndArgs...)
}

// A bitfield record spans two 4 KiB pages of the file, and a failed write
// or a power loss can leave one new and the other old. The page is rebuilt
// from the blocks it covers, where Open used to refuse the whole feed.
func TestTornBitfieldPageRebuilt(t *testing.T) {
	w := openFeed(t, t.TempDir(), nil)
	appendN(t, w, 0, 20)
	dir := t.TempDir()
	bits := filepath.Join(dir, "bitfield")
	r, err := feed.Open(dir, &feed.Options{Key: w.Key()})
	require.NoError(t, err)
	for i := range uint64(10) {
		require.NoError(t, applyBlock(t, w, r, i))
	}
	before, err := os.ReadFile(bits)
	require.NoError(t, err)
	require.NoError(t, applyBlock(t, w, r, 10))
	after, err := os.ReadFile(bits)
	require.NoError(t, err)
	require.NoError(t, r.Close())

	claims := bytes.Clone(after)
	claims[15/8] |= 1 << (15 % 8) // block 15, which the replica lacks
	for name, page := range map[string][]byte{
		"new bits, old checksum":     slices.Concat(after[:4096], before[4096:]),
		"old bits, new checksum":     slices.Concat(before[:4096], after[4096:]),
		"a bit for a block it lacks": claims,
	} {
		require.NoError(t, os.WriteFile(bits, page, 0o600))
		r, err := feed.Open(dir, &feed.Options{Key: w.Key()})
		require.NoError(t, err, name)
		for i := range uint64(20) {
			// Block 10's data and nodes went to the disk before its bit:
			// whichever half of the page survived, it is held.
			require.Equal(t, i <= 10, r.Has(i), "%s: block %d", name, i)
		}
		require.NoError(t, r.Verify(context.Background()), name)
		require.NoError(t, r.Close())
		got, err := os.ReadFile(bits)
		require.NoError(t, err)
		require.Equal(t, after, got, "%s: the page was not written back whole", name)
	}
}

// A write to the tree that fails part way leaves a node half written. The
// replica must not trust it: it used to, and then refused the writer's
// honest proof of the block for good.
func TestTornNodeNotTrusted(t *testing.T) {
	w := openFeed(t, t.TempDir(), nil)
	appendN(t, w, 0, 16)
	m := faultfs.NewMem()
	fsys := faultfs.Wrap(m)
	r := openFeed(t, "/r", &feed.Options{Key: w.Key(), FS: fsys})
	require.NoError(t, applyBlock(t, w, r, 0))

	// Block 5's proof stores leaf 10 with its sibling 8 and their parent 9
	// in one write: it stops in the middle of node 9.
	fsys.SetRule(treeWrite(func(_ int, c faultfs.Call) bool { return c.Off == 8*feed.NodeRecordSize },
		func(c faultfs.Call) error { return &faultfs.Short{N: c.Len / 2, Err: faultfs.Errno(syscall.EIO)} }))
	requireDiskError(t, applyBlock(t, w, r, 5))
	require.Equal(t, 1, fsys.Injected(faultfs.OpWrite), "the write that stores node 9")
	fsys.SetRule(nil)
	require.False(t, r.Has(5))

	reopened := openFeed(t, "/r", &feed.Options{Key: w.Key(), FS: m.Snapshot()})
	for name, f := range map[string]*feed.Feed{"after the failure": r, "reopened": reopened} {
		require.NoError(t, f.Verify(context.Background()), name)
		require.NoError(t, applyBlock(t, w, f, 5), "%s: the writer's proof", name)
		require.NoError(t, applyBlock(t, w, f, 4), "%s: the writer's proof", name)
		b, err := f.Get(context.Background(), 5)
		require.NoError(t, err, name)
		require.Equal(t, block(5), b, name)
		require.NoError(t, f.Verify(context.Background()), name)
	}
}

// A batch of proofs whose store fails at any write of the tree leaves the
// replica taking the next batch (it used to refuse it as corrupt until
// reopened), the same blocks again, and a reopen that verifies.
func TestStoreAfterFailedStore(t *testing.T) {
	w := openFeed(t, t.TempDir(), nil)
	appendN(t, w, 0, 24)
	base := faultfs.NewMem()
	r, err := feed.Open("/r", &feed.Options{Key: w.Key(), FS: base})
	require.NoError(t, err)
	for i := range uint64(12) {
		require.NoError(t, applyBlock(t, w, r, i))
	}
	require.NoError(t, r.Close())

	writes := 0
	probe := faultfs.Wrap(base.Snapshot())
	r = openFeed(t, "/r", &feed.Options{Key: w.Key(), FS: probe})
	probe.SetRule(treeWrite(func(n int, _ faultfs.Call) bool { writes = n; return false }, nil))
	require.NoError(t, applyBatch(t, w, r, 12, 18))
	require.Greater(t, writes, 1)

	for k := 1; k <= writes; k++ {
		m := base.Snapshot()
		fsys := faultfs.Wrap(m)
		r, err := feed.Open("/r", &feed.Options{Key: w.Key(), FS: fsys})
		require.NoError(t, err)
		fsys.SetRule(treeWrite(func(n int, _ faultfs.Call) bool { return n == k }, eio))
		requireDiskError(t, applyBatch(t, w, r, 12, 18), "k=%d", k)
		fsys.SetRule(nil)
		require.Equal(t, uint64(12), r.Downloaded(), "k=%d: the failed store took effect", k)
		require.NoError(t, applyBatch(t, w, r, 18, 24), "k=%d: the next store", k)
		require.NoError(t, applyBatch(t, w, r, 12, 18), "k=%d: the same blocks again", k)
		require.NoError(t, r.Verify(context.Background()), "k=%d", k)
		require.NoError(t, r.Close())

		g, err := feed.Open("/r", &feed.Options{Key: w.Key(), FS: m})
		require.NoError(t, err, "k=%d", k)
		require.Equal(t, uint64(24), g.Downloaded(), "k=%d", k)
		require.NoError(t, g.Verify(context.Background()), "k=%d", k)
		require.NoError(t, g.Close())
	}
}

// An append that fails at any write leaves the feed as it was: the nodes it
// wrote past the head go, among them the parents that would have joined
// old blocks to new, which a shorter append does not overwrite and which
// Verify used to find past the head.
func TestAppendAfterFailedAppend(t *testing.T) { forModes(t, testAppendAfterFailedAppend) }

func testAppendAfterFailedAppend(t *testing.T, syncMode bool) {
	base := faultfs.NewMem()
	w, err := feed.Open("/w", &feed.Options{FS: base, Sync: syncMode})
	require.NoError(t, err)
	appendN(t, w, 0, 5)
	require.NoError(t, w.Close())

	probe := faultfs.Wrap(base.Snapshot())
	w = openFeed(t, "/w", &feed.Options{FS: probe, Sync: syncMode})
	w0 := probe.Calls(faultfs.OpWrite)
	appendN(t, w, 5, 3)
	writes := probe.Calls(faultfs.OpWrite) - w0

	for k := 1; k <= writes; k++ {
		m := base.Snapshot()
		fsys := faultfs.Wrap(m)
		w, err := feed.Open("/w", &feed.Options{FS: fsys, Sync: syncMode})
		require.NoError(t, err)
		head := w.Head()
		fsys.SetRule(faultfs.Nth(faultfs.OpWrite, k, faultfs.Errno(syscall.EIO)))
		_, err = w.Append(block(5), block(6), block(7))
		requireDiskError(t, err, "k=%d", k)
		fsys.SetRule(nil)
		require.Equal(t, head, w.Head(), "k=%d: the failed append took effect", k)
		want := []uint64{6}
		if verr := w.Verify(context.Background()); errors.Is(verr, feed.ErrFailed) {
			// The header's write failed in a group commit: the disk may
			// hold it or not, and the feed waits to be reopened.
			require.True(t, syncMode, "k=%d", k)
			_, err = w.Append(block(5))
			require.ErrorIs(t, err, feed.ErrFailed, "k=%d", k)
			want = []uint64{5, 8}
		} else {
			require.NoError(t, verr, "k=%d", k)
			_, err = w.Append(block(5))
			require.NoError(t, err, "k=%d: the next append", k)
			require.NoError(t, w.Verify(context.Background()), "k=%d", k)
		}
		w.Close()

		g, err := feed.Open("/w", &feed.Options{FS: m, Sync: syncMode})
		require.NoError(t, err, "k=%d", k)
		require.Contains(t, want, g.Len(), "k=%d", k)
		require.NoError(t, g.Verify(context.Background()), "k=%d", k)
		require.NoError(t, g.Close())
	}
}

// A power loss in the middle of an append can keep the parents it wrote
// that join old blocks to new, and lose the run of new nodes that extends
// the file. Open clears such parents whatever the file's length; it used
// to clear them only when the file was longer than the head.
func TestOpenClearsParentsPastHead(t *testing.T) {
	dir := t.TempDir()
	w, err := feed.Open(dir, nil)
	require.NoError(t, err)
	appendN(t, w, 0, 6)
	read := func(name string) []byte {
		b, err := os.ReadFile(filepath.Join(dir, name))
		require.NoError(t, err)
		return b
	}
	header, tree6 := read("header"), read("tree")
	appendN(t, w, 6, 2)
	require.NoError(t, w.Close())
	tree8 := read("tree")

	// The head of 6 blocks, with parents 7 (blocks 0-7) and 11 (blocks 4-7)
	// of the append that followed, and nothing past node 12.
	torn := tree6
	for _, i := range []int{7, 11} {
		torn = withRecord(torn, i, record(tree8, i))
	}
	require.NoError(t, os.WriteFile(filepath.Join(dir, "header"), header, 0o600))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "tree"), torn, 0o600))
	f := openFeed(t, dir, nil)
	require.Equal(t, uint64(6), f.Len())
	require.NoError(t, f.Verify(context.Background()))
	for _, i := range []int{7, 11} {
		require.Equal(t, make([]byte, feed.NodeRecordSize), record(read("tree"), i), "node %d past the head was not cleared", i)
	}
	_, err = f.Append(block(6))
	require.NoError(t, err)
	require.NoError(t, f.Verify(context.Background()))
}

// record returns node i's record in tree, zeros past its end.
func record(tree []byte, i int) []byte {
	rec := make([]byte, feed.NodeRecordSize)
	if at := i * feed.NodeRecordSize; at < len(tree) {
		copy(rec, tree[at:])
	}
	return rec
}

// withRecord returns a copy of tree with rec as node i's record.
func withRecord(tree []byte, i int, rec []byte) []byte {
	tree = bytes.Clone(tree)
	if end := (i + 1) * feed.NodeRecordSize; len(tree) < end {
		tree = append(tree, make([]byte, end-len(tree))...)
	}
	copy(tree[i*feed.NodeRecordSize:], rec)
	return tree
}

// putRecords writes into the tree file of dir the records that recs gives
// for node indices.
func putRecords(t *testing.T, dir string, recs map[int][]byte) {
	t.Helper()
	name := filepath.Join(dir, "tree")
	tree, err := os.ReadFile(name)
	require.NoError(t, err)
	for i, rec := range recs {
		tree = withRecord(tree, i, rec)
	}
	require.NoError(t, os.WriteFile(name, tree, 0o600))
}

// A replica's write that does not finish can leave nodes of blocks it does
// not hold: whole ones without their sibling or parent, and torn ones.
// Verify passes them (it used to fail on them), the replica builds on none
// of them (building on a whole one without its sibling used to leave it
// unable to place the block), and it still finds a node that contradicts
// its children.
func TestReplicaLeftoverNodes(t *testing.T) {
	wdir := t.TempDir()
	w := openFeed(t, wdir, nil)
	appendN(t, w, 0, 16)
	wtree, err := os.ReadFile(filepath.Join(wdir, "tree"))
	require.NoError(t, err)
	dir := t.TempDir()
	r, err := feed.Open(dir, &feed.Options{Key: w.Key()})
	require.NoError(t, err)
	require.NoError(t, applyBlock(t, w, r, 0))
	require.NoError(t, r.Close())
	clean, err := os.ReadFile(filepath.Join(dir, "tree"))
	require.NoError(t, err)

	torn := slices.Concat(record(wtree, 20)[:feed.NodeRecordSize/2], make([]byte, feed.NodeRecordSize/2))
	putRecords(t, dir, map[int][]byte{
		18: record(wtree, 18), // leaf 9, without its sibling
		17: record(wtree, 17), // and their parent, without its own
		20: torn,              // leaf 10, written in part
	})
	r = openFeed(t, dir, &feed.Options{Key: w.Key()})
	require.NoError(t, r.Verify(context.Background()))
	for _, i := range []uint64{9, 10, 8, 11} {
		require.NoError(t, applyBlock(t, w, r, i), "block %d", i)
	}
	require.NoError(t, r.Verify(context.Background()))
	for _, i := range []uint64{0, 8, 9, 10, 11} {
		b, err := r.Get(context.Background(), i)
		require.NoError(t, err)
		require.Equal(t, block(int(i)), b)
	}
	require.NoError(t, r.Close())

	require.NoError(t, os.WriteFile(filepath.Join(dir, "tree"), clean, 0o600))
	putRecords(t, dir, map[int][]byte{
		16: record(wtree, 16), // leaves 8 and 9, whole
		18: record(wtree, 18),
		17: record(wtree, 21), // and node 21 where their parent belongs
	})
	r = openFeed(t, dir, &feed.Options{Key: w.Key()})
	err = r.Verify(context.Background())
	require.ErrorIs(t, err, feed.ErrCorrupt)
	require.ErrorContains(t, err, "node 17 does not match its children")
}

// A truncation that fails after its header was written puts the old head
// back; it used to publish the new head and fail.
func TestFailedTruncateLeavesFeedAsItWas(t *testing.T) { forModes(t, testFailedTruncate) }

func testFailedTruncate(t *testing.T, syncMode bool) {
	m := faultfs.NewMem()
	fsys := faultfs.Wrap(m)
	w := openFeed(t, "/w", &feed.Options{FS: fsys, Sync: syncMode})
	appendN(t, w, 0, 14)
	head := w.Head()
	// Truncating to 11 clears node 21 (blocks 10-11), which is the first
	// write to the tree file after the header.
	fsys.SetRule(treeWrite(func(n int, _ faultfs.Call) bool { return n == 1 }, eio))
	requireDiskError(t, w.Truncate(11))
	fsys.SetRule(nil)
	require.Equal(t, head, w.Head(), "the failed truncation took effect")
	require.NoError(t, w.Verify(context.Background()))
	b, err := w.Get(context.Background(), 12)
	require.NoError(t, err)
	require.Equal(t, block(12), b)

	g, err := feed.Open("/w", &feed.Options{FS: m.Snapshot(), Sync: syncMode})
	require.NoError(t, err)
	require.Equal(t, head, g.Head(), "the failed truncation reached the disk")
	require.NoError(t, g.Verify(context.Background()))
	require.NoError(t, g.Close())

	require.NoError(t, w.Truncate(11))
	require.Equal(t, uint64(11), w.Len())
	require.Equal(t, head.Fork+1, w.Fork())
	require.NoError(t, w.Verify(context.Background()))
}

// A store whose bitfield write (or, in sync mode, fsync) fails leaves the
// blocks' bits clear, and the bits of blocks held before set; it used to
// leave the new bits set, so that Has claimed blocks a reopen forgot.
func TestFailedStoreLeavesBitsClear(t *testing.T) { forModes(t, testFailedStoreBits) }

func testFailedStoreBits(t *testing.T, syncMode bool) {
	w := openFeed(t, t.TempDir(), nil)
	appendN(t, w, 0, 8)
	m := faultfs.NewMem()
	fsys := faultfs.Wrap(m)
	r := openFeed(t, "/r", &feed.Options{Key: w.Key(), FS: fsys, Sync: syncMode})
	require.NoError(t, applyBlock(t, w, r, 2))
	op := faultfs.OpWrite
	if syncMode {
		op = faultfs.OpSync
	}
	fsys.SetRule(faultfs.Match(func(c faultfs.Call) bool {
		return c.Op == op && strings.HasSuffix(c.Path, "/bitfield")
	}, faultfs.Errno(syscall.EIO)))
	requireDiskError(t, applyBatch(t, w, r, 2, 6))
	fsys.SetRule(nil)
	require.True(t, r.Has(2))
	for i := uint64(3); i < 6; i++ {
		require.False(t, r.Has(i), "block %d", i)
	}
	require.Equal(t, uint64(1), r.Downloaded())
	err := applyBatch(t, w, r, 3, 6)
	if syncMode {
		// A failed fsync leaves the state on disk unknown until reopened.
		require.ErrorIs(t, err, feed.ErrFailed)
		require.ErrorIs(t, r.Close(), syscall.EIO, "Close reports the commit that failed")
		r = openFeed(t, "/r", &feed.Options{Key: w.Key(), FS: m, Sync: syncMode})
		require.True(t, r.Has(2))
	} else {
		require.NoError(t, err)
	}
	require.NoError(t, r.Verify(context.Background()))
}

// A read that the disk fails is its error, not ErrCorrupt, which would tell
// the caller to discard a sound feed.
func TestReadErrorsAreNotCorrupt(t *testing.T) {
	w := openFeed(t, t.TempDir(), nil)
	appendN(t, w, 0, 20)
	wbase := faultfs.NewMem()
	wf, err := feed.Open("/w", &feed.Options{FS: wbase})
	require.NoError(t, err)
	appendN(t, wf, 0, 20)
	require.NoError(t, wf.Close())
	rbase := faultfs.NewMem()
	rf, err := feed.Open("/r", &feed.Options{Key: w.Key(), FS: rbase})
	require.NoError(t, err)
	for i := range uint64(10) {
		require.NoError(t, applyBlock(t, w, rf, i))
	}
	require.NoError(t, rf.Close())

	ctx := context.Background()
	type call struct {
		name string
		do   func(f *feed.Feed) error
	}
	writer := []call{
		{"Get", func(f *feed.Feed) error { _, err := f.Get(ctx, 3); return err }},
		{"Verify", func(f *feed.Feed) error { return f.Verify(ctx) }},
		{"Prove", func(f *feed.Feed) error {
			_, _, err := f.Prove(feed.Request{Block: &feed.BlockRequest{Index: 3, Nodes: 64}, Upgrade: true})
			return err
		}},
		{"Truncate", func(f *feed.Feed) error { return f.Truncate(15) }},
	}
	replica := append(slices.Clone(writer[:3]), call{"ApplyProof", func(f *feed.Feed) error { return applyBlock(t, w, f, 15) }})
	for _, c := range []struct {
		dir   string
		base  *faultfs.Mem
		opts  feed.Options
		calls []call
	}{{"/w", wbase, feed.Options{}, writer}, {"/r", rbase, feed.Options{Key: w.Key()}, replica}} {
		for _, file := range []string{"header", "tree", "data", "index", "bitfield"} {
			unreadable := faultfs.Match(func(call faultfs.Call) bool {
				return call.Op == faultfs.OpRead && strings.HasSuffix(call.Path, "/"+file)
			}, faultfs.Errno(syscall.EIO))
			fsys := faultfs.Wrap(c.base.Snapshot())
			fsys.SetRule(unreadable)
			o := c.opts
			o.FS = fsys
			if f, err := feed.Open(c.dir, &o); err == nil {
				require.NoError(t, f.Close())
			} else {
				requireDiskError(t, err, "%s: Open with %s unreadable", c.dir, file)
			}
			for _, call := range c.calls {
				fsys := faultfs.Wrap(c.base.Snapshot())
				o.FS = fsys
				f, err := feed.Open(c.dir, &o)
				require.NoError(t, err)
				fsys.SetRule(unreadable)
				if err := call.do(f); err != nil {
					requireDiskError(t, err, "%s: %s with %s unreadable", c.dir, call.name, file)
				}
				require.NoError(t, f.Close())
			}
		}
	}
}

// Open refuses a feed stored in another format version, with ErrVersion:
// it is not damaged.
func TestOpenRefusesOtherVersions(t *testing.T) {
	dir := t.TempDir()
	f, err := feed.Open(dir, nil)
	require.NoError(t, err)
	appendN(t, f, 0, 3)
	require.NoError(t, f.Close())
	name := filepath.Join(dir, "header")
	h, err := os.ReadFile(name)
	require.NoError(t, err)
	for slot := 0; slot < len(h); slot += 512 {
		s := h[slot : slot+512]
		binary.LittleEndian.PutUint32(s[8:], 2)
		binary.LittleEndian.PutUint32(s[508:], crc32.Checksum(s[:508], crc32.MakeTable(crc32.Castagnoli)))
	}
	require.NoError(t, os.WriteFile(name, h, 0o600))
	_, err = feed.Open(dir, nil)
	require.ErrorIs(t, err, feed.ErrVersion)
	require.NotErrorIs(t, err, feed.ErrCorrupt)
}
