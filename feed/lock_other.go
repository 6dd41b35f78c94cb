//go:build !unix

package feed

// lockFile does nothing where flock is missing; one process per feed is then
// the caller's duty.
func lockFile(File) error { return nil }
