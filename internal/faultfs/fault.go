package faultfs

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sync"
	"syscall"

	"github.com/hyperfeed/hyperfeed/feed"
)

// Op is a kind of file system call.
type Op uint8

// The calls a rule sees.
const (
	OpOpen Op = iota + 1
	OpRead
	OpWrite
	OpTruncate
	OpSync
	OpStat
	OpClose
	OpMkdir
	OpReadDir
	numOps
)

var opNames = [...]string{OpOpen: "open", OpRead: "read", OpWrite: "write", OpTruncate: "truncate",
	OpSync: "sync", OpStat: "stat", OpClose: "close", OpMkdir: "mkdir", OpReadDir: "readdir"}

func (o Op) String() string {
	if o > 0 && o < numOps {
		return opNames[o]
	}
	return fmt.Sprintf("op(%d)", uint8(o))
}

// Call is one file system call, as a rule sees it before it runs.
type Call struct {
	Op   Op
	Path string
	Off  int64 // a read's or write's offset, a truncation's size
	Len  int   // a read's or write's length
}

// A Rule decides the fate of each call: nil lets it run, an error fails it
// without effect, and a *Short error lets a write write part and then fail.
// Rules are called one at a time, so they may keep state without locking.
type Rule func(Call) error

// Short makes a write write its first N bytes and then fail with Err, as a
// device that fails in the middle of a write does.
type Short struct {
	N   int
	Err error
}

func (s *Short) Error() string { return fmt.Sprintf("short write of %d bytes: %v", s.N, s.Err) }
func (s *Short) Unwrap() error { return s.Err }

// ErrInjected marks every error a rule built with Errno returns, so that a
// test tells injected faults from real ones.
var ErrInjected = errors.New("faultfs: injected fault")

// Errno returns an injected error that is both errno (errors.Is(err,
// syscall.EIO)) and ErrInjected.
func Errno(errno syscall.Errno) error { return injected{errno} }

type injected struct{ errno syscall.Errno }

func (e injected) Error() string   { return e.errno.Error() + " (injected)" }
func (e injected) Is(t error) bool { return t == ErrInjected || t == e.errno }
func (e injected) Unwrap() error   { return e.errno }

// Nth fails the nth call of op that the rule sees (from 1), and only it.
func Nth(op Op, n int, err error) Rule {
	seen := 0
	return func(c Call) error {
		if c.Op != op {
			return nil
		}
		seen++
		if seen == n {
			return err
		}
		return nil
	}
}

// From fails every call of op from the nth on.
func From(op Op, n int, err error) Rule {
	seen := 0
	return func(c Call) error {
		if c.Op != op {
			return nil
		}
		seen++
		if seen >= n {
			return err
		}
		return nil
	}
}

// Match fails every call for which match is true.
func Match(match func(Call) bool, err error) Rule {
	return func(c Call) error {
		if match(c) {
			return err
		}
		return nil
	}
}

// Any applies rules in order; the first error wins. Every rule sees every
// call, so that counting rules count alike whatever comes before them.
func Any(rules ...Rule) Rule {
	return func(c Call) error {
		var first error
		for _, r := range rules {
			if err := r(c); err != nil && first == nil {
				first = err
			}
		}
		return first
	}
}

// FS wraps a feed.FS and fails calls as its rule says. It counts every call
// and every fault it injected.
type FS struct {
	base feed.FS

	mu       sync.Mutex
	rule     Rule
	calls    [numOps]int
	injected [numOps]int
}

var _ feed.FS = (*FS)(nil)

// Wrap returns base with no rule: every call goes through, counted.
func Wrap(base feed.FS) *FS { return &FS{base: base} }

// SetRule replaces the rule; nil lets everything through.
func (w *FS) SetRule(r Rule) {
	w.mu.Lock()
	w.rule = r
	w.mu.Unlock()
}

// Calls returns how many calls of op were made (failed or not).
func (w *FS) Calls(op Op) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.calls[op]
}

