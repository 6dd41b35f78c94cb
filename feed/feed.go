package feed

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync"

	"github.com/hyperfeed/hyperfeed/merkle"
)

// MaxBlockSize is the largest block a feed stores or accepts from a peer.
const MaxBlockSize = 16 << 20

// File names inside a feed directory.
const (
	headerFile   = "header"
	treeFile     = "tree"
	dataFile     = "data"
	indexFile    = "index"
	bitfieldFile = "bitfield"
	secretFile   = "secret"
)

// Options configure Open. The zero value creates a writable feed with a fresh
// key pair, or opens whatever feed the directory holds.
type Options struct {
	// Key names the feed. Given alone, it opens (or creates) a read-only
	// replica; with a stored feed, it must match.
	Key Key
	// SecretKey makes the feed writable. The caller keeps it and passes it on
	// every Open; only a key pair that Open generates itself is saved in the
	// directory (file "secret", mode 0600).
	SecretKey ed25519.PrivateKey
	// Sync makes every acknowledged write survive power loss: Append and
	// ApplyProof return only after an fsync. Concurrent writers share one fsync
	// (group commit). Without it, an acknowledged write survives the process
	// being killed, but not the machine losing power.
	Sync bool
	// MustExist opens only a feed already stored in the directory: where
	// there is none, Open fails with ErrNotFound rather than create one, so
	// that a mistyped path is not taken for a new feed.
	MustExist bool
	// FS holds the files; nil means the operating system's.
	FS FS
	// Logger receives warnings such as a repaired header slot; nil discards.
	Logger *slog.Logger
}

// Head is a feed's signed state: the tree of Length blocks at Fork, whose
// tree hash the feed key signed.
type Head struct {
	Length    uint64
	Fork      uint64
	TreeHash  [32]byte
	Signature []byte // empty on a replica that holds no signed head yet
}

// Feed is one append-only log on disk. All methods are safe for concurrent use.
type Feed struct {
	dir    string
	key    Key
	dkey   DiscoveryKey
	secret ed25519.PrivateKey
	sync   bool
	log    *slog.Logger

	files  files
	commit committer // sync mode only

	mu sync.RWMutex
	// head is what readers see; tip is where the next write builds. They differ
	// only in sync mode, between a write and the fsync that makes it durable.
	head, tip       header
	roots, tipRoots []merkle.Node
	bits            *bitfield
	pending         []blockRange // sync mode: blocks written but not yet durable
	closed          bool
	failed          error
	cache           nodeCache
	buf             []byte // scratch for tree writes, under mu
	gather          []byte // scratch for data writes, under mu
	onClose         func()
	notify          notifier
	cores           int
}

type blockRange struct{ start, end uint64 }

type files struct {
	header, tree, data, index, bits File
}

func (fl *files) all() []File {
	return []File{fl.header, fl.tree, fl.data, fl.index, fl.bits}
}

func (fl *files) close() error {
	var errs []error
	for _, f := range fl.all() {
		if f != nil {
			errs = append(errs, f.Close())
		}
	}
	return errors.Join(errs...)
}

// Open opens the feed stored in dir, creating it if dir holds none.
func Open(dir string, opts *Options) (*Feed, error) {
	var o Options
	if opts != nil {
		o = *opts
	}
	if o.FS == nil {
		o.FS = OSFS{}
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.SecretKey != nil {
		if len(o.SecretKey) != ed25519.PrivateKeySize {
			return nil, fmt.Errorf("feed: open %s: %w: secret key is %d bytes", dir, ErrKeyMismatch, len(o.SecretKey))
		}
		if k := KeyOf(o.SecretKey); !o.Key.IsZero() && k != o.Key {
			return nil, fmt.Errorf("feed: open %s: %w: secret key is for %s, not %s", dir, ErrKeyMismatch, k, o.Key)
		}
	}
	f, err := open(dir, &o)
	if err != nil {
		return nil, fmt.Errorf("feed: open %s: %w", dir, err)
	}
	return f, nil
}

func open(dir string, o *Options) (_ *Feed, err error) {
	if o.MustExist {
		h, err := o.FS.OpenFile(filepath.Join(dir, headerFile), os.O_RDONLY, 0)
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%w: no feed in %s", ErrNotFound, dir)
		}
		if err != nil {
			return nil, err
		}
		size, err := fileSize(h)
		h.Close()
		if err != nil {
			return nil, err
		}
		if size == 0 {
			return nil, fmt.Errorf("%w: no feed in %s (its creation did not finish)", ErrNotFound, dir)
		}
	}
	if err := o.FS.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	f := &Feed{dir: dir, sync: o.Sync, log: o.Logger.With("feed", dir), bits: newBitfield()}
	f.notify.init()
	f.cores = runtime.GOMAXPROCS(0)
	defer func() {
		if err != nil {
			f.files.close()
		}
	}()
	if f.files.header, err = o.FS.OpenFile(filepath.Join(dir, headerFile), os.O_RDWR|os.O_CREATE, 0o600); err != nil {
		return nil, err
	}
	if err := lockFile(f.files.header); err != nil {
		return nil, err
	}
	for _, x := range []struct {
		name string
		f    *File
	}{{treeFile, &f.files.tree}, {dataFile, &f.files.data}, {indexFile, &f.files.index}, {bitfieldFile, &f.files.bits}} {
		if *x.f, err = o.FS.OpenFile(filepath.Join(dir, x.name), os.O_RDWR|os.O_CREATE, 0o600); err != nil {
			return nil, err
		}
	}
	size, err := fileSize(f.files.header)
	if err != nil {
		return nil, err
	}
	if size == 0 {
		// No header: a new feed, or one whose creation stopped before its
		// header was written, which therefore holds nothing.
		err = f.create(o)
	} else {
		err = f.load(o)
	}
	if err != nil {
		return nil, err
	}
	f.tip, f.tipRoots = f.head, f.roots
	f.commit.init(f.head.Seq)
	return f, nil
}

