package feed

import (
	"errors"

	"github.com/hyperfeed/hyperfeed/merkle"
)

// Errors returned by feeds, wrapped with the operation and the detail; match
// them with errors.Is.
var (
	// ErrClosed: the feed or store was closed.
	ErrClosed = errors.New("feed: closed")
	// ErrNotWritable: the feed is a replica (opened without its secret key).
	ErrNotWritable = errors.New("feed: not writable")
	// ErrWritable: the call is for replicas, and this feed is the writer.
	ErrWritable = errors.New("feed: writable feed takes no proofs")
	// ErrBlockTooLarge: a block is over MaxBlockSize.
	ErrBlockTooLarge = errors.New("feed: block too large")
	// ErrOutOfRange: a block index or byte offset at or past the feed's end.
	ErrOutOfRange = errors.New("feed: out of range")
	// ErrKeyMismatch: a key given to Open does not match the stored feed, or a
	// secret key does not match its public key.
	ErrKeyMismatch = errors.New("feed: key mismatch")
	// ErrCorrupt: stored data failed a checksum, a hash or a signature. The
	// feed never returns such data as good.
	ErrCorrupt = errors.New("feed: corrupt storage")
	// ErrNotAvailable: this replica lacks the block or nodes asked for.
	ErrNotAvailable = errors.New("feed: not available")
	// ErrStaleFork: a proof or request belongs to an older fork than this feed's.
	ErrStaleFork = errors.New("feed: stale fork")
	// ErrStale: a proof carries only a head this feed already has or passed,
	// as happens when two peers answer the same request. Nothing is wrong with
	// the peer.
	ErrStale = errors.New("feed: proof is not newer than the feed")
	// ErrLocked: another process has the feed open.
	ErrLocked = errors.New("feed: locked by another process")
	// ErrFailed: an earlier write or sync failed in a way that left the
	// state on disk uncertain, and the feed refuses writes (and Verify)
	// until it is reopened.
	ErrFailed = errors.New("feed: failed, reopen to recover")
	// ErrVersion: the directory holds a feed in a storage format this
	// package does not read: one written by another version of it.
	ErrVersion = errors.New("feed: unsupported storage format version")
	// ErrNotFound: the store holds no feed with that key or discovery key,
	// or Options.MustExist found no feed in the directory.
	ErrNotFound = errors.New("feed: not found")
)

// ErrInvalidProof is merkle.ErrInvalidProof: a proof did not verify, and
// nothing it carried was stored.
var ErrInvalidProof = merkle.ErrInvalidProof
