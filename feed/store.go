package feed

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"unicode/utf8"

	"golang.org/x/crypto/blake2b"
)

// A store's directory holds its primary seed and one directory per feed,
// named by discovery key so that the layout does not reveal feed keys:
//
//	ROOT/seed                      32 random bytes, mode 0600
//	ROOT/feeds/ab/abcd…(64 hex)/   a feed directory (see Open)
//	ROOT/feeds/ab/abcd…/name       the name of a named feed
const (
	seedFile  = "seed"
	feedsDir  = "feeds"
	nameFile  = "name"
	maxName   = 255
	namedSalt = "hyperfeed/named-feed/v1\x00"
)

// StoreOptions configure OpenStore. The zero value works.
type StoreOptions struct {
	// Seed is the primary seed that named feeds' key pairs derive from. Nil
	// means the one stored in the root, created at random on first use.
	Seed []byte
	// Sync, FS and Logger are passed to every feed; see Options.
	Sync   bool
	FS     FS
	Logger *slog.Logger
}

// Store keeps many feeds under one root directory, like Hypercore's
// Corestore: feeds are opened by key or discovery key, and named writable
// feeds get key pairs derived from the store's primary seed, so a restart
// finds them again. A feed is opened once and shared by every caller;
// closing the store closes them all.
type Store struct {
	root string
	opts StoreOptions
	seed [32]byte

	mu     sync.Mutex
	feeds  map[DiscoveryKey]*Feed
	closed bool
}

// OpenStore opens or creates the store in root.
func OpenStore(root string, opts *StoreOptions) (*Store, error) {
	s := &Store{root: root, feeds: map[DiscoveryKey]*Feed{}}
	if opts != nil {
		s.opts = *opts
	}
	if s.opts.FS == nil {
		s.opts.FS = OSFS{}
	}
	if s.opts.Logger == nil {
		s.opts.Logger = slog.New(slog.DiscardHandler)
	}
	if err := s.opts.FS.MkdirAll(filepath.Join(root, feedsDir), 0o700); err != nil {
		return nil, fmt.Errorf("feed: open store %s: %w", root, err)
	}
	if err := s.loadSeed(); err != nil {
		return nil, fmt.Errorf("feed: open store %s: %w", root, err)
	}
	return s, nil
}

func (s *Store) loadSeed() error {
	if s.opts.Seed != nil {
		if len(s.opts.Seed) != len(s.seed) {
			return fmt.Errorf("primary seed is %d bytes, want %d", len(s.opts.Seed), len(s.seed))
		}
		copy(s.seed[:], s.opts.Seed)
		return nil
	}
	name := filepath.Join(s.root, seedFile)
	b, err := readSmallFile(s.opts.FS, name, len(s.seed))
	if err != nil {
		return err
	}
	switch len(b) {
	case len(s.seed):
		copy(s.seed[:], b)
		return nil
	case 0:
		if _, err := rand.Read(s.seed[:]); err != nil {
			return err
		}
		return writeSmallFile(s.opts.FS, name, s.seed[:])
	default:
		return fmt.Errorf("%w: primary seed file is %d bytes", ErrCorrupt, len(b))
	}
}

// NamedKey returns the secret key of the named feed: the Ed25519 key whose
// seed is BLAKE2b-256 keyed with the primary seed over a fixed salt and the
// name.
func (s *Store) NamedKey(name string) (ed25519.PrivateKey, error) {
	if name == "" || len(name) > maxName || !utf8.ValidString(name) {
		return nil, fmt.Errorf("feed: feed name must be 1 to %d bytes of UTF-8, got %q", maxName, name)
	}
	h, _ := blake2b.New256(s.seed[:]) // a 32-byte key is always valid
	h.Write([]byte(namedSalt))
	h.Write([]byte(name))
	return ed25519.NewKeyFromSeed(h.Sum(nil)), nil
}

// Named opens the writable feed called name, creating it on first use.
func (s *Store) Named(name string) (*Feed, error) {
	sk, err := s.NamedKey(name)
	if err != nil {
		return nil, err
	}
	key := KeyOf(sk)
	return s.open(key.DiscoveryKey(), func(dir string) (*Options, error) {
		if err := s.opts.FS.MkdirAll(dir, 0o700); err != nil {
			return nil, err
		}
		if err := writeSmallFile(s.opts.FS, filepath.Join(dir, nameFile), []byte(name)); err != nil {
			return nil, err
		}
		return &Options{SecretKey: sk}, nil
	})
}