func (f *Feed) create(o *Options) error {
	switch {
	case o.SecretKey != nil:
		f.secret = o.SecretKey
		f.key = KeyOf(o.SecretKey)
	case !o.Key.IsZero():
		f.key = o.Key
	default:
		_, sk, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return err
		}
		if err := writeSecret(o.FS, filepath.Join(f.dir, secretFile), sk); err != nil {
			return err
		}
		f.secret, f.key = sk, KeyOf(sk)
	}
	f.dkey = f.key.DiscoveryKey()
	for _, fl := range []File{f.files.tree, f.files.data, f.files.index, f.files.bits} {
		if err := fl.Truncate(0); err != nil {
			return err
		}
	}
	f.head = header{Seq: 1, Key: f.key, TreeHash: merkle.TreeHash(nil), Complete: f.secret != nil}
	if f.sync {
		if err := errors.Join(f.syncData(), f.files.bits.Sync()); err != nil {
			return err
		}
	}
	return writeHeader(f.files.header, &f.head, f.sync)
}

func writeSecret(fsys FS, name string, sk ed25519.PrivateKey) error {
	return writeSmallFile(fsys, name, sk.Seed())
}

func readSecret(fsys FS, name string) (ed25519.PrivateKey, error) {
	seed, err := readSmallFile(fsys, name, ed25519.SeedSize)
	if seed == nil || err != nil {
		return nil, err
	}
	if len(seed) != ed25519.SeedSize {
		return nil, fmt.Errorf("%w: secret key file is %d bytes", ErrCorrupt, len(seed))
	}
	return ed25519.NewKeyFromSeed(seed), nil
}

// load reads an existing feed: the header, the roots it names, and (for a
// replica) the bitfield. It checks them against each other and the
// signature, but reads no block and no other node: the bitfield, at one bit
// per block, is all that grows with the length.
func (f *Feed) load(o *Options) error {
	h, damaged, err := readHeader(f.files.header)
	if err != nil {
		return err
	}
	f.key, f.dkey = h.Key, h.Key.DiscoveryKey()
	if !o.Key.IsZero() && o.Key != h.Key {
		return fmt.Errorf("%w: directory holds feed %s, not %s", ErrKeyMismatch, h.Key, o.Key)
	}
	if o.SecretKey != nil {
		if KeyOf(o.SecretKey) != h.Key {
			return fmt.Errorf("%w: secret key is not for feed %s", ErrKeyMismatch, h.Key)
		}
		f.secret = o.SecretKey
	} else {
		sk, err := readSecret(o.FS, filepath.Join(f.dir, secretFile))
		if err != nil {
			return err
		}
		if sk != nil && KeyOf(sk) != h.Key {
			return fmt.Errorf("%w: secret key file is not for feed %s", ErrCorrupt, h.Key)
		}
		f.secret = sk
	}
	roots, err := f.rootsOf(h.Length)
	if err != nil {
		return err
	}
	if merkle.TreeHash(roots) != h.TreeHash {
		return fmt.Errorf("%w: tree roots do not match the header's tree hash", ErrCorrupt)
	}
	var byteLen uint64
	for _, r := range roots {
		byteLen += r.Size
	}
	if byteLen != h.ByteLength {
		return fmt.Errorf("%w: roots hold %d bytes, header says %d", ErrCorrupt, byteLen, h.ByteLength)
	}
	if len(h.Signature) > 0 && !merkle.VerifySignature(h.Key, h.TreeHash, h.Length, h.Fork, h.Signature) {
		return fmt.Errorf("%w: head signature does not verify", ErrCorrupt)
	}
	if f.secret != nil && h.Length > 0 && len(h.Signature) == 0 {
		return fmt.Errorf("%w: writer's head is unsigned", ErrCorrupt)
	}
	damagedPages, err := f.bits.load(f.files.bits)
	if err != nil {
		return err
	}
	f.head, f.roots = h, roots
	f.tip, f.tipRoots = h, roots
	if err := f.rebuildPages(damagedPages); err != nil {
		return err
	}
	if f.secret != nil && !h.Complete && f.bits.count(h.Length) == h.Length {
		// A full replica given its secret key: a writer now.
		f.head.Complete, f.tip.Complete = true, true
	}
	if f.head.Complete {
		// The feed holds every block below its length; check that the files
		// are long enough for that, which a truncated copy would not be.
		if err := f.checkSize(f.files.data, "data", int64(h.ByteLength)); err != nil {
			return err
		}
		if err := f.checkSize(f.files.index, "index", int64(h.Length)*indexEntrySize); err != nil {
			return err
		}
	}
	if err := f.trim(h.Length, h.ByteLength); err != nil {
		return err
	}
	if damaged {
		f.log.Warn("feed: header slot damaged, rewriting it from the other slot", "seq", h.Seq)
		if err := writeHeader(f.files.header, &f.head, f.sync); err != nil {
			return err
		}
	}
	return nil
}

