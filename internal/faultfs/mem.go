// Package faultfs provides file systems for feed.Options.FS that fail on
// purpose: Mem, in memory, which can lose power (dropping what was not
// synced, in the manner of pebble's vfs.NewCrashableMem) and run out of
// space; and FS, which wraps any feed.FS and injects errors by rule.
//
// # Power loss
//
// Mem keeps two states of every file: what a reader sees now (the page
// cache), and what would survive the machine losing power (what the last
// Sync made durable). Crash returns a new Mem holding the second, plus a
// random part of the writes made since the last Sync: each 512-byte sector
// of each such write survives or not on its own, as a disk that writes
// sectors atomically but in no particular order would leave it. Snapshot
// returns the first, which is what a process killed with SIGKILL leaves
// behind (the operating system still has its writes).
//
// A file that was never synced does not survive a power loss at all, as if
// its directory entry had not reached the disk. Directories always do:
// feed.FS has no way to sync one, so the feed cannot be asked to.
//
// CrashOrdered is a gentler power loss, closer to what a page cache does:
// each 4 KiB page of a file holds the writes made to it since the last
// Sync up to some moment (the moment it was written back), the same for
// every byte of the page, and the file's size is its size at some moment
// of its own. Writes to one page are never reordered; writes to different
// pages, and a size that grew, may land in any order.
//
// PowerOffAfter stops the machine after a number of writes, truncations
// and syncs: every later call fails with ErrPowerOff, so that a test can
// stop a workload at any point of its I/O, and then Crash.
package faultfs

import (
	"errors"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hyperfeed/hyperfeed/feed"
)

// ErrPowerOff is what every call fails with once a Mem has lost power.
var ErrPowerOff = errors.New("faultfs: power is off")

// Sector is the unit a Crash keeps or drops of a write that was not synced.
const Sector = 512

// Page is the unit CrashOrdered writes back.
const Page = 4096

// Mem is an in-memory file system. Its methods and its files' methods are
// safe for concurrent use.
type Mem struct {
	mu       sync.Mutex
	files    map[string]*memFile
	dirs     map[string]bool
	capacity int64 // 0: unlimited
	used     int64 // bytes in all files, as readers see them
	budget   int64 // mutating calls left before the power goes off; <0: no limit
	off      bool
	noCrash  bool // keep no history of unsynced writes (SetNoCrash)
	stats    MemStats
}

// MemStats count a Mem's mutating calls.
type MemStats struct {
	Writes, Truncates, Syncs int
	Bytes                    int64 // bytes written
	NoSpace                  int   // writes and truncations refused for space
}

// memFile is one file: what readers see, and what survives power loss.
type memFile struct {
	data    []byte
	synced  []byte
	durable bool      // synced at least once: the file survives power loss
	log     []memOp   // changes since the last sync, in order
	mtime   time.Time // for Stat only
}

// memOp is a write or truncation not yet synced.
type memOp struct {
	truncate bool
	off      int64 // a write's offset, or a truncation's size
	data     []byte
}

// NewMem returns an empty file system, with "/" and "." as directories.
func NewMem() *Mem {
	return &Mem{files: map[string]*memFile{}, dirs: map[string]bool{"/": true, ".": true}, budget: -1}
}

var _ feed.FS = (*Mem)(nil)

// SetCapacity bounds the bytes all files may hold (0: no bound). A write
// that would pass it writes what fits and fails with ENOSPC.
func (m *Mem) SetCapacity(n int64) {
	m.mu.Lock()
	m.capacity = n
	m.mu.Unlock()
}

// SetNoCrash declares that m will not be crashed: it stops keeping what
// was written since each file's last sync, which halves the memory a
// file costs (its durable copy) and more for files never synced. Crash
// then panics. For tests that need memory, not power loss.
func (m *Mem) SetNoCrash() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.noCrash = true
	for _, f := range m.files {
		f.synced, f.log, f.durable = nil, nil, true
	}
}

// Used returns the bytes all files hold.
func (m *Mem) Used() int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.used
}

// Stats returns what the Mem has done.
func (m *Mem) Stats() MemStats {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.stats
}

// PowerOffAfter lets n more writes, truncations and syncs through; every
// call after them fails with ErrPowerOff. n < 0 removes the limit.
func (m *Mem) PowerOffAfter(n int64) {
	m.mu.Lock()
	m.budget = n
	m.off = n == 0
	m.mu.Unlock()
}

