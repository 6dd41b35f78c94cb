package swarm

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math/bits"
	"net"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hyperfeed/hyperfeed/feed"
	"github.com/hyperfeed/hyperfeed/internal/noiseconn"
	"github.com/hyperfeed/hyperfeed/internal/wire"
	"github.com/hyperfeed/hyperfeed/merkle"
	"golang.org/x/crypto/blake2b"
)

// Errors ending a session, wrapped with detail.
var (
	// ErrProtocol: the peer broke the protocol (a malformed message, a bad
	// capability, a proof that does not verify).
	ErrProtocol = errors.New("swarm: peer broke the protocol")
	// ErrTimeout: the peer stopped answering, reading, or serving requests.
	ErrTimeout = errors.New("swarm: peer timed out")
	// ErrSessionClosed: the session was closed locally.
	ErrSessionClosed = errors.New("swarm: session closed")
	// ErrExtension: an extension's name or payload is out of bounds.
	ErrExtension = errors.New("swarm: bad extension")
	// ErrUnproven: the peer announced, one after another, heads newer than
	// this side's that it could not prove when asked (see doc.go).
	ErrUnproven = errors.New("swarm: peer announced heads it could not prove")
)

// SessionConfig configures a session. The zero value works but for KeyPair.
type SessionConfig struct {
	KeyPair KeyPair
	// Secret is the network secret (32 bytes) both peers must hold, or nil.
	Secret []byte
	// Window is how many requests may be in flight to the peer at once on
	// each channel; default 512. Requests that time out shrink it for the
	// channel (see RequestTimeout).
	Window int
	// KeepAlive is how often a quiet session pings; after three intervals
	// without a message from the peer, or with a write of up to 64 KiB the
	// peer does not take, the session ends with ErrTimeout. Default 5 s.
	KeepAlive time.Duration
	// RequestTimeout is how long a request may wait for its answer while
	// the peer is not working through the requests before it; then it is
	// cancelled and its block asked of another peer (see doc.go). Default
	// 4 × KeepAlive: longer than the keep-alive timeout, so that a peer that
	// went away is caught by that, and a request timeout always means a peer
	// that is there but does not serve.
	RequestTimeout time.Duration
	// HandshakeTimeout bounds the Noise handshake; default 10 s.
	HandshakeTimeout time.Duration
	// Lookup, if set, is asked for a feed the peer opens that the session
	// does not replicate yet; returning nil ignores the peer's request.
	Lookup func(feed.DiscoveryKey) *Replicator
	Logger *slog.Logger
}