// rebuildPages recomputes the bitfield pages that failed their checksums.
// A page's record spans two 4 KiB pages of the file, so a write that fails
// part way, or a power loss before its fsync, can tear it; but a bit only
// records what the blocks show for themselves (see holdsBlock), so the
// page is rebuilt from the blocks it covers rather than the whole feed
// refused. It costs a read of those blocks, once, after such a failure.
func (f *Feed) rebuildPages(pages []int) error {
	for _, p := range pages {
		f.log.Warn("feed: bitfield page damaged, rebuilding it from the blocks it covers", "page", p)
		f.bits.touch(p)
		if f.head.Complete {
			continue // the header says every block is held; the page is not kept
		}
		for i := uint64(p) * pageBits; i < min(uint64(p+1)*pageBits, f.head.Length); i++ {
			held, err := f.holdsBlock(i)
			if err != nil {
				return err
			}
			if held {
				f.bits.setRange(i, i+1, true)
			}
		}
	}
	return nil
}

// holdsBlock reports whether block i is stored whole, which is what its
// bit says: the block matches its checksum and its leaf, and the leaf is
// anchored in the tree, so the block can be proved. A finished write of a
// block leaves all of that before it sets the bit.
func (f *Feed) holdsBlock(i uint64) (bool, error) {
	_, leaf, err := f.readBlock(i)
	if errors.Is(err, ErrCorrupt) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return f.anchored(leaf)
}

func (f *Feed) checkSize(fl File, name string, want int64) error {
	size, err := fileSize(fl)
	if err != nil {
		return err
	}
	if size < want {
		return fmt.Errorf("%w: %s file is %d bytes, the head needs %d", ErrCorrupt, name, size, want)
	}
	return nil
}

// trim removes whatever the files hold for blocks at or past length (of
// byteLength bytes): the leftovers of a write that stopped before its
// header, or of a truncation. Its writes are idempotent, so a crash inside
// trim is repaired by the next.
func (f *Feed) trim(length, byteLength uint64) error {
	if _, err := f.clearParents(length); err != nil {
		return err
	}
	return f.cutFiles(length, byteLength)
}

// nodeRecord is a tree record as it was on disk, kept to be put back.
type nodeRecord struct {
	index uint64
	rec   [nodeSize]byte
}

// clearParents zeroes the parents that join blocks below length to blocks
// at or past it: the nodes below 2·length that reach past the head, one at
// most per level. Shortening the file does not remove them, and a write
// past the head stores them in any order with the rest (with no fsync
// between), so they are cleared whatever the file's length. It returns
// what it changed, which a caller may have to put back; on error, that
// includes the record it was zeroing.
func (f *Feed) clearParents(length uint64) ([]nodeRecord, error) {
	f.cache.reset()
	var cleared []nodeRecord
	var rec, zero [nodeSize]byte
	for i := merkle.Parent(2 * length); merkle.Depth(i) < 63; i = merkle.Parent(i) {
		if i >= 2*length {
			if lo, _ := merkle.Spans(i); lo == 0 {
				break // every node above starts at block 0 and lies past 2·length
			}
			continue
		}
		clear(rec[:])
		if n, err := f.files.tree.ReadAt(rec[:], int64(i)*nodeSize); n < nodeSize && err != nil && err != io.EOF {
			return cleared, err
		}
		if isZero(rec[:]) {
			continue
		}
		cleared = append(cleared, nodeRecord{index: i, rec: rec})
		if _, err := f.files.tree.WriteAt(zero[:], int64(i)*nodeSize); err != nil {
			return cleared, err
		}
	}
	return cleared, nil
}

// restoreNodes writes back records that clearParents changed.
func (f *Feed) restoreNodes(recs []nodeRecord) error {
	f.cache.reset()
	for _, r := range recs {
		if _, err := f.files.tree.WriteAt(r.rec[:], int64(r.index)*nodeSize); err != nil {
			return err
		}
	}
	return nil
}

