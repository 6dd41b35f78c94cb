package swarm

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hyperfeed/hyperfeed/feed"
	"github.com/hyperfeed/hyperfeed/internal/wire"
)

// Replicator is what one feed wants from the network, shared by every
// connection that replicates the feed: the blocks a Get waits for, the ranges
// being downloaded, and which connection is fetching which block, so that no
// block is asked of two peers at once. It also holds the feed's extension
// values and handlers (Publish, HandleExtension).
type Replicator struct {
	f      *feed.Feed
	cancel func()

	mu        sync.Mutex
	sparse    map[uint64]bool // blocks a Get waits for
	downloads []*Download
	inflight  map[uint64]*Session // block → the session fetching it
	upgradeBy *Session            // the session asking a peer for a newer head, if any
	upgradeAt time.Time           // since when (see claimUpgrade)
	upgrades  atomic.Int64        // upgrade requests sent, for tests
	sessions  map[*Session]bool
	peers     map[*Session]peerHead  // peers with the channel open
	changed   chan struct{}          // closed, and replaced, when peers or the head change
	values    map[string]publication // extension values published, by name
	published uint64                 // publications so far
	handlers  map[string]func(PeerKey, []byte)
}

// publication is an extension value published. Its payload is never
// modified, so sessions send it without copying it.
type publication struct {
	payload []byte
	seq     uint64 // tells this value from the name's others
}

// NewReplicator starts tracking what f wants. Close it when done.
func NewReplicator(f *feed.Feed) *Replicator {
	r := &Replicator{f: f, sparse: map[uint64]bool{}, inflight: map[uint64]*Session{}, sessions: map[*Session]bool{},
		peers: map[*Session]peerHead{}, changed: make(chan struct{}),
		values: map[string]publication{}, handlers: map[string]func(PeerKey, []byte){}}
	r.cancel = f.Subscribe(r.onEvent)
	return r
}

// Feed returns the replicated feed.
func (r *Replicator) Feed() *feed.Feed { return r.f }

// Close stops tracking the feed; downloads still waiting fail.
func (r *Replicator) Close() {
	r.cancel()
	r.mu.Lock()
	ds := r.downloads
	r.downloads = nil
	r.mu.Unlock()
	for _, d := range ds {
		d.finish(fmt.Errorf("swarm: replicator closed"))
	}
}

func (r *Replicator) onEvent(e feed.Event) {
	switch e.Kind {
	case feed.EventWant:
		r.mu.Lock()
		r.sparse[e.Index] = true
		r.mu.Unlock()
	case feed.EventBlock:
		r.mu.Lock()
		delete(r.sparse, e.Index)
		ss := make([]*Session, 0, len(r.sessions))
		for s := range r.sessions {
			ss = append(ss, s)
		}
		r.mu.Unlock()
		for _, s := range ss {
			s.noteHave(r, e.Index)
		}
		r.checkDownloads()
	case feed.EventTruncate:
		// Blocks past the kept prefix belong to the old history: fetch anew.
		r.mu.Lock()
		for _, d := range r.downloads {
			d.cursor = max(d.start, min(d.cursor, e.Length))
		}
		r.mu.Unlock()
		r.checkDownloads()
	case feed.EventAppend:
		r.checkDownloads()
	}
	if e.Kind == feed.EventAppend || e.Kind == feed.EventTruncate {
		r.mu.Lock()
		r.changedLocked()
		r.mu.Unlock()
	}
	r.kick()
}

// peerHead is what a peer has said of the feed on an open channel.
type peerHead struct {
	open         bool
	heard        bool // it sent its head: fork and length
	fork, length uint64
	held         uint64 // it holds blocks [0, held)
}

// notePeer records what session s's peer has said of the feed.
func (r *Replicator) notePeer(s *Session, h peerHead) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if old, ok := r.peers[s]; ok && old == h || !ok && !h.open {
		return
	}
	if h.open {
		r.peers[s] = h
	} else {
		delete(r.peers, s)
	}
	r.changedLocked()
}

func (r *Replicator) changedLocked() {
	close(r.changed)
	r.changed = make(chan struct{})
}