// Injected returns how many calls the rules failed, of op or (op 0) of any
// kind.
func (w *FS) Injected(op Op) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	if op != 0 {
		return w.injected[op]
	}
	n := 0
	for _, k := range w.injected {
		n += k
	}
	return n
}

// decide counts c and asks the rule about it.
func (w *FS) decide(c Call) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.calls[c.Op]++
	if w.rule == nil {
		return nil
	}
	err := w.rule(c)
	if err != nil {
		w.injected[c.Op]++
	}
	return err
}

func pathErr(c Call, err error) error {
	return &fs.PathError{Op: c.Op.String(), Path: c.Path, Err: err}
}

// MkdirAll calls the base's, unless the rule fails it.
func (w *FS) MkdirAll(dir string, perm os.FileMode) error {
	c := Call{Op: OpMkdir, Path: dir}
	if err := w.decide(c); err != nil {
		return pathErr(c, err)
	}
	return w.base.MkdirAll(dir, perm)
}

// OpenFile calls the base's, unless the rule fails it, and wraps the file.
func (w *FS) OpenFile(name string, flag int, perm os.FileMode) (feed.File, error) {
	c := Call{Op: OpOpen, Path: name}
	if err := w.decide(c); err != nil {
		return nil, pathErr(c, err)
	}
	f, err := w.base.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	wf := &file{w: w, f: f, name: name}
	if fd, ok := f.(interface{ Fd() uintptr }); ok {
		return &osFile{file: wf, fd: fd}, nil
	}
	return wf, nil
}

// ReadDir calls the base's, unless the rule fails it.
func (w *FS) ReadDir(dir string) ([]os.DirEntry, error) {
	c := Call{Op: OpReadDir, Path: dir}
	if err := w.decide(c); err != nil {
		return nil, pathErr(c, err)
	}
	return w.base.ReadDir(dir)
}

// file is a file of an FS.
type file struct {
	w    *FS
	f    feed.File
	name string
}

// osFile is a file of an FS over an operating system file: it passes the
// descriptor on, so that the feed locks the file through the wrapper too.
type osFile struct {
	*file
	fd interface{ Fd() uintptr }
}

func (f *osFile) Fd() uintptr { return f.fd.Fd() }

func (f *file) ReadAt(p []byte, off int64) (int, error) {
	c := Call{Op: OpRead, Path: f.name, Off: off, Len: len(p)}
	if err := f.w.decide(c); err != nil {
		return 0, pathErr(c, err)
	}
	return f.f.ReadAt(p, off)
}

func (f *file) WriteAt(p []byte, off int64) (int, error) {
	c := Call{Op: OpWrite, Path: f.name, Off: off, Len: len(p)}
	err := f.w.decide(c)
	var short *Short
	if errors.As(err, &short) {
		n, werr := f.f.WriteAt(p[:min(max(short.N, 0), len(p))], off)
		if werr != nil {
			return n, werr
		}
		return n, pathErr(c, short.Err)
	}
	if err != nil {
		return 0, pathErr(c, err)
	}
	return f.f.WriteAt(p, off)
}

func (f *file) Truncate(size int64) error {
	c := Call{Op: OpTruncate, Path: f.name, Off: size}
	if err := f.w.decide(c); err != nil {
		return pathErr(c, err)
	}
	return f.f.Truncate(size)
}

func (f *file) Sync() error {
	c := Call{Op: OpSync, Path: f.name}
	if err := f.w.decide(c); err != nil {
		return pathErr(c, err)
	}
	return f.f.Sync()
}

func (f *file) Stat() (os.FileInfo, error) {
	c := Call{Op: OpStat, Path: f.name}
	if err := f.w.decide(c); err != nil {
		return nil, pathErr(c, err)
	}
	return f.f.Stat()
}

func (f *file) Close() error {
	c := Call{Op: OpClose, Path: f.name}
	// The base file is closed whatever the rule says, so that no
	// descriptor leaks; the rule's error is what the caller sees.
	err := f.w.decide(c)
	cerr := f.f.Close()
	if err != nil {
		return pathErr(c, err)
	}
	return cerr
}