// cutFiles shortens the files to what the first length blocks (byteLength
// bytes) take, and clears the bits of the blocks past them.
func (f *Feed) cutFiles(length, byteLength uint64) error {
	for _, x := range []struct {
		fl   File
		size int64
	}{{f.files.tree, int64(2*length) * nodeSize}, {f.files.index, int64(length) * indexEntrySize}, {f.files.data, int64(byteLength)}} {
		s, err := fileSize(x.fl)
		if err != nil {
			return err
		}
		if s > x.size {
			if err := x.fl.Truncate(x.size); err != nil {
				return err
			}
		}
	}
	f.bits.setRange(length, uint64(len(f.bits.pages))*pageBits, false)
	return f.bits.flush(f.files.bits)
}

// Key returns the feed's public key.
func (f *Feed) Key() Key { return f.key }

// DiscoveryKey returns the feed's discovery key.
func (f *Feed) DiscoveryKey() DiscoveryKey { return f.dkey }

// Writable reports whether this feed holds its secret key.
func (f *Feed) Writable() bool { return f.secret != nil }

// Len returns the length of the feed's signed head.
func (f *Feed) Len() uint64 {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.head.Length
}

// ByteLen returns the number of bytes in the blocks of the signed head.
func (f *Feed) ByteLen() uint64 {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.head.ByteLength
}

// Fork returns the fork of the signed head: how many times the writer has
// truncated the feed.
func (f *Feed) Fork() uint64 {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.head.Fork
}

// State is where a feed stands, read at once: its head's fork and length,
// and how many of the head's blocks it holds.
type State struct {
	Fork, Length, Held uint64
}

// Complete reports whether the feed holds every block of its head.
func (s State) Complete() bool { return s.Held == s.Length }

// State returns where the feed stands: cheaper than Head and Downloaded,
// for those who ask often.
func (f *Feed) State() State {
	f.mu.RLock()
	defer f.mu.RUnlock()
	st := State{Fork: f.head.Fork, Length: f.head.Length, Held: f.head.Length}
	if !f.head.Complete {
		st.Held = f.bits.count(f.head.Length)
	}
	return st
}

// Head returns the signed head.
func (f *Feed) Head() Head {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return Head{Length: f.head.Length, Fork: f.head.Fork, TreeHash: f.head.TreeHash, Signature: slices.Clone(f.head.Signature)}
}

// Has reports whether the feed holds block i locally.
func (f *Feed) Has(i uint64) bool {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.has(i)
}

func (f *Feed) has(i uint64) bool {
	return i < f.head.Length && (f.head.Complete || f.bits.get(i))
}

// Downloaded returns how many of the head's blocks the feed holds locally.
func (f *Feed) Downloaded() uint64 {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.head.Complete {
		return f.head.Length
	}
	return f.bits.count(f.head.Length)
}

// Get returns block i. On a writer, a block past the end is ErrOutOfRange at
// once. On a replica, a missing block is waited for, until a replicator
// stores it or ctx ends; each wait is announced to subscribers as EventWant.
func (f *Feed) Get(ctx context.Context, i uint64) ([]byte, error) {
	for {
		f.mu.RLock()
		if f.closed {
			f.mu.RUnlock()
			return nil, fmt.Errorf("feed: get %d: %w", i, ErrClosed)
		}
		if f.has(i) {
			b, _, err := f.readBlock(i)
			f.mu.RUnlock()
			if err != nil {
				return nil, fmt.Errorf("feed: get %d: %w", i, err)
			}
			return b, nil
		}
		if f.secret != nil {
			length := f.head.Length
			f.mu.RUnlock()
			if i < length {
				// Only a writer restored from a partial replica lacks blocks.
				return nil, fmt.Errorf("feed: get %d: %w: the writer does not hold it", i, ErrNotAvailable)
			}
			return nil, fmt.Errorf("feed: get %d: %w: length is %d", i, ErrOutOfRange, length)
		}
		// Registering under the read lock means a block stored after the check
		// above (under the write lock) is stored after the registration, and
		// so wakes it.
		wait := f.notify.waitFor(i)
		f.mu.RUnlock()
		f.notify.emit(Event{Kind: EventWant, Index: i})
		select {
		case <-wait:
		case <-ctx.Done():
			return nil, fmt.Errorf("feed: get %d: %w", i, ctx.Err())
		}
	}
}

// readBlock reads block i and checks it against its leaf node, which it
// returns too. The caller holds mu and has checked that the feed holds the
// block.
func (f *Feed) readBlock(i uint64) ([]byte, merkle.Node, error) {
	return f.readBlockFrom(i, nil, true)
}