// PowerOff makes every call from now on fail with ErrPowerOff.
func (m *Mem) PowerOff() { m.PowerOffAfter(0) }

// mutate counts a mutating call against the power budget and reports
// whether it may run. The caller holds m.mu.
func (m *Mem) mutate() bool {
	if m.off {
		return false
	}
	if m.budget > 0 {
		m.budget--
		if m.budget == 0 {
			m.off = true // this call is the last
		}
	}
	return true
}

// Snapshot returns a copy of the file system as readers see it now: what a
// process killed at this moment leaves on a machine that keeps running.
func (m *Mem) Snapshot() *Mem {
	m.mu.Lock()
	defer m.mu.Unlock()
	c := NewMem()
	maps(c, m)
	for name, f := range m.files {
		c.putSynced(name, slices.Clone(f.data))
	}
	return c
}

// Crash returns the file system as a power loss now would leave it: each
// file as its last Sync left it, with each sector of each later write kept
// with probability keep (0: none, as in pebble's crashable file system),
// and each later truncation likewise. Files never synced are gone.
func (m *Mem) Crash(rng *rand.Rand, keep float64) *Mem {
	kept := func() bool { return keep >= 1 || keep > 0 && rng.Float64() < keep }
	return m.crash(func(f *memFile) []byte {
		d := slices.Clone(f.synced)
		for _, op := range f.log {
			if op.truncate {
				if kept() {
					d = resize(d, op.off)
				}
				continue
			}
			// Each sector of the write on its own.
			for at := op.off; at < op.off+int64(len(op.data)); {
				end := min((at/Sector+1)*Sector, op.off+int64(len(op.data)))
				if kept() {
					d = writeAt(d, op.data[at-op.off:end-op.off], at)
				}
				at = end
			}
		}
		return d
	})
}

// CrashOrdered returns the file system as a power loss now would leave it
// under the page cache's model (see the package comment): each page of
// each file as its last Sync left it plus a prefix, chosen at random, of
// the writes to it since; the file's size likewise. Files never synced are
// gone.
func (m *Mem) CrashOrdered(rng *rand.Rand) *Mem {
	return m.crash(func(f *memFile) []byte {
		// The size after each prefix of the log, and the largest.
		sizes := []int64{int64(len(f.synced))}
		largest := sizes[0]
		for _, op := range f.log {
			size := sizes[len(sizes)-1]
			if op.truncate {
				size = op.off
			} else {
				size = max(size, op.off+int64(len(op.data)))
			}
			sizes = append(sizes, size)
			largest = max(largest, size)
		}
		d := resize(slices.Clone(f.synced), largest)
		for p := int64(0); p < largest; p += Page {
			end := min(p+Page, largest)
			page := d[p:end]
			// The page as the first k writes left it.
			k := rng.IntN(len(f.log) + 1)
			for _, op := range f.log[:k] {
				if op.truncate {
					// Bytes past the new size read as zeros if the file
					// grows again.
					if op.off < end {
						clear(page[max(op.off, p)-p:])
					}
					continue
				}
				lo, hi := max(op.off, p), min(op.off+int64(len(op.data)), end)
				if lo < hi {
					copy(page[lo-p:hi-p], op.data[lo-op.off:hi-op.off])
				}
			}
		}
		return d[:sizes[rng.IntN(len(sizes))]]
	})
}

// crash returns the file system as a power loss now would leave it, each
// file holding what survive says of it. Files never synced are gone.
func (m *Mem) crash(survive func(f *memFile) []byte) *Mem {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.noCrash {
		panic("faultfs: Crash of a Mem set not to crash")
	}
	c := NewMem()
	maps(c, m)
	for name, f := range m.files {
		if f.durable {
			c.putSynced(name, survive(f))
		}
	}
	return c
}

// putSynced adds a file that holds d, all of it synced.
func (m *Mem) putSynced(name string, d []byte) {
	m.files[name] = &memFile{data: d, synced: slices.Clone(d), durable: true}
	m.used += int64(len(d))
}

func maps(dst, src *Mem) {
	for d := range src.dirs {
		dst.dirs[d] = true
	}
}

func resize(d []byte, size int64) []byte {
	if int64(len(d)) >= size {
		return d[:size]
	}
	return append(d, make([]byte, size-int64(len(d)))...)
}

func writeAt(d, p []byte, off int64) []byte {
	if end := off + int64(len(p)); end > int64(len(d)) {
		d = resize(d, end)
	}
	copy(d[off:], p)
	return d
}

