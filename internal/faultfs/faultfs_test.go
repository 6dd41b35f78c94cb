package faultfs

import (
	"bytes"
	"context"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/hyperfeed/hyperfeed/feed"
	"github.com/stretchr/testify/require"
)

func create(t *testing.T, m feed.FS, name string) feed.File {
	t.Helper()
	require.NoError(t, m.MkdirAll(filepath.Dir(name), 0o700))
	f, err := m.OpenFile(name, os.O_RDWR|os.O_CREATE, 0o600)
	require.NoError(t, err)
	return f
}

func write(t *testing.T, f feed.File, off int64, p []byte) {
	t.Helper()
	n, err := f.WriteAt(p, off)
	require.NoError(t, err)
	require.Equal(t, len(p), n)
}

func contents(t *testing.T, m *Mem, name string) []byte {
	t.Helper()
	b, ok := m.ReadFile(name)
	require.True(t, ok, "%s is missing", name)
	return b
}

func TestMemFiles(t *testing.T) {
	m := NewMem()
	_, err := m.OpenFile("/d/x", os.O_RDWR|os.O_CREATE, 0o600)
	require.ErrorIs(t, err, fs.ErrNotExist, "the directory does not exist")
	f := create(t, m, "/d/x")
	write(t, f, 3, []byte("abc"))
	fi, err := f.Stat()
	require.NoError(t, err)
	require.Equal(t, int64(6), fi.Size())
	b := make([]byte, 10)
	n, err := f.ReadAt(b, 0)
	require.Equal(t, io.EOF, err)
	require.Equal(t, []byte{0, 0, 0, 'a', 'b', 'c'}, b[:n])
	require.NoError(t, f.Truncate(4))
	require.Equal(t, []byte{0, 0, 0, 'a'}, contents(t, m, "/d/x"))
	require.Equal(t, int64(4), m.Used())

	_, err = m.OpenFile("/d/x", os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	require.ErrorIs(t, err, fs.ErrExist)
	ro, err := m.OpenFile("/d/x", os.O_RDONLY, 0)
	require.NoError(t, err)
	_, err = ro.WriteAt([]byte("x"), 0)
	require.ErrorIs(t, err, syscall.EBADF)
	tr, err := m.OpenFile("/d/x", os.O_RDWR|os.O_TRUNC, 0)
	require.NoError(t, err)
	fi, err = tr.Stat()
	require.NoError(t, err)
	require.Zero(t, fi.Size())

	require.NoError(t, m.MkdirAll("/d/sub/deeper", 0o700))
	ents, err := m.ReadDir("/d")
	require.NoError(t, err)
	require.Len(t, ents, 2)
	require.Equal(t, "sub", ents[0].Name())
	require.True(t, ents[0].IsDir())
	require.Equal(t, "x", ents[1].Name())
	require.NoError(t, f.Close())
	_, err = f.ReadAt(b, 0)
	require.ErrorIs(t, err, fs.ErrClosed)
}

// TestMemCrash: a power loss keeps what was synced, drops what was not (or
// keeps part of it, sector by sector), and loses files never synced.
func TestMemCrash(t *testing.T) {
	m := NewMem()
	f := create(t, m, "/d/f")
	write(t, f, 0, bytes.Repeat([]byte{1}, 2*Sector))
	require.NoError(t, f.Sync())
	write(t, f, 0, bytes.Repeat([]byte{2}, 8*Sector)) // unsynced: overwrites and grows
	g := create(t, m, "/d/never-synced")
	write(t, g, 0, []byte("lost"))

	c := m.Crash(rand.New(rand.NewPCG(1, 1)), 0)
	require.Equal(t, bytes.Repeat([]byte{1}, 2*Sector), contents(t, c, "/d/f"))
	_, ok := c.ReadFile("/d/never-synced")
	require.False(t, ok)
	require.Equal(t, []string{filepath.Clean("/d/f")}, c.Files())

	all := m.Crash(nil, 1)
	require.Equal(t, contents(t, m, "/d/f"), contents(t, all, "/d/f"), "keep=1 keeps every write")

	// keep=0.5: each sector is old or new, and over many crashes both happen.
	seen := map[byte]int{}
	rng := rand.New(rand.NewPCG(2, 2))
	for range 20 {
		d := contents(t, m.Crash(rng, 0.5), "/d/f")
		for s := 0; s < len(d); s += Sector {
			sec := d[s:min(len(d), s+Sector)]
			require.Equal(t, bytes.Repeat(sec[:1], len(sec)), sec, "a sector is torn")
			seen[sec[0]]++
		}
	}
	require.NotZero(t, seen[1])
	require.NotZero(t, seen[2])

	// The original is untouched and still works; the snapshot has it all.
	write(t, f, 0, []byte{3})
	require.Equal(t, byte(3), contents(t, m.Snapshot(), "/d/f")[0])
	require.Equal(t, byte(2), contents(t, all, "/d/f")[0])
}

// TestMemCrashOrdered: under the page cache's model, a page holds a prefix
// of the writes made to it, never a later write without an earlier one,
// and the size is one the file had.
func TestMemCrashOrdered(t *testing.T) {
	m := NewMem()
	f := create(t, m, "/f")
	write(t, f, 0, bytes.Repeat([]byte{1}, 2*Page))
	require.NoError(t, f.Sync())
	// Three writes to page 0 in order, one to page 1, then growth.
	for v := byte(2); v <= 4; v++ {
		write(t, f, 0, bytes.Repeat([]byte{v}, 100))
	}
	write(t, f, Page, []byte{9})
	write(t, f, 3*Page, []byte{7})
	sizes := map[int]int{}
	firsts := map[byte]int{}
	rng := rand.New(rand.NewPCG(5, 5))
	for range 200 {
		d := contents(t, m.CrashOrdered(rng), "/f")
		sizes[len(d)]++
		firsts[d[0]]++
		require.Equal(t, bytes.Repeat(d[:1], 100), d[:100], "a page holds one moment")
		require.Contains(t, []int{2 * Page, 3*Page + 1}, len(d))
	}
	require.Len(t, sizes, 2)
	require.Len(t, firsts, 4, "each prefix of page 0's writes happens")
	// A file truncated and not synced may come back whole.
	require.NoError(t, f.Truncate(10))
	require.NoError(t, f.Sync())
	require.Len(t, contents(t, m.CrashOrdered(rng), "/f"), 10)
}

func TestMemNoCrash(t *testing.T) {
	m := NewMem()
	f := create(t, m, "/f")
	write(t, f, 0, []byte("kept"))
	m.SetNoCrash()
	write(t, f, 4, []byte(" and more"))
	require.Equal(t, "kept and more", string(contents(t, m.Snapshot(), "/f")))
	require.Panics(t, func() { m.Crash(nil, 0) })
}

func TestMemPowerOff(t *testing.T) {
	m := NewMem()
	f := create(t, m, "/f")
	m.PowerOffAfter(3)
	write(t, f, 0, []byte("a"))
	require.NoError(t, f.Sync())
	write(t, f, 1, []byte("b"))
	_, err := f.WriteAt([]byte("c"), 2)
	require.ErrorIs(t, err, ErrPowerOff)
	_, err = f.ReadAt(make([]byte, 1), 0)
	require.ErrorIs(t, err, ErrPowerOff, "reads fail too")
	_, err = m.OpenFile("/g", os.O_RDWR|os.O_CREATE, 0o600)
	require.ErrorIs(t, err, ErrPowerOff)
	require.Equal(t, []byte("a"), contents(t, m.Crash(nil, 0), "/f"))
	require.Equal(t, MemStats{Writes: 2, Syncs: 1, Bytes: 2}, m.Stats())
}

func TestMemCapacity(t *testing.T) {
	m := NewMem()
	m.SetCapacity(100)
	f := create(t, m, "/f")
	write(t, f, 0, make([]byte, 60))
	n, err := f.WriteAt(make([]byte, 60), 50)
	require.ErrorIs(t, err, syscall.ENOSPC)
	require.Equal(t, 50, n, "writes what fits")
	require.Equal(t, int64(100), m.Used())
	write(t, f, 0, make([]byte, 100)) // overwriting takes no space
	require.ErrorIs(t, f.Truncate(101), syscall.ENOSPC)
	require.NoError(t, f.Truncate(10))
	write(t, f, 10, make([]byte, 90))
	require.Equal(t, 2, m.Stats().NoSpace)
}

func TestRules(t *testing.T) {
	eio := Errno(syscall.EIO)
	require.ErrorIs(t, eio, syscall.EIO)
	require.ErrorIs(t, eio, ErrInjected)

	m := NewMem()
	w := Wrap(m)
	f := create(t, w, "/f")
	w.SetRule(Any(Nth(OpWrite, 2, eio), From(OpSync, 2, Errno(syscall.ENOSPC))))
	write(t, f, 0, []byte("one"))
	_, err := f.WriteAt([]byte("two"), 3)
	require.ErrorIs(t, err, syscall.EIO)
	var pe *fs.PathError
	require.ErrorAs(t, err, &pe)
	require.Equal(t, "write", pe.Op)
	write(t, f, 3, []byte("three"))
	require.NoError(t, f.Sync())
	require.ErrorIs(t, f.Sync(), syscall.ENOSPC)
	require.ErrorIs(t, f.Sync(), syscall.ENOSPC)
	require.Equal(t, "onethree", string(contents(t, m, "/f")), "a failed write has no effect")
	require.Equal(t, 3, w.Calls(OpWrite))
	require.Equal(t, 3, w.Injected(0))

	w.SetRule(func(c Call) error {
		if c.Op == OpWrite {
			return &Short{N: 2, Err: Errno(syscall.EIO)}
		}
		return nil
	})
	n, err := f.WriteAt([]byte("xyz"), 0)
	require.ErrorIs(t, err, syscall.EIO)
	require.Equal(t, 2, n)
	require.Equal(t, "xyethree", string(contents(t, m, "/f")))

	w.SetRule(Match(func(c Call) bool { return c.Op == OpRead && filepath.Base(c.Path) == "f" }, eio))
	_, err = f.ReadAt(make([]byte, 1), 0)
	require.ErrorIs(t, err, syscall.EIO)
	w.SetRule(nil)
	_, err = f.ReadAt(make([]byte, 1), 0)
	require.NoError(t, err)
}

// TestWrapKeepsLocks: over the operating system's file system the wrapper
// passes descriptors on, so two opens of one feed still exclude each other.
func TestWrapKeepsLocks(t *testing.T) {
	dir := t.TempDir()
	w := Wrap(feed.OSFS{})
	a, err := feed.Open(dir, &feed.Options{FS: w})
	require.NoError(t, err)
	defer a.Close()
	_, err = feed.Open(dir, &feed.Options{FS: w})
	require.ErrorIs(t, err, feed.ErrLocked)
}

// TestFeedOnMem runs a feed in sync mode on a Mem and cuts the power after
// every acknowledged append: each crash keeps all of them.
func TestFeedOnMem(t *testing.T) {
	m := NewMem()
	f, err := feed.Open("/feed", &feed.Options{FS: m, Sync: true})
	require.NoError(t, err)
	rng := rand.New(rand.NewPCG(3, 3))
	for i := range 20 {
		_, err := f.Append(bytes.Repeat([]byte{byte(i)}, 1+rng.IntN(3000)))
		require.NoError(t, err)
		c := m.Crash(rng, rng.Float64())
		g, err := feed.Open("/feed", &feed.Options{FS: c})
		require.NoError(t, err, "after append %d", i)
		require.Equal(t, f.Head(), g.Head())
		require.NoError(t, g.Verify(context.Background()))
		require.NoError(t, g.Close())
	}
	require.NoError(t, f.Close())
}