// readBlockFrom is readBlock taking what it can from pf, which ProveMany
// reads for a run of blocks at once.
func (f *Feed) readBlockFrom(i uint64, pf *prefetch, hash bool) ([]byte, merkle.Node, error) {
	var leaf merkle.Node
	var entry []byte
	var err error
	inRun := pf != nil && i >= pf.first && i < pf.end
	if inRun {
		k := i - pf.first
		leaf, err = pf.node(merkle.LeafIndex(i))
		entry = pf.index[k*indexEntrySize : (k+1)*indexEntrySize]
	} else {
		// Random reads would only churn the cache: go to the disk.
		leaf, err = f.readNodeDisk(merkle.LeafIndex(i))
	}
	if err != nil {
		return nil, leaf, err
	}
	if leaf.IsZero() || leaf.Size > MaxBlockSize {
		return nil, leaf, fmt.Errorf("%w: leaf node of block %d is missing or damaged", ErrCorrupt, i)
	}
	if !inRun {
		entry = make([]byte, indexEntrySize)
		if err := readFull(f.files.index, entry, int64(i)*indexEntrySize); err != nil {
			return nil, leaf, fmt.Errorf("index entry of block %d: %w", i, err)
		}
	}
	off, sum, ok := readIndexEntry(entry)
	if !ok {
		return nil, leaf, fmt.Errorf("%w: index entry of block %d is damaged", ErrCorrupt, i)
	}
	if off > f.head.ByteLength || leaf.Size > f.head.ByteLength-off {
		return nil, leaf, fmt.Errorf("%w: block %d indexed at byte %d, past the feed's end", ErrCorrupt, i, off)
	}
	var data []byte
	if inRun && off >= pf.dataAt && off+leaf.Size <= pf.dataAt+uint64(len(pf.data)) {
		data = pf.data[off-pf.dataAt : off-pf.dataAt+leaf.Size : off-pf.dataAt+leaf.Size]
	} else {
		data = make([]byte, leaf.Size)
		if err := readFull(f.files.data, data, int64(off)); err != nil {
			return nil, leaf, fmt.Errorf("block %d: %w", i, err)
		}
	}
	if crc32.Checksum(data, castagnoli) != sum {
		return nil, leaf, fmt.Errorf("%w: block %d does not match its checksum", ErrCorrupt, i)
	}
	if hash && merkle.LeafHash(data) != leaf.Hash {
		return nil, leaf, fmt.Errorf("%w: block %d does not match its hash", ErrCorrupt, i)
	}
	return data, leaf, nil
}

// Seek returns the block that holds byte offset off of the feed, and the
// offset inside it. It reads O(log n) tree nodes; on a replica it fails with
// ErrNotAvailable where the nodes have not been downloaded.
func (f *Feed) Seek(off uint64) (index, rel uint64, err error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.closed {
		return 0, 0, fmt.Errorf("feed: seek: %w", ErrClosed)
	}
	if off >= f.head.ByteLength {
		return 0, 0, fmt.Errorf("feed: seek %d: %w: feed holds %d bytes", off, ErrOutOfRange, f.head.ByteLength)
	}
	for _, r := range f.roots {
		if off >= r.Size {
			off -= r.Size
			continue
		}
		n := r
		for merkle.Depth(n.Index) > 0 {
			l, rt, _ := merkle.Children(n.Index)
			left, ok, err := f.storedNode(l)
			if err != nil {
				return 0, 0, fmt.Errorf("feed: seek: %w", err)
			}
			if !ok {
				return 0, 0, fmt.Errorf("feed: seek: %w: node %d", ErrNotAvailable, l)
			}
			if off < left.Size {
				n = left
				continue
			}
			off -= left.Size
			n.Index = rt
		}
		return n.Index / 2, off, nil
	}
	return 0, 0, fmt.Errorf("feed: seek: %w: roots hold fewer bytes than the header", ErrCorrupt)
}

// Append adds blocks to the end of a writable feed, signs the new head once,
// and returns the new length. It fails whole: on error the feed is as it was.
func (f *Feed) Append(blocks ...[]byte) (uint64, error) {
	for i, b := range blocks {
		if len(b) > MaxBlockSize {
			return 0, fmt.Errorf("feed: append: block %d of the call: %w: %d bytes, at most %d", i, ErrBlockTooLarge, len(b), MaxBlockSize)
		}
	}
	f.mu.Lock()
	if err := f.writeCheck(); err != nil {
		f.mu.Unlock()
		return 0, fmt.Errorf("feed: append: %w", err)
	}
	if len(blocks) == 0 {
		n := f.tip.Length
		f.mu.Unlock()
		return n, nil
	}
	next, err := f.appendLocked(blocks)
	f.mu.Unlock()
	if err != nil {
		return 0, fmt.Errorf("feed: append: %w", err)
	}
	if f.sync {
		if err := f.commit.wait(f, next.Seq); err != nil {
			return 0, fmt.Errorf("feed: append: %w", err)
		}
	}
	f.notify.emit(Event{Kind: EventAppend, Length: next.Length, Fork: next.Fork})
	return next.Length, nil
}

