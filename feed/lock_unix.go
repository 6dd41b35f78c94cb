//go:build unix

package feed

import (
	"errors"
	"fmt"
	"syscall"
)

// lockFile takes an exclusive advisory lock on f, when f is an operating
// system file, so that two processes never write one feed.
func lockFile(f File) error {
	fd, ok := f.(interface{ Fd() uintptr })
	if !ok {
		return nil
	}
	err := syscall.Flock(int(fd.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
	if errors.Is(err, syscall.EWOULDBLOCK) {
		return ErrLocked
	}
	if err != nil {
		return fmt.Errorf("feed: lock: %w", err)
	}
	return nil
}
