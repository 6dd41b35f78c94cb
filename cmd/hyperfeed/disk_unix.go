//go:build unix

package main

import (
	"os"
	"syscall"
)

// allocated returns the bytes a file occupies on disk.
func allocated(st os.FileInfo) int64 {
	if s, ok := st.Sys().(*syscall.Stat_t); ok {
		return int64(s.Blocks) * 512 // st_blocks counts 512-byte units everywhere
	}
	return st.Size()
}