func clean(name string) string { return filepath.Clean(name) }

// MkdirAll creates dir and its parents.
func (m *Mem) MkdirAll(dir string, perm os.FileMode) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.off {
		return &fs.PathError{Op: "mkdir", Path: dir, Err: ErrPowerOff}
	}
	for d := clean(dir); !m.dirs[d]; d = filepath.Dir(d) {
		if _, isFile := m.files[d]; isFile {
			return &fs.PathError{Op: "mkdir", Path: dir, Err: syscall.ENOTDIR}
		}
		m.dirs[d] = true
	}
	return nil
}

// OpenFile opens a file: O_CREATE, O_EXCL, O_TRUNC and the access mode are
// honoured; its directory must exist.
func (m *Mem) OpenFile(name string, flag int, perm os.FileMode) (feed.File, error) {
	name = clean(name)
	m.mu.Lock()
	defer m.mu.Unlock()
	fail := func(err error) (feed.File, error) { return nil, &fs.PathError{Op: "open", Path: name, Err: err} }
	if m.off {
		return fail(ErrPowerOff)
	}
	if m.dirs[name] {
		return fail(syscall.EISDIR)
	}
	if !m.dirs[filepath.Dir(name)] {
		return fail(fs.ErrNotExist)
	}
	f, ok := m.files[name]
	switch {
	case !ok && flag&os.O_CREATE == 0:
		return fail(fs.ErrNotExist)
	case ok && flag&os.O_CREATE != 0 && flag&os.O_EXCL != 0:
		return fail(fs.ErrExist)
	case !ok:
		f = &memFile{mtime: time.Now(), durable: m.noCrash}
		m.files[name] = f
	}
	writable := flag&(os.O_WRONLY|os.O_RDWR) != 0
	if flag&os.O_TRUNC != 0 && writable && len(f.data) > 0 {
		if !m.mutate() {
			return fail(ErrPowerOff)
		}
		m.truncateLocked(f, 0)
	}
	return &memHandle{m: m, f: f, name: name, readable: flag&os.O_WRONLY == 0, writable: writable}, nil
}

// ReadDir lists a directory, sorted by name.
func (m *Mem) ReadDir(dir string) ([]os.DirEntry, error) {
	dir = clean(dir)
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.off {
		return nil, &fs.PathError{Op: "readdir", Path: dir, Err: ErrPowerOff}
	}
	if !m.dirs[dir] {
		return nil, &fs.PathError{Op: "readdir", Path: dir, Err: fs.ErrNotExist}
	}
	var out []os.DirEntry
	for d := range m.dirs {
		if d != dir && filepath.Dir(d) == dir {
			out = append(out, fs.FileInfoToDirEntry(info{name: filepath.Base(d), dir: true}))
		}
	}
	for name, f := range m.files {
		if filepath.Dir(name) == dir {
			out = append(out, fs.FileInfoToDirEntry(info{name: filepath.Base(name), size: int64(len(f.data)), mtime: f.mtime}))
		}
	}
	slices.SortFunc(out, func(a, b os.DirEntry) int { return strings.Compare(a.Name(), b.Name()) })
	return out, nil
}

// Files returns the names of every file, sorted.
func (m *Mem) Files() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []string
	for name := range m.files {
		out = append(out, name)
	}
	slices.Sort(out)
	return out
}

// ReadFile returns a copy of a file's contents as readers see them.
func (m *Mem) ReadFile(name string) ([]byte, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	f, ok := m.files[clean(name)]
	if !ok {
		return nil, false
	}
	return slices.Clone(f.data), true
}

// WriteFile replaces a file's contents, durably, bypassing every fault:
// for tests that damage files on purpose.
func (m *Mem) WriteFile(name string, data []byte) {
	name = clean(name)
	m.mu.Lock()
	defer m.mu.Unlock()
	m.dirs[filepath.Dir(name)] = true
	f, ok := m.files[name]
	if !ok {
		f = &memFile{}
		m.files[name] = f
	}
	m.used += int64(len(data)) - int64(len(f.data))
	f.data, f.synced, f.durable, f.log = slices.Clone(data), slices.Clone(data), true, nil
}

func (m *Mem) truncateLocked(f *memFile, size int64) {
	m.used += size - int64(len(f.data))
	f.data = resize(f.data, size)
	if !m.noCrash {
		f.log = append(f.log, memOp{truncate: true, off: size})
	}
	f.mtime = time.Now()
}