func (c *SessionConfig) defaults() {
	if c.Window <= 0 {
		c.Window = 512
	}
	if c.KeepAlive <= 0 {
		c.KeepAlive = 5 * time.Second
	}
	if c.RequestTimeout <= 0 {
		c.RequestTimeout = 4 * c.KeepAlive
	}
	if c.HandshakeTimeout <= 0 {
		c.HandshakeTimeout = 10 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Limits on what a peer can make a session hold or do.
const (
	// maxPendingOpens bounds the channels a peer may open for feeds this
	// side does not replicate.
	maxPendingOpens = 1024
	// maxParkedBytes bounds what is kept of the holdings a peer announces
	// on one such channel, and maxParkedTotal on all of them, in bytes as
	// queuedSize counts them.
	maxParkedBytes = 16 << 10
	maxParkedTotal = 1 << 20
	// maxQueued bounds the bytes of messages queued for the peer, give or
	// take one run of answers: past it, the peer's Requests and Pings wait.
	maxQueued = 4 << 20
	// maxUnanswered bounds the peer's Requests and Pings that wait; past
	// it, the session reads no more from the peer.
	maxUnanswered = 16384
	// maxRun bounds the requests served with one feed.ProveMany.
	maxRun = 256
	// maxStrikes is how many rounds of timed-out requests, with no answer
	// from the peer in between, end the session.
	maxStrikes = 3
	// maxTimedOut bounds the requests that may time out on one session,
	// since each leaves a block and a request id to remember.
	maxTimedOut = 4096
	// maxUnproven is how many heads a peer may announce in a row, each
	// newer than this side's, and fail to prove when asked for it, before
	// the session ends. One is not enough: a sparse replica cannot prove
	// its head from every length, and a peer's disk can fail a read.
	maxUnproven = 3
	// A peer that answers NoData for a block it announced is asked for no
	// block on that channel for a pause, from minPause doubling with each
	// such answer after a pause up to maxPause, until it serves a block;
	// and for that block not again before blockCooldown. NoData does not
	// say the peer lost the block (its disk may have failed a read), so it
	// is asked again, but a peer that cannot serve costs a request or two
	// per maxPause, and one bad block does not hold up the others. At most
	// maxCooling blocks per channel are remembered.
	minPause      = 20 * time.Millisecond
	maxPause      = 500 * time.Millisecond
	blockCooldown = maxPause
	maxCooling    = 4096
	// stallChunk is the most written to the connection under one write
	// deadline.
	stallChunk = 64 << 10
)

// Session is one encrypted connection to a peer, replicating any number of
// feeds, each on its own channel. It runs three goroutines: a reader, a
// writer, and the loop that owns all protocol state.
type Session struct {
	cfg    SessionConfig
	conn   *noiseconn.Conn
	remote PeerKey
	log    *slog.Logger

	inbox   chan wire.Message
	kick    chan struct{}
	closing chan struct{}
	done    chan struct{}
	wg      sync.WaitGroup
	err     error
	once    sync.Once

	mu        sync.Mutex // guards ops, haves, published, poked and outq
	ops       []feedOp
	haves     []have
	published map[published]bool
	poked     map[*Replicator]bool // feeds that may have work (see poke)
	outq      []wire.Message
	outKick   chan struct{}
	queued    atomic.Int64  // bytes sent and not yet written (queuedSize)
	lastRead  atomic.Int64  // when the reader last read a message, in Unix nanoseconds
	drained   chan struct{} // queued fell under maxQueued/2

	// Owned by the loop goroutine.
	channels   map[uint32]*channel            // by local id
	byRemote   map[uint32]*channel            // by the peer's id
	byKey      map[feed.DiscoveryKey]*channel // by discovery key
	parked     map[feed.DiscoveryKey]*parkedOpen
	parkedAt   map[uint32]*parkedOpen // the same, by the peer's id
	parkedSize int                    // bytes held by parked channels
	// The channels pump looks at next: those that something happened on
	// since it last did, or every one when sweep is set. Looking at only
	// these keeps a session with many channels from doing work in
	// proportion to all of them for every message on one.
	dirty      map[*channel]bool
	sweep      bool
	unanswered []wire.Message // the peer's Requests and Pings, oldest first
	nextID     uint32
	nextReq    uint64
	lastRecv   time.Time
	batch      []wire.Message
	// What the peer's answers say of it (see expire).
	lastAnswer time.Time // when it last answered a request
	lastID     uint64    // the highest request id it answered
	strikes    int       // rounds of timed-out requests since it last answered one
	timedOut   int       // requests timed out on this session
}

// channel is one feed replicated on a session.
type channel struct {
	r        *Replicator
	f        *feed.Feed
	local    uint32
	remote   uint32
	open     bool // both sides have opened
	peerFork uint64
	peerLen  uint64
	heard    bool     // the peer has sent its head (peerFork, peerLen)
	peerHas  holdings // blocks the peer says it holds, on fork peerFork
	reqs     map[uint64]request
	// Upgrades (see askUpgrade and upgradeFailed).
	upgrade   bool          // an upgrade request is in flight
	noUpgrade bool          // the peer's announced head is not to be asked for again
	retry     *upgradeRetry // the next upgrade request, if not from this side's length
	unproven  int           // heads the peer announced in a row and failed to prove
	claimsOwn bool          // the peer claimed a newer head of this side's writable feed
	// What timed-out requests leave (see expire).
	window    int             // requests allowed in flight, halved by timeouts and NoData
	cancelled map[uint64]bool // requests whose late answers are ignored
	refused   map[uint64]bool // blocks not to ask of the peer again
	largest   int             // the largest answer served to the peer, in bytes
	// What NoData for blocks leaves (see noBlock).
	pausedUntil time.Time       // no block requests before then
	pause       time.Duration   // the last pause; zero once the peer serves a block
	cooling     map[uint64]bool // blocks not to ask of the peer for now
	coolQueue   []cooled        // the same, by when they may be asked again
	// The extension values sent to the peer, by name: a value published
	// several times before the loop sends it goes once.
	extSent map[string]uint64
	// What this side last told the peer of its head.
	sentFork, sentLen uint64
	sentAny           bool
}

// newChannel makes a channel. Its maps are made when first written: a node
// in a mesh holds a channel per feed per peer, most of them idle.
func newChannel(r *Replicator, local uint32, window int) *channel {
	return &channel{r: r, f: r.f, local: local, window: window}
}

// set sets m[k] to v, making m first if it is nil.
func set[K comparable, V any](m *map[K]V, k K, v V) {
	if *m == nil {
		*m = map[K]V{}
	}
	(*m)[k] = v
}

// asks reports whether block i may be asked of the peer.
func (c *channel) asks(i uint64) bool {
	return c.peerHas.get(i) && !c.refused[i] && !c.cooling[i]
}

// peerNewer reports whether the peer has announced a head newer than h: a
// later fork, or a longer length of the same fork.
func (c *channel) peerNewer(h feed.State) bool {
	return c.heard && (c.peerFork > h.Fork || c.peerFork == h.Fork && c.peerLen > h.Length)
}

// upgradeRetry is an upgrade to ask for from a length shorter than this
// side's (from), while this side's head is still (fork, length).
type upgradeRetry struct {
	fork, length, from uint64
}

// cooled is a block the peer answered NoData for, and when it may be asked
// again.
type cooled struct {
	block uint64
	until time.Time
}

// parkedOpen is a channel the peer opened for a feed this side does not
// replicate (yet), with what the peer said on it since, to be handled when
// the channel opens: its latest Sync and its Range and Bitfield messages,
// up to maxParkedBytes. Anything else said on it is dropped.
type parkedOpen struct {
	open *wire.Open
	sync *wire.Sync
	held []wire.Message
	size int // bytes of held
}

// have is a block a feed gained, to announce to the peer.
type have struct {
	r     *Replicator
	index uint64
}

// noteHave queues the news that r's feed holds block i now.
func (s *Session) noteHave(r *Replicator, i uint64) {
	s.mu.Lock()
	s.haves = append(s.haves, have{r, i})
	s.mu.Unlock()
	s.wake()
}

// poke tells the session that r's feed may have work for it: its head
// moved, it wants blocks, or a block another session was fetching is free.
func (s *Session) poke(r *Replicator) {
	s.mu.Lock()
	if s.poked == nil {
		s.poked = map[*Replicator]bool{}
	}
	s.poked[r] = true
	s.mu.Unlock()
	s.wake()
}

// published is an extension value that r's feed published, to send.
type published struct {
	r    *Replicator
	name string
}

// notePublished queues the news that r has a new value for extension name.
// Many values published before the loop gets to it are sent as one, the
// latest.
func (s *Session) notePublished(r *Replicator, name string) {
	s.mu.Lock()
	if s.published == nil {
		s.published = map[published]bool{}
	}
	s.published[published{r, name}] = true
	s.mu.Unlock()
	s.wake()
}

type request struct {
	block   uint64
	isBlock bool
	sent    time.Time
	// This side's head when it asked, to tell an answer that failed because
	// the head has moved on since from one the peer got wrong.
	fork, length uint64
	// from, for an upgrade asked from a shorter length than the head's (see
	// upgradeFailed); the wire Request says it as its length.
	from    uint64
	hasFrom bool
}

// NewSession runs the Noise handshake on conn (initiator is the side that
// dialled) and starts replicating. The session owns conn from here on.
func NewSession(ctx context.Context, conn net.Conn, initiator bool, cfg SessionConfig) (*Session, error) {
	cfg.defaults()
	hctx, cancel := context.WithTimeout(ctx, cfg.HandshakeTimeout)
	defer cancel()
	raw := &stallConn{Conn: conn}
	nc, err := noiseconn.Handshake(hctx, raw, initiator, noiseconn.Config{KeyPair: cfg.KeyPair.noise(), Secret: cfg.Secret})
	if err != nil {
		return nil, fmt.Errorf("swarm: %w", err)
	}
	// Set before the writer starts, and after the handshake, whose own
	// deadline it would override.
	raw.timeout = 3 * cfg.KeepAlive
	s := &Session{
		cfg:      cfg,
		conn:     nc,
		remote:   PeerKey(nc.RemoteKey()),
		inbox:    make(chan wire.Message, 256),
		kick:     make(chan struct{}, 1),
		closing:  make(chan struct{}),
		done:     make(chan struct{}),
		outKick:  make(chan struct{}, 1),
		drained:  make(chan struct{}, 1),
		channels: map[uint32]*channel{},
		byRemote: map[uint32]*channel{},
		byKey:    map[feed.DiscoveryKey]*channel{},
		dirty:    map[*channel]bool{},
		parked:   map[feed.DiscoveryKey]*parkedOpen{},
		parkedAt: map[uint32]*parkedOpen{},
		lastRecv: time.Now(),
	}
	s.log = cfg.Logger.With("peer", s.remote.String()[:12])
	s.wg.Add(3)
	go s.readLoop()
	go s.writeLoop()
	go s.loop()
	go func() {
		s.wg.Wait()
		close(s.done)
	}()
	return s, nil
}

// stallConn is a session's connection under the encryption. After the
// handshake it writes at most stallChunk bytes under one deadline of
// timeout, so that a peer that stops reading fails the write, and one that
// reads slowly does not.
type stallConn struct {
	net.Conn
	timeout time.Duration // zero: no deadline
}

func (c *stallConn) Write(p []byte) (int, error) {
	if c.timeout == 0 {
		return c.Conn.Write(p)
	}
	n := 0
	for n < len(p) {
		if err := c.Conn.SetWriteDeadline(time.Now().Add(c.timeout)); err != nil {
			return n, err
		}
		k, err := c.Conn.Write(p[n:min(len(p), n+stallChunk)])
		n += k
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// RemoteKey returns the peer's identity, established by the handshake.
func (s *Session) RemoteKey() PeerKey { return s.remote }

// Done is closed when the session has ended and its goroutines are gone.
func (s *Session) Done() <-chan struct{} { return s.done }

// Err returns why the session ended, once Done is closed.
func (s *Session) Err() error {
	<-s.done
	return s.err
}

// Close ends the session and waits for its goroutines.
func (s *Session) Close() error {
	s.fail(ErrSessionClosed)
	<-s.done
	return nil
}

// fail ends the session with err (the first error wins).
func (s *Session) fail(err error) {
	s.once.Do(func() {
		s.err = err
		close(s.closing)
		s.conn.Close()
	})
}

// Replicate adds a feed to the session: its channel opens once the peer
// replicates the same feed.
func (s *Session) Replicate(r *Replicator) {
	s.mu.Lock()
	s.ops = append(s.ops, feedOp{r, true})
	s.mu.Unlock()
	s.wake()
}

// Unreplicate removes a feed from the session.
func (s *Session) Unreplicate(r *Replicator) {
	s.mu.Lock()
	s.ops = append(s.ops, feedOp{r, false})
	s.mu.Unlock()
	s.wake()
}

func (s *Session) wake() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

func (s *Session) send(m wire.Message) {
	s.queued.Add(int64(queuedSize(m)))
	s.mu.Lock()
	s.outq = append(s.outq, m)
	s.mu.Unlock()
	select {
	case s.outKick <- struct{}{}:
	default:
	}
}

// queuedSize is what m is counted for while it waits to be written: about
// its size on the wire, and at least what its struct and queue slot cost.
func queuedSize(m wire.Message) int {
	const overhead = 64
	switch m := m.(type) {
	case *wire.Data:
		n := overhead
		if b := m.Block; b != nil {
			n += len(b.Value) + len(b.Nodes)
		}
		if u := m.Upgrade; u != nil {
			n += len(u.Nodes) + len(u.Signature)
		}
		return n
	case *wire.Open:
		return overhead + len(m.DiscoveryKey) + len(m.Capability)
	case *wire.Bitfield:
		return overhead + len(m.Bits)
	case *wire.Extension:
		return overhead + len(m.Name) + len(m.Payload)
	}
	return overhead
}

// written counts n bytes of the queue as written, and tells the loop when
// the queue has drained enough to answer the peer again.
func (s *Session) written(n int) {
	left := s.queued.Add(-int64(n))
	if left < maxQueued/2 && left+int64(n) >= maxQueued/2 {
		select {
		case s.drained <- struct{}{}:
		default:
		}
	}
}

func (s *Session) readLoop() {
	defer s.wg.Done()
	r := wire.NewReader(s.conn)
	for {
		m, err := r.Read()
		if err != nil {
			select {
			case <-s.closing:
			default:
				s.fail(readError(err))
			}
			return
		}
		s.lastRead.Store(time.Now().UnixNano())
		if d, ok := m.(*wire.Data); ok {
			// Hashing the block here, rather than in the loop that stores
			// it, puts a download's two costliest steps on two cores.
			p, value := d.ToProof()
			m = &received{Data: d, proof: feed.Prepare(p, value)}
		}
		select {
		case s.inbox <- m:
		case <-s.closing:
			return
		}
	}
}

// readError says why reading from the peer failed, as the session's error.
func readError(err error) error {
	switch {
	case errors.Is(err, wire.ErrTooLarge), errors.Is(err, wire.ErrMalformed),
		errors.Is(err, noiseconn.ErrDecrypt), errors.Is(err, noiseconn.ErrFrameTooLong):
		return fmt.Errorf("%w: %v", ErrProtocol, err)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		// Unexpected: in the middle of a frame or a message, which a peer
		// that goes away can leave as well as one that breaks off on purpose.
		return fmt.Errorf("swarm: peer closed the connection: %w", err)
	}
	return fmt.Errorf("swarm: receive: %w", err)
}

// received is a Data as readLoop passes it on: with its proof converted and
// its block hashed.
type received struct {
	*wire.Data
	proof feed.ProofData
}

// failSend ends the session after a failed write, blaming the peer when the
// write failed because its frames made this side close the connection, or
// because it stopped reading.
func (s *Session) failSend(err error) {
	if b := s.conn.Broken(); b != nil {
		err = fmt.Errorf("%w: %v", ErrProtocol, b)
	} else if errors.Is(err, os.ErrDeadlineExceeded) {
		err = fmt.Errorf("%w: the peer read nothing for %v", ErrTimeout, 3*s.cfg.KeepAlive)
	} else {
		err = fmt.Errorf("swarm: send: %w", err)
	}
	s.fail(err)
}

// writeLoop sends queued messages, flushing when the queue runs dry, so that
// many small messages share frames and system calls.
func (s *Session) writeLoop() {
	defer s.wg.Done()
	w := wire.NewWriter(s.conn)
	for {
		select {
		case <-s.closing:
			return
		case <-s.outKick:
		}
		for {
			s.mu.Lock()
			q := s.outq
			s.outq = nil
			s.mu.Unlock()
			if len(q) == 0 {
				break
			}
			for _, m := range q {
				if err := w.Write(m); err != nil {
					s.failSend(err)
					return
				}
				s.written(queuedSize(m))
			}
		}
		if err := w.Flush(); err != nil {
			s.failSend(err)
			return
		}
	}
}

// loop owns the protocol state: it handles messages, feed changes and timers.
func (s *Session) loop() {
	defer s.wg.Done()
	defer s.detachAll()
	keepAlive := time.NewTicker(s.cfg.KeepAlive)
	defer keepAlive.Stop()
	expiry := time.NewTicker(max(s.cfg.RequestTimeout/4, time.Millisecond))
	defer expiry.Stop()
	// retry wakes the loop when a channel's pause or a block's cooldown
	// ends (see noBlock), at armed: every channel is looked at then.
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	defer retry.Stop()
	var armed time.Time
	for {
		// With too many of the peer's requests waiting for room in the
		// queue, read no more: the peer's writes back up to it.
		inbox := s.inbox
		if len(s.unanswered) >= maxUnanswered {
			inbox = nil
		}
		select {
		case <-s.closing:
			return
		case m := <-inbox:
			s.lastRecv = time.Now()
			// Take what else has arrived too, so that a stream of blocks is
			// stored in batches, and requests are pumped once for all.
			batch := append(s.batch[:0], m)
			for drained := false; !drained && len(batch) < cap(s.inbox); {
				select {
				case m := <-s.inbox:
					batch = append(batch, m)
				default:
					drained = true
				}
			}
			s.batch = batch
			if err := s.handleAll(batch); err != nil {
				s.fail(err)
				return
			}
		case <-s.kick:
			s.applyAdds()
		case <-s.drained:
			// answer, below, serves what waits.
		case <-retry.C:
			armed, s.sweep = time.Time{}, true // pump, below, asks again
		case now := <-expiry.C:
			if inbox == nil {
				break // answers may wait unread: not the peer's fault
			}
			if err := s.expire(now); err != nil {
				s.fail(err)
				return
			}
		case now := <-keepAlive.C:
			if inbox == nil {
				// Not reading, this side cannot tell a silent peer; the
				// write deadline bounds how long it does not read.
				s.lastRecv = now
			}
			// A loop that fell behind (a loaded machine) has messages
			// waiting that the reader took in time: the peer spoke.
			if read := time.Unix(0, s.lastRead.Load()); read.After(s.lastRecv) {
				s.lastRecv = read
			}
			if now.Sub(s.lastRecv) > 3*s.cfg.KeepAlive {
				s.fail(fmt.Errorf("%w: nothing for %v", ErrTimeout, now.Sub(s.lastRecv).Round(time.Millisecond)))
				return
			}
			if now.Sub(s.lastRecv) > s.cfg.KeepAlive {
				s.send(&wire.Ping{Nonce: uint64(now.UnixNano())})
			}
		}
		s.answer()
		// After a sweep, wake is when the first channel needs the loop
		// again; else it is only the channels looked at, and the timer
		// stays for the others unless wake comes first. A timer that fires
		// early for a channel that no longer needs it costs a sweep.
		swept := s.sweep
		wake := s.pump()
		if swept && !wake.Equal(armed) || !swept && !wake.IsZero() && (armed.IsZero() || wake.Before(armed)) {
			armed = wake
			if wake.IsZero() {
				retry.Stop()
			} else {
				retry.Reset(time.Until(wake))
			}
		}
	}
}

func (s *Session) detachAll() {
	for _, c := range s.channels {
		c.r.detach(s)
	}
}

// feedOp is a Replicate (add) or Unreplicate waiting for the loop.
type feedOp struct {
	r   *Replicator
	add bool
}

// applyAdds carries out Replicate and Unreplicate calls, in their order.
func (s *Session) applyAdds() {
	s.mu.Lock()
	ops := s.ops
	s.ops = nil
	s.mu.Unlock()
	for _, op := range ops {
		r := op.r
		dk := r.f.DiscoveryKey()
		c, exists := s.byKey[dk]
		if !op.add {
			if exists {
				s.closeChannel(c)
				s.send(&wire.Close{Channel: c.local})
			}
			continue
		}
		if exists {
			continue
		}
		s.nextID++
		c = newChannel(r, s.nextID, s.cfg.Window)
		s.channels[c.local] = c
		s.byKey[dk] = c
		s.dirty[c] = true
		r.attach(s)
		s.sendOpen(c)
		if p, ok := s.parked[dk]; ok {
			if err := s.unpark(c, p); err != nil {
				s.fail(err)
				return
			}
		}
	}
}

// park keeps the peer's Open of a feed this side does not replicate (yet).
// An Open of the same feed on another channel replaces it.
func (s *Session) park(m *wire.Open) {
	dk := feed.DiscoveryKey(m.DiscoveryKey)
	if old, ok := s.parked[dk]; ok {
		s.forgetParked(old)
	}
	p := &parkedOpen{open: m}
	s.parked[dk] = p
	s.parkedAt[m.Channel] = p
}

func (s *Session) forgetParked(p *parkedOpen) {
	delete(s.parked, feed.DiscoveryKey(p.open.DiscoveryKey))
	delete(s.parkedAt, p.open.Channel)
	s.parkedSize -= p.size
}

// unpark completes c with the Open the peer sent before c existed, and
// handles what the peer said on the channel meanwhile.
func (s *Session) unpark(c *channel, p *parkedOpen) error {
	s.forgetParked(p)
	if err := s.remoteOpened(c, p.open); err != nil {
		return err
	}
	if p.sync != nil {
		if err := s.handle(p.sync); err != nil {
			return err
		}
	}
	for _, m := range p.held {
		if err := s.handle(m); err != nil {
			return err
		}
	}
	return nil
}

// hold keeps what the peer says on a parked channel: its latest Sync, and
// its Range and Bitfield messages within maxParkedBytes (maxParkedTotal for
// all parked channels), a Range that continues the one before merged with
// it, as a live writer's appends come. A Close forgets the channel.
func (s *Session) hold(p *parkedOpen, m wire.Message) {
	switch m := m.(type) {
	case *wire.Close:
		s.forgetParked(p)
		return
	case *wire.Sync:
		if p.sync != nil && m.Fork != p.sync.Fork {
			// A new history: what the peer held of the old one is void.
			s.parkedSize -= p.size
			p.held, p.size = nil, 0
		}
		p.sync = m
		return
	case *wire.Range:
		if len(p.held) > 0 {
			if last, ok := p.held[len(p.held)-1].(*wire.Range); ok && !last.Drop && !m.Drop && last.Start+last.Length == m.Start {
				last.Length += m.Length
				return
			}
		}
	case *wire.Bitfield:
	default:
		return // nobody asks or answers on a channel not open
	}
	n := queuedSize(m)
	if p.size+n > maxParkedBytes || s.parkedSize+n > maxParkedTotal {
		s.log.Debug("swarm: holdings announced on a channel not open yet dropped", "feed", feed.DiscoveryKey(p.open.DiscoveryKey))
		return
	}
	p.held = append(p.held, m)
	p.size += n
	s.parkedSize += n
}

// dropRequests forgets c's requests in flight, freeing their blocks for
// other sessions.
func (s *Session) dropRequests(c *channel) {
	for id, q := range c.reqs {
		if q.isBlock {
			c.r.release(s, q.block)
		}
		delete(c.reqs, id)
	}
	clear(c.cancelled)
}

// dropUnanswered forgets the peer's requests on c that wait for an answer:
// the channel they were made on closed.
func (s *Session) dropUnanswered(c *channel) {
	s.unanswered = slices.DeleteFunc(s.unanswered, func(m wire.Message) bool {
		q, ok := m.(*wire.Request)
		return ok && q.Channel == c.remote
	})
}

// sendOpen offers c's feed to the peer.
func (s *Session) sendOpen(c *channel) {
	dk := c.f.DiscoveryKey()
	s.send(&wire.Open{Channel: c.local, DiscoveryKey: dk[:], Capability: s.capability(s.conn.Initiator(), c.f.Key())})
}

func (s *Session) closeChannel(c *channel) {
	s.upgradeOver(c)
	s.dropRequests(c)
	delete(s.channels, c.local)
	delete(s.byKey, c.f.DiscoveryKey())
	if c.open {
		s.dropUnanswered(c)
		delete(s.byRemote, c.remote)
	}
	c.r.detach(s)
}

// peerClosed handles the peer's Close: the feed stays replicated on this
// side, its Open already sent, so a new Open from the peer pairs it again.
func (s *Session) peerClosed(c *channel) {
	s.dropRequests(c)
	s.dropUnanswered(c)
	delete(s.byRemote, c.remote)
	s.upgradeOver(c)
	c.open, c.remote, c.noUpgrade = false, 0, false
	c.retry, c.unproven, c.claimsOwn = nil, 0, false
	c.peerFork, c.peerLen, c.heard = 0, 0, false
	c.peerHas.reset()
	c.uncool()
	c.sentAny = false
	s.reportPeer(c)
	clear(c.extSent)
	// Offer the feed again, so that the peer pairs it at once if it
	// replicates the feed again.
	s.sendOpen(c)
	c.r.kick()
}

// reportPeer tells the channel's Replicator what the peer has said of the
// feed, for Update and Delivered.
func (s *Session) reportPeer(c *channel) {
	c.r.notePeer(s, peerHead{open: c.open, heard: c.heard, fork: c.peerFork, length: c.peerLen, held: c.peerHas.prefix})
}

// capability proves knowledge of a feed key on this session, for one role:
// BLAKE2b-256 keyed with the handshake hash over a domain string, the role
// and the key. It reveals nothing about the key, and is worthless on any
// other session.
func (s *Session) capability(initiator bool, key feed.Key) []byte {
	h, _ := blake2b.New256(s.conn.ChannelBinding()) // 64-byte key: valid
	h.Write([]byte("hyperfeed/capability/v1\x00"))
	if initiator {
		h.Write([]byte{1})
	} else {
		h.Write([]byte{2})
	}
	h.Write(key[:])
	return h.Sum(nil)
}

// handle handles one message but Requests, Pings (see answer) and Data
// (see receive).
func (s *Session) handle(m wire.Message) error {
	switch m := m.(type) {
	case *wire.Open:
		return s.opened(m)
	case *wire.Pong:
		return nil // it reset lastRecv: all a Pong is for
	}
	// Every other message names a channel the peer opened.
	c, ok := s.byRemote[channelOf(m)]
	if !ok {
		if p, ok := s.parkedAt[channelOf(m)]; ok {
			s.hold(p, m)
		}
		// Else the peer may have raced a Close; a message for a channel
		// it never opened is harmless to drop.
		return nil
	}
	switch m := m.(type) {
	case *wire.Close:
		s.peerClosed(c)
	case *wire.Sync:
		if m.Fork != c.peerFork || m.Length != c.peerLen {
			c.noUpgrade = false // a new head, which the peer may serve
		}
		if c.heard && m.Fork != c.peerFork {
			// A new history: what the peer held of the old one is void,
			// and so is what this side learnt asking for it. The Ranges
			// that follow this Sync, and those that follow later Syncs of
			// the same fork, are of the new one: kept even while this
			// side is still on another fork, for when it moves.
			c.peerHas.reset()
			c.uncool()
			c.retry = nil
		}
		c.peerFork, c.peerLen, c.heard = m.Fork, m.Length, true
		s.reportPeer(c)
	case *wire.Range:
		if m.Drop {
			c.peerHas.drop(m.Start, m.Start+m.Length)
		} else {
			c.peerHas.add(m.Start, m.Start+m.Length, c.peerLen)
		}
		s.reportPeer(c)
	case *wire.Bitfield:
		c.peerHas.setPage(m.Page, m.Bits, c.peerLen)
		s.reportPeer(c)
	case *wire.NoData:
		q, ok := c.reqs[m.ID]
		if !ok {
			delete(c.cancelled, m.ID)
			return nil
		}
		delete(c.reqs, m.ID)
		s.answered(c, m.ID)
		if q.isBlock {
			c.r.release(s, q.block)
			s.noBlock(c, q.block)
		} else {
			return s.upgradeFailed(c, q, nil, errNoData)
		}
	case *wire.Cancel:
		// Requests are answered in order, and soon: not worth finding one
		// among those waiting.
	case *wire.Extension:
		fn := c.r.extensionHandler(m.Name)
		if fn == nil {
			s.log.Debug("swarm: extension without a handler ignored", "feed", c.f.DiscoveryKey(), "name", m.Name)
			return nil
		}
		// A copy: the handler may keep it, whatever the reader does with
		// its buffers.
		fn(s.remote, bytes.Clone(m.Payload))
	}
	return nil
}

// opened handles the peer's Open.
func (s *Session) opened(m *wire.Open) error {
	dk := feed.DiscoveryKey(m.DiscoveryKey)
	if _, dup := s.byRemote[m.Channel]; dup {
		return fmt.Errorf("%w: channel %d opened twice", ErrProtocol, m.Channel)
	}
	if p, dup := s.parkedAt[m.Channel]; dup && feed.DiscoveryKey(p.open.DiscoveryKey) != dk {
		return fmt.Errorf("%w: channel %d opened twice", ErrProtocol, m.Channel)
	}
	c, ok := s.byKey[dk]
	if !ok && s.cfg.Lookup != nil {
		if r := s.cfg.Lookup(dk); r != nil {
			s.mu.Lock()
			s.ops = append(s.ops, feedOp{r, true})
			s.mu.Unlock()
			s.park(m)
			s.applyAdds()
			return nil
		}
	}
	if ok && c.open {
		return fmt.Errorf("%w: feed %s opened a second time", ErrProtocol, dk)
	}
	if !ok {
		// Not a feed we replicate, or not yet: keep it for Replicate.
		if _, again := s.parked[dk]; !again && len(s.parked) >= maxPendingOpens {
			return fmt.Errorf("%w: more than %d channels opened for unknown feeds", ErrProtocol, maxPendingOpens)
		}
		s.park(m)
		return nil
	}
	return s.remoteOpened(c, m)
}

func channelOf(m wire.Message) uint32 {
	switch m := m.(type) {
	case *wire.Close:
		return m.Channel
	case *wire.Sync:
		return m.Channel
	case *wire.Range:
		return m.Channel
	case *wire.Bitfield:
		return m.Channel
	case *wire.Request:
		return m.Channel
	case *received:
		return m.Channel
	case *wire.NoData:
		return m.Channel
	case *wire.Cancel:
		return m.Channel
	case *wire.Extension:
		return m.Channel
	}
	return 0
}

// remoteOpened completes a channel: the peer's capability must prove it
// holds the feed key. The peer then hears this side's head and holdings,
// and the extension values its feed published.
func (s *Session) remoteOpened(c *channel, m *wire.Open) error {
	want := s.capability(!s.conn.Initiator(), c.f.Key())
	if !hmacEqual(want, m.Capability) {
		return fmt.Errorf("%w: wrong capability for feed %s", ErrProtocol, c.f.DiscoveryKey())
	}
	c.remote, c.open = m.Channel, true
	s.byRemote[m.Channel] = c
	s.dirty[c] = true
	s.reportPeer(c)
	s.announce(c, c.f.State())
	s.sendExtensions(c, c.r.extensionValues())
	return nil
}

// sendExtensions sends extension values on c, in the order they were
// published, but those the peer has.
func (s *Session) sendExtensions(c *channel, vs map[string]publication) {
	names := slices.SortedFunc(maps.Keys(vs), func(a, b string) int { return cmp.Compare(vs[a].seq, vs[b].seq) })
	for _, name := range names {
		v := vs[name]
		if c.extSent[name] == v.seq {
			continue
		}
		set(&c.extSent, name, v.seq)
		s.send(&wire.Extension{Channel: c.local, Name: name, Payload: v.payload})
	}
}

func hmacEqual(a, b []byte) bool {
	if len(a) != len(b) {
		return false
	}
	var v byte
	for i := range a {
		v |= a[i] ^ b[i]
	}
	return v == 0
}

// announce tells the peer what changed in this side's head since it last
// did, and what blocks it holds: all of them at once for a complete feed,
// else the runs it has.
func (s *Session) announce(c *channel, h feed.State) {
	if c.sentAny && h.Fork == c.sentFork && h.Length == c.sentLen {
		return
	}
	from := uint64(0)
	if c.sentAny && h.Fork == c.sentFork {
		from = c.sentLen
	}
	c.sentAny, c.sentFork, c.sentLen = true, h.Fork, h.Length
	s.send(&wire.Sync{Channel: c.local, Fork: h.Fork, Length: h.Length})
	if h.Length > from && h.Complete() {
		s.send(&wire.Range{Channel: c.local, Start: from, Length: h.Length - from})
		return
	}
	if from > 0 {
		return // new blocks of a replica are announced as they arrive
	}
	var start uint64
	run := false
	for i := uint64(0); i <= h.Length; i++ {
		has := i < h.Length && c.f.Has(i)
		switch {
		case has && !run:
			start, run = i, true
		case !has && run:
			s.send(&wire.Range{Channel: c.local, Start: start, Length: i - start})
			run = false
		}
	}
}

// answer serves the peer's Requests and answers its Pings, in the order
// they came, while the queue to the peer has room: a peer that does not
// read its answers gets no more of them. Each run of requests on one
// channel is served at once, as many as the room likely holds.
func (s *Session) answer() {
	for len(s.unanswered) > 0 && s.queued.Load() < maxQueued {
		switch m := s.unanswered[0].(type) {
		case *wire.Ping:
			s.send(&wire.Pong{Nonce: m.Nonce})
			s.unanswered = s.unanswered[1:]
		case *wire.Request:
			c, ok := s.byRemote[m.Channel]
			if !ok {
				s.unanswered = s.unanswered[1:] // a channel never opened
				continue
			}
			n := 1
			for limit := s.runLimit(c); n < len(s.unanswered) && n < limit; n++ {
				if q, ok := s.unanswered[n].(*wire.Request); !ok || q.Channel != m.Channel {
					break
				}
			}
			run := make([]*wire.Request, n)
			for k := range run {
				run[k] = s.unanswered[k].(*wire.Request)
			}
			s.unanswered = s.unanswered[n:]
			s.serve(c, run)
		}
	}
	if len(s.unanswered) == 0 {
		s.unanswered = nil // let go of the backing array
	}
}

// runLimit is how many requests on c to serve at once: as many answers as
// the room left in the queue holds, judged by the largest answer served on
// c and by the feed's average block.
func (s *Session) runLimit(c *channel) int {
	each := c.largest
	if n := c.f.Len(); n > 0 {
		each = max(each, int(c.f.ByteLen()/n))
	}
	room := maxQueued - int(s.queued.Load())
	return min(max(room/max(each, 1), 1), maxRun)
}

// serve answers a run of the peer's requests on c, reading runs of
// consecutive blocks at once.
func (s *Session) serve(c *channel, ms []*wire.Request) {
	reqs := make([]feed.Request, len(ms))
	for k, m := range ms {
		reqs[k] = feed.Request{Fork: m.Fork, Length: m.Length, Upgrade: m.Upgrade}
		if m.Block != nil {
			reqs[k].Block = &feed.BlockRequest{Index: m.Block.Index, Nodes: m.Block.Nodes}
		}
	}
	for k, r := range c.f.ProveMany(reqs) {
		if r.Err != nil {
			s.log.Debug("swarm: cannot serve request", "feed", c.f.DiscoveryKey(), "err", r.Err)
			s.send(&wire.NoData{Channel: c.local, ID: ms[k].ID})
			continue
		}
		d := wire.DataFrom(c.local, ms[k].ID, r.Proof, r.Data)
		c.largest = max(c.largest, queuedSize(d))
		s.send(d)
	}
}

// handleAll handles messages in order, giving each run of Data for one
// channel to the feed as one batch, and setting Requests and Pings aside
// for answer.
func (s *Session) handleAll(ms []wire.Message) error {
	for i := 0; i < len(ms); {
		switch m := ms[i].(type) {
		case *wire.Request, *wire.Ping:
			s.unanswered = append(s.unanswered, m)
			i++
			continue
		case *received:
		default:
			if err := s.handle(m); err != nil {
				return err
			}
			if c, ok := s.byRemote[channelOf(m)]; ok {
				s.dirty[c] = true
			}
			i++
			continue
		}
		d := ms[i].(*received)
		j := i + 1
		for j < len(ms) {
			if e, ok := ms[j].(*received); !ok || e.Channel != d.Channel {
				break
			}
			j++
		}
		c, ok := s.byRemote[d.Channel]
		if ok {
			s.dirty[c] = true
			datas := make([]*received, 0, j-i)
			for _, m := range ms[i:j] {
				datas = append(datas, m.(*received))
			}
			if err := s.receive(c, datas); err != nil {
				return err
			}
		}
		i = j
	}
	return nil
}

// receive applies proofs the peer sent. One that does not verify ends the
// session: the feed stored nothing of it. Late answers to requests that
// timed out are dropped.
func (s *Session) receive(c *channel, ms []*received) error {
	batch := make([]feed.ProofData, 0, len(ms))
	asked := make([]request, 0, len(ms))
	var claimed []uint64
	defer func() {
		for _, i := range claimed {
			c.r.release(s, i)
		}
	}()
	for _, m := range ms {
		q, ok := c.reqs[m.ID]
		if !ok {
			if c.cancelled[m.ID] {
				delete(c.cancelled, m.ID)
				continue
			}
			return fmt.Errorf("%w: data for request %d, which was not made", ErrProtocol, m.ID)
		}
		delete(c.reqs, m.ID)
		s.answered(c, m.ID)
		if q.isBlock {
			claimed = append(claimed, q.block)
			if m.Block != nil && m.Block.Index != q.block {
				return fmt.Errorf("%w: block %d sent for request of block %d", ErrProtocol, m.Block.Index, q.block)
			}
		} else {
			if m.Block != nil {
				return fmt.Errorf("%w: block %d sent for an upgrade request", ErrProtocol, m.Block.Index)
			}
			// Released once the proof is applied, so that the other
			// sessions see the head it brings.
			c.upgrade = false
			defer c.r.releaseUpgrade(s)
		}
		batch = append(batch, m.proof)
		asked = append(asked, q)
	}
	for k, err := range c.f.ApplyProofs(batch) {
		q := asked[k]
		switch {
		case err == nil && q.isBlock:
			c.pausedUntil, c.pause = time.Time{}, 0 // it serves blocks again
		case err == nil:
			// An upgrade without a block applies only if it is newer.
			c.unproven = 0
		case errors.Is(err, feed.ErrInvalidProof), errors.Is(err, feed.ErrBlockTooLarge):
			return fmt.Errorf("%w: %v", ErrProtocol, err)
		case errors.Is(err, feed.ErrStale), errors.Is(err, feed.ErrStaleFork), errors.Is(err, feed.ErrNotAvailable):
			// Stale: an answer overtaken by another peer's. Not available:
			// an upgrade from a length whose roots this sparse replica
			// lacks, as a block request of an old fork gets (the block
			// is asked again on the new one). For an upgrade request,
			// upgradeFailed tells those from a peer that cannot prove
			// its head.
			if !q.isBlock {
				if err := s.upgradeFailed(c, q, batch[k].Proof, err); err != nil {
					return err
				}
			}
		default:
			return fmt.Errorf("swarm: store proof: %w", err)
		}
	}
	return nil
}

// errNoData is why an upgrade failed that the peer answered with NoData.
var errNoData = errors.New("the peer answered NoData")

// upgradeFailed handles an upgrade request the peer answered with NoData,
// or with a proof that did not apply (p, why). If this side's head has
// moved on since it asked, the answer may have been right for the head it
// asked from, and the peer is asked again if its head is still newer.
// Else the peer did not prove the head it announced: it is not asked again
// until it announces another (noUpgrade), and maxUnproven such heads in a
// row end the session. Memory and requests stay bounded whatever the peer
// claims: one request per head it announces.
func (s *Session) upgradeFailed(c *channel, q request, p *merkle.Proof, why error) error {
	s.upgradeOver(c)
	h := c.f.State()
	if h.Fork != q.fork || h.Length != q.length || !c.peerNewer(h) {
		return nil
	}
	if p != nil && p.Upgrade != nil && errors.Is(why, feed.ErrNotAvailable) && !q.hasFrom &&
		p.Fork > h.Fork && p.Upgrade.Start < h.Length {
		// An upgrade to a new fork starts at the prefix both histories
		// share, whose roots this replica lacks unless it holds the blocks
		// under them. It does hold the roots of any length made of its own
		// head's roots, and can verify an upgrade from the longest such
		// length within the shared prefix: the new fork's proof shows that
		// the blocks below it are the same in both histories. Those past it
		// are dropped with the old fork, shared or not.
		c.retry = &upgradeRetry{fork: h.Fork, length: h.Length, from: rootPrefix(h.Length, p.Upgrade.Start)}
		return nil
	}
	c.noUpgrade = true
	c.unproven++
	s.log.Debug("swarm: peer did not prove the head it announced", "feed", c.f.DiscoveryKey(),
		"fork", c.peerFork, "length", c.peerLen, "err", why)
	if c.unproven >= maxUnproven {
		return fmt.Errorf("%w: %d in a row of feed %s, the last fork %d length %d (%v)",
			ErrUnproven, c.unproven, c.f.DiscoveryKey(), c.peerFork, c.peerLen, why)
	}
	return nil
}

// rootPrefix returns the longest length, up to limit, made of the first
// roots of a tree of length blocks (largest first). A feed of that length
// holds these roots whichever blocks it holds, so it can verify an upgrade
// from such a length.
func rootPrefix(length, limit uint64) uint64 {
	var l uint64
	for length > 0 {
		w := uint64(1) << (63 - bits.LeadingZeros64(length))
		if l+w > limit {
			break
		}
		l += w
		length -= w
	}
	return l
}

// noBlock handles the peer's NoData for block i, which it announced it
// holds. It may have failed to read it, and may serve it later: its
// holdings stay as it said them. The block is freed for other peers and
// cools (see blockCooldown); the channel's window halves, and unless a
// pause runs already (this is an answer to a request made before it), the
// channel pauses its block requests, each pause twice the last, until the
// peer serves a block.
func (s *Session) noBlock(c *channel, i uint64) {
	now := time.Now()
	c.window = max(c.window/2, 1)
	if !c.cooling[i] && len(c.cooling) < maxCooling {
		set(&c.cooling, i, true)
		c.coolQueue = append(c.coolQueue, cooled{i, now.Add(blockCooldown)})
	}
	if now.Before(c.pausedUntil) {
		return
	}
	c.pause = min(max(2*c.pause, minPause), maxPause)
	c.pausedUntil = now.Add(c.pause)
	c.r.kick() // other sessions may fetch the block
}

// thaw lets the blocks whose cooldown has ended be asked again.
func (c *channel) thaw(now time.Time) {
	k := 0
	for k < len(c.coolQueue) && !c.coolQueue[k].until.After(now) {
		delete(c.cooling, c.coolQueue[k].block)
		k++
	}
	c.coolQueue = c.coolQueue[k:]
	if len(c.coolQueue) == 0 {
		c.coolQueue = nil // let go of the backing array
	}
}

// uncool forgets the blocks cooling: they were of a history the peer left.
func (c *channel) uncool() {
	clear(c.cooling)
	c.coolQueue = nil
}

// answered notes that the peer answered request id on c: it is serving, so
// its window on c grows back by one, and its strikes are forgiven.
func (s *Session) answered(c *channel, id uint64) {
	s.lastAnswer = s.lastRecv
	s.lastID = max(s.lastID, id)
	s.strikes = 0
	c.window = min(c.window+1, s.cfg.Window)
}

// expire gives up on the requests the peer is not serving: those that have
// waited RequestTimeout while the peer answered nothing for as long, or
// answered a request made later (it answers in order, on every channel at
// once). Each is cancelled, its block freed for other peers and never asked
// of this peer again on this session, and its channel's window is halved.
// A third round of timeouts with no answer in between, or more than
// maxTimedOut in all, ends the session.
func (s *Session) expire(now time.Time) error {
	timeout := s.cfg.RequestTimeout
	stalled := now.Sub(s.lastAnswer) >= timeout
	expired := 0
	for _, c := range s.channels {
		n := 0
		for id, q := range c.reqs {
			if now.Sub(q.sent) < timeout || (!stalled && id > s.lastID) {
				continue
			}
			delete(c.reqs, id)
			set(&c.cancelled, id, true)
			s.send(&wire.Cancel{Channel: c.local, ID: id})
			if q.isBlock {
				c.r.release(s, q.block)
				set(&c.refused, q.block, true)
			} else {
				s.upgradeOver(c)
				c.noUpgrade = true
			}
			n++
		}
		if n > 0 {
			s.dirty[c] = true
			c.window = max(c.window/2, 1)
			expired += n
			c.r.kick() // other sessions may fetch the blocks freed
		}
	}
	if expired == 0 {
		return nil
	}
	s.strikes++
	s.timedOut += expired
	s.log.Debug("swarm: requests timed out", "requests", expired, "strikes", s.strikes)
	if s.strikes >= maxStrikes || s.timedOut > maxTimedOut {
		return fmt.Errorf("%w: %d requests unanswered for %v (%d rounds with no answer)", ErrTimeout, s.timedOut, timeout, s.strikes)
	}
	return nil
}

// pump sends what changed on this side, and requests while the window
// has room, on the channels that may have work (dirty, or all on a sweep).
// It returns when the earliest pause or cooldown that holds back a request
// on those ends, or zero if none does.
func (s *Session) pump() (wake time.Time) {
	s.mu.Lock()
	haves, pubs, poked := s.haves, s.published, s.poked
	s.haves, s.published, s.poked = nil, nil, nil
	s.mu.Unlock()
	for r := range poked {
		if c, ok := s.byKey[r.f.DiscoveryKey()]; ok && c.r == r {
			s.dirty[c] = true
		}
	}
	for _, hv := range haves {
		if c, ok := s.byKey[hv.r.f.DiscoveryKey()]; ok && c.open {
			// The head first: the peer keeps nothing of a Range past the
			// length it knows, and a block that came with an upgrade is
			// past the length this side last announced.
			s.announce(c, c.f.State())
			s.send(&wire.Range{Channel: c.local, Start: hv.index, Length: 1})
		}
	}
	// A channel not open yet gets every value when it opens.
	fresh := map[*channel]map[string]publication{}
	for p := range pubs {
		c, ok := s.byKey[p.r.f.DiscoveryKey()]
		if !ok || !c.open || c.r != p.r {
			continue
		}
		if v, ok := p.r.extensionValue(p.name); ok {
			if fresh[c] == nil {
				fresh[c] = map[string]publication{}
			}
			fresh[c][p.name] = v
		}
	}
	for c, vs := range fresh {
		s.sendExtensions(c, vs)
	}
	look := s.dirty
	if s.sweep {
		look = make(map[*channel]bool, len(s.channels))
		for _, c := range s.channels {
			look[c] = true
		}
		s.sweep = false
	}
	defer clear(s.dirty)
	now := time.Now()
	for c := range look {
		if !c.open || s.channels[c.local] != c {
			continue // not open yet, or closed since it was marked
		}
		h := c.f.State()
		s.announce(c, h)
		// A replica always follows the newest head a peer has, so Len
		// tracks the writer.
		if !c.peerNewer(h) {
			c.unproven = 0 // this side has verified what the peer claimed
		} else if !c.upgrade && !c.noUpgrade {
			if until := s.askUpgrade(c, h, now); !until.IsZero() {
				wake = earliest(wake, until)
			}
		}
		c.thaw(now)
		if len(c.coolQueue) > 0 {
			wake = earliest(wake, c.coolQueue[0].until)
		}
		room := c.window - len(c.reqs)
		if room <= 0 || c.peerFork != h.Fork {
			continue
		}
		if now.Before(c.pausedUntil) {
			wake = earliest(wake, c.pausedUntil)
			continue
		}
		if h.Complete() {
			continue // nothing to ask for until the head moves
		}
		claimed := c.r.claim(s, room, h.Length, c.asks)
		for k, r := range c.f.BlockRequests(claimed) {
			i := claimed[k]
			s.request(c, h, &wire.Request{Block: &wire.BlockRequest{Index: i, Nodes: r.Block.Nodes}}, request{block: i, isBlock: true})
		}
	}
	return wake
}

func earliest(a, b time.Time) time.Time {
	if a.IsZero() || b.Before(a) {
		return b
	}
	return a
}

// askUpgrade asks the peer for its head, newer than this side's (h), unless
// another session of the feed is asking its own peer (see upgradeLease):
// then it returns when it may ask at the latest.
//
// A writable feed asks nothing: it takes no proofs, and no peer can hold a
// newer head of it unless the feed's key signs elsewhere too (a copied
// key), or this writer lost appends it had signed and sent (without
// feed.Options.Sync, a power loss can take them). The claim is logged,
// once per channel, and the peer stays connected: the writer cannot tell
// the cases apart without taking the proof, and the peer costs it nothing
// more than any other.
func (s *Session) askUpgrade(c *channel, h feed.State, now time.Time) (wake time.Time) {
	if c.f.Writable() {
		if !c.claimsOwn {
			c.claimsOwn = true
			s.log.Warn("swarm: peer claims a newer head of a feed this side writes", "feed", c.f.DiscoveryKey(),
				"fork", h.Fork, "length", h.Length, "peerFork", c.peerFork, "peerLength", c.peerLen)
		}
		return time.Time{}
	}
	if ok, until := c.r.claimUpgrade(s, now); !ok {
		return until // another session is asking its peer
	}
	var q request
	if r := c.retry; r != nil {
		c.retry = nil
		if r.fork == h.Fork && r.length == h.Length {
			q.from, q.hasFrom = r.from, true
		}
	}
	s.request(c, h, &wire.Request{Upgrade: true}, q)
	c.upgrade = true
	c.r.upgrades.Add(1)
	return time.Time{}
}

// upgradeOver notes that c's upgrade request, if any, is over: answered,
// failed, timed out, or dropped with the channel.
func (s *Session) upgradeOver(c *channel) {
	if c.upgrade {
		c.upgrade = false
		c.r.releaseUpgrade(s)
	}
}

// request sends m, made from this side's head h (from a shorter length if
// q says so), and remembers it as q until answered.
func (s *Session) request(c *channel, h feed.State, m *wire.Request, q request) {
	s.nextReq++
	m.Channel, m.ID, m.Fork, m.Length = c.local, s.nextReq, h.Fork, h.Length
	if q.hasFrom {
		m.Length = q.from
	}
	q.sent, q.fork, q.length = time.Now(), h.Fork, h.Length
	set(&c.reqs, m.ID, q)
	s.send(m)
}