func (f *Feed) writeCheck() error {
	switch {
	case f.closed:
		return ErrClosed
	case f.secret == nil:
		return ErrNotWritable
	case f.failed != nil:
		return fmt.Errorf("%w: %v", ErrFailed, f.failed)
	}
	return nil
}

func (f *Feed) appendLocked(blocks [][]byte) (_ header, err error) {
	start := f.tip.Length
	if uint64(len(blocks)) > merkle.MaxLength-start {
		return header{}, fmt.Errorf("%w: feed would exceed %d blocks", ErrOutOfRange, uint64(merkle.MaxLength))
	}
	defer func() {
		if err != nil {
			f.discardLocked()
		}
	}()
	var total int
	for _, b := range blocks {
		total += len(b)
	}
	// The data write needs no hash: for a large batch it runs beside the
	// hashing, on another core.
	var leaves []merkle.Node
	var werr error
	if total >= parallelBytes && f.cores > 1 {
		var wg sync.WaitGroup
		wg.Go(func() { werr = f.writeBlocks(start, f.tip.ByteLength, blocks) })
		leaves = f.hashLeaves(start, blocks, total)
		wg.Wait()
	} else {
		leaves = f.hashLeaves(start, blocks, total)
		werr = f.writeBlocks(start, f.tip.ByteLength, blocks)
	}
	if werr != nil {
		return header{}, werr
	}
	roots := make([]merkle.Node, len(f.tipRoots), len(f.tipRoots)+1)
	copy(roots, f.tipRoots)
	created := make([]merkle.Node, 0, 2*len(blocks)+8)
	for _, l := range leaves {
		roots, created = merkle.AppendLeaf(roots, l, created)
	}
	next := f.tip
	next.Seq++
	next.Length = start + uint64(len(blocks))
	next.ByteLength += uint64(total)
	next.TreeHash = merkle.TreeHash(roots)
	next.Signature = merkle.Sign(f.secret, next.TreeHash, next.Length, next.Fork)
	if err := f.writeAppendNodes(start, next.Length, created); err != nil {
		return header{}, err
	}
	if err := f.commitLocked(&next, roots, blockRange{start, next.Length}); err != nil {
		return header{}, err
	}
	return next, nil
}

// discardLocked removes what a failed write left past the tip (data,
// index entries, nodes, among them parents that join the tip's blocks to
// the ones it did not add), so that the feed is as it was. If that fails
// too, the files are not what the feed takes them for, and it refuses
// writes until reopened: Open trims them.
func (f *Feed) discardLocked() {
	if err := f.trim(f.tip.Length, f.tip.ByteLength); err != nil && f.failed == nil {
		f.failed = err
	}
}

// parallelBytes is the batch size from which Append spreads its hashing over
// every core and writes the data meanwhile.
const parallelBytes = 256 << 10

// hashLeaves hashes blocks, on every core when there is enough data for that
// to pay.
func (f *Feed) hashLeaves(start uint64, blocks [][]byte, total int) []merkle.Node {
	leaves := make([]merkle.Node, len(blocks))
	workers := min(f.cores, len(blocks))
	if workers < 2 || total < parallelBytes {
		for i, b := range blocks {
			leaves[i] = merkle.Leaf(start+uint64(i), b)
		}
		return leaves
	}
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := w; i < len(blocks); i += workers {
				leaves[i] = merkle.Leaf(start+uint64(i), blocks[i])
			}
		})
	}
	wg.Wait()
	return leaves
}

// writeBlocks writes blocks [start, ...) at byte offset off, and their index
// entries. Small blocks are gathered into one write; large ones go alone,
// saving the copy.
func (f *Feed) writeBlocks(start, off uint64, blocks [][]byte) error {
	const gather, alone = 1 << 20, 64 << 10
	idx := make([]byte, indexEntrySize*len(blocks))
	run := f.gather[:0]
	defer func() { f.gather = run[:0] }()
	pos, runAt := off, off
	flush := func() error {
		if len(run) == 0 {
			return nil
		}
		_, err := f.files.data.WriteAt(run, int64(runAt))
		run = run[:0]
		return err
	}
	for i, b := range blocks {
		putIndexEntry(idx[indexEntrySize*i:], pos, b)
		if len(b) >= alone {
			if err := flush(); err != nil {
				return err
			}
			if _, err := f.files.data.WriteAt(b, int64(pos)); err != nil {
				return err
			}
		} else {
			if len(run) == 0 {
				runAt = pos
			}
			run = append(run, b...)
			if len(run) >= gather {
				if err := flush(); err != nil {
					return err
				}
			}
		}
		pos += uint64(len(b))
	}
	if err := flush(); err != nil {
		return err
	}
	_, err := f.files.index.WriteAt(idx, int64(start)*indexEntrySize)
	return err
}

// indexEntrySize is the size of a block's entry in the index file.
const indexEntrySize = 16