// waitPeers waits until done, called under r.mu with the feed's head and
// the peers' heads, returns true.
func (r *Replicator) waitPeers(ctx context.Context, done func(feed.Head, map[*Session]peerHead) bool) error {
	for {
		// Take the channel first: a change after it closes it.
		r.mu.Lock()
		changed := r.changed
		r.mu.Unlock()
		h := r.f.Head()
		r.mu.Lock()
		ok := done(h, r.peers)
		r.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Update waits until a connected peer has told its head of the feed and
// this side holds a head at least as new (the same fork and at least its
// length, or a later fork): after Update, Len is what the network had when
// Update was called, as far as that peer knew. It waits for a peer as long
// as ctx allows.
func (r *Replicator) Update(ctx context.Context) error {
	return r.waitPeers(ctx, func(h feed.Head, peers map[*Session]peerHead) bool {
		for _, p := range peers {
			if p.heard && (p.fork < h.Fork || p.fork == h.Fork && p.length <= h.Length) {
				return true
			}
		}
		return false
	})
}

// Delivered waits until every peer with which the feed's channel is open
// holds blocks [0, length), as it has announced: what a writer calls before
// closing, so that what it appended last has reached its peers. With no
// such peer it returns at once.
func (r *Replicator) Delivered(ctx context.Context, length uint64) error {
	return r.waitPeers(ctx, func(_ feed.Head, peers map[*Session]peerHead) bool {
		for _, p := range peers {
			if p.held < length {
				return false
			}
		}
		return true
	})
}

// kick tells every session that there may be work on the feed.
func (r *Replicator) kick() {
	r.mu.Lock()
	ss := make([]*Session, 0, len(r.sessions))
	for s := range r.sessions {
		ss = append(ss, s)
	}
	r.mu.Unlock()
	for _, s := range ss {
		s.poke(r)
	}
}

func (r *Replicator) attach(s *Session) {
	r.mu.Lock()
	r.sessions[s] = true
	r.mu.Unlock()
}

// detach forgets a session and frees the blocks it was fetching for others.
func (r *Replicator) detach(s *Session) {
	r.mu.Lock()
	delete(r.sessions, s)
	if _, ok := r.peers[s]; ok {
		delete(r.peers, s)
		r.changedLocked()
	}
	for i, by := range r.inflight {
		if by == s {
			delete(r.inflight, i)
		}
	}
	if r.upgradeBy == s {
		r.upgradeBy = nil
	}
	r.mu.Unlock()
	r.kick()
}

// upgradeLease is how long one session's request for a newer head keeps the
// feed's other sessions from asking their peers for it. In a mesh, every
// peer that takes a block announces the new head to every other, and each
// would otherwise be asked for it by each replica: as many proofs of the
// same head as the replica has peers. A peer slower than the lease shares
// the work with a second.
const upgradeLease = 250 * time.Millisecond

// claimUpgrade reports whether session s may ask its peer for a newer head
// now. If not, another session is asking, and s may ask at the latest at
// the time returned, unless that session releases the claim first (which
// wakes s).
func (r *Replicator) claimUpgrade(s *Session, now time.Time) (bool, time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if by := r.upgradeBy; by != nil && by != s && now.Before(r.upgradeAt.Add(upgradeLease)) {
		return false, r.upgradeAt.Add(upgradeLease)
	}
	r.upgradeBy, r.upgradeAt = s, now
	return true, time.Time{}
}

// releaseUpgrade ends session s's claim, if it holds it, and wakes the
// other sessions: the head may still be behind what their peers announced.
func (r *Replicator) releaseUpgrade(s *Session) {
	r.mu.Lock()
	mine := r.upgradeBy == s
	if mine {
		r.upgradeBy = nil
	}
	r.mu.Unlock()
	if mine {
		r.kick()
	}
}

// claim returns up to n blocks the feed wants, that have passes (the peer
// has them, the feed lacks them) and that no session is fetching, and marks
// them as fetched by s. length is the feed's current length: blocks past it
// need an upgrade first.
func (r *Replicator) claim(s *Session, n int, length uint64, has func(uint64) bool) []uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []uint64
	take := func(i uint64) bool {
		if i >= length || r.inflight[i] != nil || r.f.Has(i) || !has(i) {
			return len(out) < n
		}
		r.inflight[i] = s
		out = append(out, i)
		return len(out) < n
	}
	for i := range r.sparse {
		if !take(i) {
			return out
		}
	}
	for _, d := range r.downloads {
		end := min(d.end, length)
		for i := d.cursor; i < end; i++ {
			if !take(i) {
				return out
			}
		}
	}
	return out
}

// release marks block i as no longer being fetched by s.
func (r *Replicator) release(s *Session, i uint64) {
	r.mu.Lock()
	if r.inflight[i] == s {
		delete(r.inflight, i)
	}
	r.mu.Unlock()
}

// Download asks connected and future peers for blocks [start, end) of the
// feed. end = Live keeps following the feed as it grows, and never completes.
func (r *Replicator) Download(start, end uint64) *Download {
	d := &Download{r: r, start: start, end: end, cursor: start, done: make(chan struct{})}
	r.mu.Lock()
	r.downloads = append(r.downloads, d)
	r.mu.Unlock()
	r.checkDownloads()
	r.kick()
	return d
}

// Live is the end of a download that follows the feed forever.
const Live = math.MaxUint64

// checkDownloads advances every download's cursor past the blocks held, and
// finishes those that are complete.
func (r *Replicator) checkDownloads() {
	r.mu.Lock()
	var done []*Download
	kept := r.downloads[:0]
	for _, d := range r.downloads {
		end := d.end
		if end != Live {
			end = min(end, r.f.Len())
		}
		for d.cursor < end && r.f.Has(d.cursor) {
			d.cursor++
		}
		if d.end != Live && d.cursor >= d.end {
			done = append(done, d)
			continue
		}
		kept = append(kept, d)
	}
	r.downloads = kept
	r.mu.Unlock()
	for _, d := range done {
		d.finish(nil)
	}
}

// Download is a range of blocks being fetched.
type Download struct {
	r          *Replicator
	start, end uint64
	cursor     uint64 // blocks below it are held; under r.mu
	once       sync.Once
	err        error
	done       chan struct{}
}

func (d *Download) finish(err error) {
	d.once.Do(func() {
		d.err = err
		close(d.done)
	})
}

// Done is closed when the download completes or is cancelled.
func (d *Download) Done() <-chan struct{} { return d.done }

// Wait waits until every block of the range is held, or ctx ends.
func (d *Download) Wait(ctx context.Context) error {
	select {
	case <-d.done:
		return d.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Progress returns how many blocks of the range are held, and how many the
// range has (for a live download: up to the feed's current length).
func (d *Download) Progress() (have, total uint64) {
	end := min(d.end, d.r.f.Len())
	if end <= d.start {
		return 0, 0
	}
	for i := d.start; i < end; i++ {
		if d.r.f.Has(i) {
			have++
		}
	}
	return have, end - d.start
}

// Cancel stops the download; Wait returns an error.
func (d *Download) Cancel() {
	r := d.r
	r.mu.Lock()
	for i, x := range r.downloads {
		if x == d {
			r.downloads = append(r.downloads[:i], r.downloads[i+1:]...)
			break
		}
	}
	r.mu.Unlock()
	d.finish(fmt.Errorf("swarm: download cancelled"))
}

// Limits of an extension (see Replicator.Publish).
const (
	// MaxExtensionName bounds an extension's name, in bytes.
	MaxExtensionName = wire.MaxExtensionName
	// MaxExtensionPayload bounds an extension's payload, in bytes.
	MaxExtensionPayload = wire.MaxExtensionPayload
)

// Publish sets this side's value of extension name on the feed: it is sent
// at once to every peer with whom the feed's channel is open, and to every
// peer whose channel opens later, so that each peer ends up with the latest
// value. Publishing a name again replaces its value; a value replaced
// before it could be sent is not sent. Values reach a peer in the order
// they were published. The payload is copied.
//
// A name that is empty or longer than MaxExtensionName bytes, or a payload
// longer than MaxExtensionPayload, is ErrExtension: the peer would refuse
// the message and end the session.
func (r *Replicator) Publish(name string, payload []byte) error {
	m := &wire.Extension{Name: name, Payload: payload}
	if err := m.Validate(); err != nil {
		return fmt.Errorf("%w: %q: %v", ErrExtension, name, err)
	}
	r.mu.Lock()
	r.published++
	r.values[name] = publication{bytes.Clone(payload), r.published}
	ss := make([]*Session, 0, len(r.sessions))
	for s := range r.sessions {
		ss = append(ss, s)
	}
	r.mu.Unlock()
	for _, s := range ss {
		s.notePublished(r, name)
	}
	return nil
}

// HandleExtension calls fn for every value of extension name that a peer
// sends on the feed's channel, with the peer's identity and a payload fn may
// keep. fn runs on the session's goroutine: it must return quickly and must
// not block, or replication with that peer stalls. A nil fn removes the
// handler; values of an extension without a handler are ignored.
func (r *Replicator) HandleExtension(name string, fn func(from PeerKey, payload []byte)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if fn == nil {
		delete(r.handlers, name)
		return
	}
	r.handlers[name] = fn
}

func (r *Replicator) extensionHandler(name string) func(PeerKey, []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.handlers[name]
}

// extensionValue returns the value published for name.
func (r *Replicator) extensionValue(name string) (publication, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	v, ok := r.values[name]
	return v, ok
}

// extensionValues returns every value published, by name.
func (r *Replicator) extensionValues() map[string]publication {
	r.mu.Lock()
	defer r.mu.Unlock()
	return maps.Clone(r.values)
}