// Get opens the feed with the given key, creating an empty replica if the
// store has none. A named feed of this store opens writable.
func (s *Store) Get(key Key) (*Feed, error) {
	return s.open(key.DiscoveryKey(), func(dir string) (*Options, error) {
		o, err := s.storedOptions(dir)
		if err != nil {
			return nil, err
		}
		if o.SecretKey != nil && KeyOf(o.SecretKey) != key {
			return nil, fmt.Errorf("%w: named feed in %s is not %s", ErrKeyMismatch, dir, key)
		}
		o.Key = key
		return o, nil
	})
}

// Find opens a feed the store already holds, by discovery key: what a peer
// asks for. A feed the store does not hold is ErrNotFound.
func (s *Store) Find(dk DiscoveryKey) (*Feed, error) {
	return s.open(dk, func(dir string) (*Options, error) {
		fl, err := s.opts.FS.OpenFile(filepath.Join(dir, headerFile), os.O_RDONLY, 0)
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%w: %s", ErrNotFound, dk)
		}
		if err != nil {
			return nil, err
		}
		size, err := fileSize(fl)
		fl.Close()
		if err != nil {
			return nil, err
		}
		if size == 0 {
			return nil, fmt.Errorf("%w: %s", ErrNotFound, dk)
		}
		return s.storedOptions(dir)
	})
}

// storedOptions returns the options to open the feed in dir with: its key
// pair if it is a named feed.
func (s *Store) storedOptions(dir string) (*Options, error) {
	name, err := readSmallFile(s.opts.FS, filepath.Join(dir, nameFile), maxName)
	if err != nil || len(name) == 0 {
		return &Options{}, err
	}
	sk, err := s.NamedKey(string(name))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	return &Options{SecretKey: sk}, nil
}

func (s *Store) dir(dk DiscoveryKey) string {
	h := dk.String()
	return filepath.Join(s.root, feedsDir, h[:2], h)
}

func (s *Store) open(dk DiscoveryKey, options func(dir string) (*Options, error)) (*Feed, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, fmt.Errorf("feed: store: %w", ErrClosed)
	}
	if f, ok := s.feeds[dk]; ok {
		return f, nil
	}
	dir := s.dir(dk)
	o, err := options(dir)
	if err != nil {
		return nil, fmt.Errorf("feed: store: %w", err)
	}
	o.Sync, o.FS, o.Logger = s.opts.Sync, s.opts.FS, s.opts.Logger
	f, err := Open(dir, o)
	if err != nil {
		return nil, err
	}
	s.feeds[dk] = f
	f.onClose = func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.feeds[dk] == f {
			delete(s.feeds, dk)
		}
	}
	return f, nil
}

// List returns the discovery keys of every feed the store holds on disk.
func (s *Store) List() ([]DiscoveryKey, error) {
	top := filepath.Join(s.root, feedsDir)
	shards, err := s.opts.FS.ReadDir(top)
	if err != nil {
		return nil, fmt.Errorf("feed: store: %w", err)
	}
	var out []DiscoveryKey
	for _, sh := range shards {
		if !sh.IsDir() {
			continue
		}
		entries, err := s.opts.FS.ReadDir(filepath.Join(top, sh.Name()))
		if err != nil {
			return nil, fmt.Errorf("feed: store: %w", err)
		}
		for _, e := range entries {
			var dk DiscoveryKey
			if b, err := hex.DecodeString(e.Name()); err != nil || len(b) != len(dk) || !e.IsDir() {
				continue
			} else {
				copy(dk[:], b)
			}
			out = append(out, dk)
		}
	}
	return out, nil
}

// Close closes every feed the store opened.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	feeds := make([]*Feed, 0, len(s.feeds))
	for _, f := range s.feeds {
		feeds = append(feeds, f)
	}
	s.mu.Unlock()
	var errs []error
	for _, f := range feeds {
		if err := f.Close(); err != nil && !errors.Is(err, fs.ErrClosed) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