// putIndexEntry lays out the index entry of a block of data at byte offset
// off: u64le(off) ‖ u32le(CRC-32C of data) ‖ 4 zero bytes. The checksum lets
// Prove catch a damaged block without hashing it (the receiver hashes it).
func putIndexEntry(b []byte, off uint64, data []byte) {
	binary.LittleEndian.PutUint64(b, off)
	binary.LittleEndian.PutUint32(b[8:], crc32.Checksum(data, castagnoli))
	clear(b[12:indexEntrySize])
}

// readIndexEntry reads what putIndexEntry wrote; ok is false if the entry's
// zero bytes are not zero.
func readIndexEntry(b []byte) (off uint64, sum uint32, ok bool) {
	return binary.LittleEndian.Uint64(b), binary.LittleEndian.Uint32(b[8:]), isZero(b[12:indexEntrySize])
}

// writeAppendNodes stores the nodes an append created. Those at or past leaf
// 2*start fill one contiguous run (with zeros for parents not yet complete,
// whose slots hold nothing valid); the few parents left of it, which join old
// blocks to new ones, are written after it. Should the append not commit,
// trim clears both, whichever of them reached the disk.
func (f *Feed) writeAppendNodes(start, end uint64, created []merkle.Node) error {
	lo, hi := 2*start, 2*end-1 // [lo, hi): leaves and complete parents of the new blocks
	run := f.scratch(int(hi-lo) * nodeSize)
	clear(run)
	var left []merkle.Node
	for _, n := range created {
		if n.Index >= lo && n.Index < hi {
			putNode(run[(n.Index-lo)*nodeSize:], n)
		} else {
			left = append(left, n)
		}
	}
	if _, err := f.files.tree.WriteAt(run, int64(lo)*nodeSize); err != nil {
		f.cache.reset() // the run may be partly written
		return err
	}
	var b [nodeSize]byte
	for _, n := range left {
		putNode(b[:], n)
		if _, err := f.files.tree.WriteAt(b[:], int64(n.Index)*nodeSize); err != nil {
			f.cache.reset()
			return err
		}
	}
	// The run's empty slots are zeros on disk now, whatever the cache held
	// for them from an earlier history.
	for i := lo; i < hi; i++ {
		if _, ok := f.cache.get(i); ok {
			f.cache.put(merkle.Node{Index: i})
		}
	}
	f.cache.put(created...)
	return nil
}

func (f *Feed) scratch(n int) []byte {
	if cap(f.buf) < n {
		f.buf = make([]byte, n)
	}
	return f.buf[:n]
}

// commitLocked makes next the feed's tip, with the blocks in added now held.
// Without sync it writes the bitfield, then the header (unless next has the
// tip's sequence number: blocks under the head need no new one), and
// publishes next at once; with sync it leaves all that to the group commit.
// On error nothing in memory changes.
func (f *Feed) commitLocked(next *header, roots []merkle.Node, added ...blockRange) error {
	if next.Complete {
		added = nil // the header says it all
	}
	if f.sync {
		f.tip, f.tipRoots = *next, roots
		for _, r := range added {
			if r.end > r.start {
				f.pending = append(f.pending, r)
			}
		}
		return nil
	}
	fresh, err := f.markHeld(added...)
	if err != nil {
		return err
	}
	if next.Seq != f.tip.Seq {
		if err := writeHeader(f.files.header, next, false); err != nil {
			f.unmarkHeld(fresh)
			// The header may now hold next in slot 0; put the old head back so a
			// reopen finds the feed as this call leaves it.
			if werr := writeHeader(f.files.header, &f.head, false); werr != nil && f.failed == nil {
				f.failed = werr
			}
			return err
		}
	}
	f.head, f.roots = *next, roots
	f.tip, f.tipRoots = f.head, f.roots
	return nil
}

// markHeld sets the bits of the blocks in rs and writes their pages. It
// returns the blocks whose bits it set, for unmarkHeld should the write
// they belong to fail later; if it fails itself, it has unmarked them.
func (f *Feed) markHeld(rs ...blockRange) ([]uint64, error) {
	var fresh []uint64
	for _, r := range rs {
		fresh = f.bits.setNew(r.start, r.end, fresh)
	}
	if err := f.bits.flush(f.files.bits); err != nil {
		f.unmarkHeld(fresh)
		return nil, err
	}
	return fresh, nil
}

// unmarkHeld clears the bits of blocks whose write failed, and tries to
// write their pages back as they were. If that fails too the pages stay
// dirty, for the next flush; meanwhile the file may say the blocks are
// held, which they are (their data and nodes went first), or hold a page
// torn by the failure, which Open rebuilds.
func (f *Feed) unmarkHeld(blocks []uint64) {
	if len(blocks) == 0 {
		return
	}
	f.bits.unset(blocks)
	_ = f.bits.flush(f.files.bits)
}

