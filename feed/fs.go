package feed

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
)

// File is the part of *os.File a feed uses.
type File interface {
	io.ReaderAt
	io.WriterAt
	Truncate(size int64) error
	Sync() error
	Stat() (os.FileInfo, error)
	Close() error
}

// FS is where a feed keeps its files. The default is the operating system's;
// tests substitute file systems that fail or lose unsynced writes on purpose.
type FS interface {
	MkdirAll(dir string, perm os.FileMode) error
	// OpenFile opens a file as os.OpenFile does.
	OpenFile(name string, flag int, perm os.FileMode) (File, error)
	// ReadDir lists a directory as os.ReadDir does.
	ReadDir(dir string) ([]os.DirEntry, error)
}

// OSFS is the operating system's file system.
type OSFS struct{}

// MkdirAll calls os.MkdirAll.
func (OSFS) MkdirAll(dir string, perm os.FileMode) error { return os.MkdirAll(dir, perm) }

// OpenFile calls os.OpenFile.
func (OSFS) OpenFile(name string, flag int, perm os.FileMode) (File, error) {
	f, err := os.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err // a typed nil *os.File would not compare equal to nil
	}
	return f, nil
}

// ReadDir calls os.ReadDir.
func (OSFS) ReadDir(dir string) ([]os.DirEntry, error) { return os.ReadDir(dir) }

func fileSize(f File) (int64, error) {
	fi, err := f.Stat()
	if err != nil {
		return 0, err
	}
	return fi.Size(), nil
}

// readSmallFile reads a whole file of at most max bytes. A missing file is
// (nil, nil).
func readSmallFile(fsys FS, name string, max int) ([]byte, error) {
	fl, err := fsys.OpenFile(name, os.O_RDONLY, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer fl.Close()
	b := make([]byte, max+1)
	n, err := fl.ReadAt(b, 0)
	if err != nil && err != io.EOF {
		return nil, err
	}
	if n > max {
		return nil, fmt.Errorf("%w: %s is over %d bytes", ErrCorrupt, name, max)
	}
	return b[:n], nil
}

// writeSmallFile writes a whole file and syncs it.
func writeSmallFile(fsys FS, name string, data []byte) error {
	fl, err := fsys.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = fl.WriteAt(data, 0)
	if err == nil {
		err = fl.Sync()
	}
	return errors.Join(err, fl.Close())
}

// readFull reads len(b) bytes at off. A file that ends first is damage:
// the feed reads only what its header says was written.
func readFull(f File, b []byte, off int64) error {
	n, err := f.ReadAt(b, off)
	if n == len(b) {
		return nil
	}
	if err == io.EOF || err == nil {
		return fmt.Errorf("%w: the file ends %d bytes short", ErrCorrupt, len(b)-n)
	}
	return err
}