// memHandle is an open file.
type memHandle struct {
	m                  *Mem
	f                  *memFile
	name               string
	readable, writable bool
	closed             bool // under m.mu
}

func (h *memHandle) err(op string, err error) error {
	return &fs.PathError{Op: op, Path: h.name, Err: err}
}

// check returns why a call cannot run. The caller holds h.m.mu.
func (h *memHandle) check(op string, write bool) error {
	switch {
	case h.closed:
		return h.err(op, fs.ErrClosed)
	case h.m.off:
		return h.err(op, ErrPowerOff)
	case write && !h.writable, !write && op == "read" && !h.readable:
		return h.err(op, syscall.EBADF)
	}
	return nil
}

func (h *memHandle) ReadAt(p []byte, off int64) (int, error) {
	h.m.mu.Lock()
	defer h.m.mu.Unlock()
	if err := h.check("read", false); err != nil {
		return 0, err
	}
	if off < 0 {
		return 0, h.err("read", syscall.EINVAL)
	}
	if off >= int64(len(h.f.data)) {
		return 0, io.EOF
	}
	n := copy(p, h.f.data[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (h *memHandle) WriteAt(p []byte, off int64) (int, error) {
	m := h.m
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := h.check("write", true); err != nil {
		return 0, err
	}
	if off < 0 {
		return 0, h.err("write", syscall.EINVAL)
	}
	if !m.mutate() {
		return 0, h.err("write", ErrPowerOff)
	}
	m.stats.Writes++
	n := len(p)
	var err error
	if grow := off + int64(n) - int64(len(h.f.data)); grow > 0 && m.capacity > 0 && m.used+grow > m.capacity {
		// Write what fits, then fail, as a full disk does.
		fits := int64(len(h.f.data)) + (m.capacity - m.used) - off
		n = int(max(0, min(fits, int64(n))))
		err = h.err("write", syscall.ENOSPC)
		m.stats.NoSpace++
	}
	if n > 0 {
		before := int64(len(h.f.data))
		h.f.data = writeAt(h.f.data, p[:n], off)
		m.used += int64(len(h.f.data)) - before
		if !m.noCrash {
			h.f.log = append(h.f.log, memOp{off: off, data: slices.Clone(p[:n])})
		}
		h.f.mtime = time.Now()
		m.stats.Bytes += int64(n)
	}
	return n, err
}

func (h *memHandle) Truncate(size int64) error {
	m := h.m
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := h.check("truncate", true); err != nil {
		return err
	}
	if size < 0 {
		return h.err("truncate", syscall.EINVAL)
	}
	if !m.mutate() {
		return h.err("truncate", ErrPowerOff)
	}
	m.stats.Truncates++
	if grow := size - int64(len(h.f.data)); grow > 0 && m.capacity > 0 && m.used+grow > m.capacity {
		m.stats.NoSpace++
		return h.err("truncate", syscall.ENOSPC)
	}
	m.truncateLocked(h.f, size)
	return nil
}

func (h *memHandle) Sync() error {
	m := h.m
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := h.check("sync", false); err != nil {
		return err
	}
	if !m.mutate() {
		return h.err("sync", ErrPowerOff)
	}
	m.stats.Syncs++
	f := h.f
	for _, op := range f.log {
		if op.truncate {
			f.synced = resize(f.synced, op.off)
		} else {
			f.synced = writeAt(f.synced, op.data, op.off)
		}
	}
	f.log, f.durable = nil, true
	return nil
}

func (h *memHandle) Stat() (os.FileInfo, error) {
	h.m.mu.Lock()
	defer h.m.mu.Unlock()
	if err := h.check("stat", false); err != nil {
		return nil, err
	}
	return info{name: filepath.Base(h.name), size: int64(len(h.f.data)), mtime: h.f.mtime}, nil
}

func (h *memHandle) Close() error {
	h.m.mu.Lock()
	defer h.m.mu.Unlock()
	if h.closed {
		return h.err("close", fs.ErrClosed)
	}
	h.closed = true
	return nil
}

// info describes a file or directory of a Mem.
type info struct {
	name  string
	size  int64
	dir   bool
	mtime time.Time
}

func (i info) Name() string { return i.name }
func (i info) Size() int64  { return i.size }
func (i info) Mode() os.FileMode {
	if i.dir {
		return fs.ModeDir | 0o700
	}
	return 0o600
}
func (i info) ModTime() time.Time { return i.mtime }
func (i info) IsDir() bool        { return i.dir }
func (i info) Sys() any           { return nil }