// Truncate cuts a writable feed to length blocks. As in Hypercore, the fork
// goes up by one and the new head is signed, so replicas can tell the new
// history from the old.
func (f *Feed) Truncate(length uint64) error {
	var seq uint64
	if f.sync {
		// Truncation rewrites the files under the head; keep the group commit
		// out while it does.
		release, err := f.commit.exclusive()
		if err != nil {
			return fmt.Errorf("feed: truncate: %w", err)
		}
		defer func() { release(seq) }()
	}
	f.mu.Lock()
	if err := f.writeCheck(); err != nil {
		f.mu.Unlock()
		return fmt.Errorf("feed: truncate: %w", err)
	}
	if f.sync {
		if err := f.settleLocked(); err != nil {
			f.failed = err
			f.mu.Unlock()
			return fmt.Errorf("feed: truncate: %w", err)
		}
	}
	if length > f.head.Length {
		n := f.head.Length
		f.mu.Unlock()
		return fmt.Errorf("feed: truncate to %d: %w: length is %d", length, ErrOutOfRange, n)
	}
	next, err := f.truncateLocked(length)
	f.mu.Unlock()
	if err != nil {
		return fmt.Errorf("feed: truncate to %d: %w", length, err)
	}
	seq = next.Seq
	f.notify.emit(Event{Kind: EventTruncate, Length: next.Length, Fork: next.Fork})
	return nil
}

func (f *Feed) truncateLocked(length uint64) (header, error) {
	roots, err := f.rootsOf(length)
	if err != nil {
		return header{}, err
	}
	next := f.head
	next.Seq++
	next.Fork++
	next.Length = length
	next.ByteLength = 0
	for _, r := range roots {
		next.ByteLength += r.Size
	}
	next.TreeHash = merkle.TreeHash(roots)
	next.Signature = merkle.Sign(f.secret, next.TreeHash, length, next.Fork)
	next.Forks = slices.Clone(next.Forks)
	next.addFork(f.head.Fork, next.Fork, length)
	// The header goes first: until it is written, the files still hold the
	// old head whole. Then the parents that join kept blocks to removed
	// ones are zeroed, which can be undone (their records are kept): a
	// failure up to there puts the old head back. Only then are the files
	// cut, which cannot be undone: a failure there leaves the truncation
	// done, and the feed failed until reopened, when Open trims again.
	// Nothing here needs an fsync but the header's: a crash that loses
	// the rest leaves it for Open to redo, and the next commit syncs it.
	if err := writeHeader(f.files.header, &next, f.sync); err != nil {
		f.undoTruncateLocked(nil)
		return header{}, err
	}
	if cleared, err := f.clearParents(length); err != nil {
		f.undoTruncateLocked(cleared)
		return header{}, err
	}
	f.head, f.roots = next, roots
	f.tip, f.tipRoots = f.head, f.roots
	if err := f.cutFiles(length, next.ByteLength); err != nil {
		f.failed = err
		return header{}, err
	}
	return next, nil
}

// undoTruncateLocked puts back the nodes a failed truncation zeroed (durably,
// in sync mode, before a header names them again) and then the old header.
// If it cannot, the feed fails until reopened.
func (f *Feed) undoTruncateLocked(cleared []nodeRecord) {
	err := f.restoreNodes(cleared)
	if err == nil && f.sync && len(cleared) > 0 {
		err = f.files.tree.Sync()
	}
	if err == nil {
		err = writeHeader(f.files.header, &f.head, f.sync)
	}
	if err != nil && f.failed == nil {
		f.failed = err
	}
}

// syncData syncs the files a header points into, all at once: the file
// system can then fold their journal commits into one.
func (f *Feed) syncData() error {
	var wg sync.WaitGroup
	errs := make([]error, 3)
	for i, fl := range []File{f.files.data, f.files.tree, f.files.index} {
		wg.Go(func() { errs[i] = fl.Sync() })
	}
	wg.Wait()
	return errors.Join(errs...)
}

// syncBitsLocked syncs the bitfield file if pages were written to it since
// the last sync.
func (f *Feed) syncBitsLocked() error {
	if !f.bits.unsynced {
		return nil
	}
	if err := f.files.bits.Sync(); err != nil {
		return err
	}
	f.bits.unsynced = false
	return nil
}

// Close closes the feed. Waiting Gets return ErrClosed; in sync mode, writes
// still in flight are made durable first.
func (f *Feed) Close() error {
	var serr error
	if f.sync {
		f.mu.RLock()
		seq, closed := f.tip.Seq, f.closed
		f.mu.RUnlock()
		if !closed {
			serr = f.commit.wait(f, seq)
		}
	}
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return nil
	}
	f.closed = true
	err := f.files.close()
	onClose := f.onClose
	f.mu.Unlock()
	f.notify.close()
	if onClose != nil {
		onClose()
	}
	if err = errors.Join(serr, err); err != nil {
		return fmt.Errorf("feed: close: %w", err)
	}
	return nil
}
