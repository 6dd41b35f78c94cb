package swarm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/hyperfeed/hyperfeed/feed"
	"github.com/hyperfeed/hyperfeed/internal/noiseconn"
	"github.com/hyperfeed/hyperfeed/internal/wire"
	"golang.org/x/crypto/blake2b"
)

// Errors ending a session, wrapped with detail.
var (
	// ErrProtocol: the peer broke the protocol (a malformed message, a bad
	// capability, a proof that does not verify).
	ErrProtocol = errors.New("swarm: peer broke the protocol")
	// ErrTimeout: the peer stopped answering.
	ErrTimeout = errors.New("swarm: peer timed out")
	// ErrSessionClosed: the session was closed locally.
	ErrSessionClosed = errors.New("swarm: session closed")
)

// SessionConfig configures a session. The zero value works but for KeyPair.
type SessionConfig struct {
	KeyPair KeyPair
	// Secret is the network secret (32 bytes) both peers must hold, or nil.
	Secret []byte
	// Window is how many requests may be in flight to the peer at once;
	// default 512.
	Window int
	// KeepAlive is how often a quiet session pings; after three intervals
	// without a message from the peer, the session ends with ErrTimeout.
	// Default 5 s.
	KeepAlive time.Duration
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
	if c.HandshakeTimeout <= 0 {
		c.HandshakeTimeout = 10 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

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

	mu      sync.Mutex // guards ops, haves and outq
	ops     []feedOp
	haves   []have
	outq    []wire.Message
	outKick chan struct{}

	// Owned by the loop goroutine.
	channels    map[uint32]*channel              // by local id
	byRemote    map[uint32]*channel              // by the peer's id
	byKey       map[feed.DiscoveryKey]*channel   // by discovery key
	remoteOpens map[feed.DiscoveryKey]*wire.Open // peer opened a feed we have not (yet)
	nextID      uint32
	nextReq     uint64
	lastRecv    time.Time
	batch       []wire.Message
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
	peerHas  holdings // blocks the peer says it holds
	reqs     map[uint64]request
	upgrade  bool // an upgrade request is in flight
	// What this side last told the peer of its head.
	sentFork, sentLen uint64
	sentAny           bool
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

type request struct {
	block   uint64
	isBlock bool
}

// NewSession runs the Noise handshake on conn (initiator is the side that
// dialled) and starts replicating. The session owns conn from here on.
func NewSession(ctx context.Context, conn net.Conn, initiator bool, cfg SessionConfig) (*Session, error) {
	cfg.defaults()
	hctx, cancel := context.WithTimeout(ctx, cfg.HandshakeTimeout)
	defer cancel()
	nc, err := noiseconn.Handshake(hctx, conn, initiator, noiseconn.Config{KeyPair: cfg.KeyPair.noise(), Secret: cfg.Secret})
	if err != nil {
		return nil, fmt.Errorf("swarm: %w", err)
	}
	s := &Session{
		cfg:         cfg,
		conn:        nc,
		remote:      PeerKey(nc.RemoteKey()),
		inbox:       make(chan wire.Message, 256),
		kick:        make(chan struct{}, 1),
		closing:     make(chan struct{}),
		done:        make(chan struct{}),
		outKick:     make(chan struct{}, 1),
		channels:    map[uint32]*channel{},
		byRemote:    map[uint32]*channel{},
		byKey:       map[feed.DiscoveryKey]*channel{},
		remoteOpens: map[feed.DiscoveryKey]*wire.Open{},
		lastRecv:    time.Now(),
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
	s.mu.Lock()
	s.outq = append(s.outq, m)
	s.mu.Unlock()
	select {
	case s.outKick <- struct{}{}:
	default:
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
				if errors.Is(err, wire.ErrTooLarge) || errors.Is(err, wire.ErrMalformed) || errors.Is(err, noiseconn.ErrDecrypt) || errors.Is(err, noiseconn.ErrFrameTooLong) {
					err = fmt.Errorf("%w: %v", ErrProtocol, err)
				} else if errors.Is(err, io.EOF) {
					err = fmt.Errorf("swarm: peer closed the connection: %w", err)
				}
				s.fail(err)
			}
			return
		}
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

// received is a Data as readLoop passes it on: with its proof converted and
// its block hashed.
type received struct {
	*wire.Data
	proof feed.ProofData
}

// failSend ends the session after a failed write, blaming the peer when the
// write failed because its frames made this side close the connection.
func (s *Session) failSend(err error) {
	if b := s.conn.Broken(); b != nil {
		err = fmt.Errorf("%w: %v", ErrProtocol, b)
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
	tick := time.NewTicker(s.cfg.KeepAlive)
	defer tick.Stop()
	for {
		select {
		case <-s.closing:
			return
		case m := <-s.inbox:
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
		case now := <-tick.C:
			if now.Sub(s.lastRecv) > 3*s.cfg.KeepAlive {
				s.fail(fmt.Errorf("%w: nothing for %v", ErrTimeout, now.Sub(s.lastRecv).Round(time.Millisecond)))
				return
			}
			if now.Sub(s.lastRecv) > s.cfg.KeepAlive {
				s.send(&wire.Ping{Nonce: uint64(now.UnixNano())})
			}
		}
		s.pump()
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
		c = &channel{r: r, f: r.f, local: s.nextID, reqs: map[uint64]request{}}
		s.channels[c.local] = c
		s.byKey[dk] = c
		r.attach(s)
		s.sendOpen(c)
		if o, ok := s.remoteOpens[dk]; ok {
			delete(s.remoteOpens, dk)
			if err := s.remoteOpened(c, o); err != nil {
				s.fail(err)
				return
			}
		}
	}
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
}

// sendOpen offers c's feed to the peer.
func (s *Session) sendOpen(c *channel) {
	dk := c.f.DiscoveryKey()
	s.send(&wire.Open{Channel: c.local, DiscoveryKey: dk[:], Capability: s.capability(s.conn.Initiator(), c.f.Key())})
}

func (s *Session) closeChannel(c *channel) {
	s.dropRequests(c)
	delete(s.channels, c.local)
	delete(s.byKey, c.f.DiscoveryKey())
	if c.open {
		delete(s.byRemote, c.remote)
	}
	c.r.detach(s)
}

// peerClosed handles the peer's Close: the feed stays replicated on this
// side, its Open already sent, so a new Open from the peer pairs it again.
func (s *Session) peerClosed(c *channel) {
	s.dropRequests(c)
	delete(s.byRemote, c.remote)
	c.open, c.remote, c.upgrade = false, 0, false
	c.peerFork, c.peerLen = 0, 0
	c.peerHas.reset()
	c.sentAny = false
	// Offer the feed again, so that the peer pairs it at once if it
	// replicates the feed again.
	s.sendOpen(c)
	c.r.kick()
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

func (s *Session) handle(m wire.Message) error {
	switch m := m.(type) {
	case *wire.Ping:
		s.send(&wire.Pong{Nonce: m.Nonce})
		return nil
	case *wire.Pong:
		return nil
	case *wire.Open:
		dk := feed.DiscoveryKey(m.DiscoveryKey)
		if _, dup := s.byRemote[m.Channel]; dup {
			return fmt.Errorf("%w: channel %d opened twice", ErrProtocol, m.Channel)
		}
		c, ok := s.byKey[dk]
		if !ok && s.cfg.Lookup != nil {
			if r := s.cfg.Lookup(dk); r != nil {
				s.mu.Lock()
				s.ops = append(s.ops, feedOp{r, true})
				s.mu.Unlock()
				s.remoteOpens[dk] = m
				s.applyAdds()
				return nil
			}
		}
		if ok && c.open {
			return fmt.Errorf("%w: feed %s opened a second time", ErrProtocol, dk)
		}
		if !ok {
			// Not a feed we replicate, or not yet: keep it for Replicate.
			if _, again := s.remoteOpens[dk]; !again && len(s.remoteOpens) >= maxPendingOpens {
				return fmt.Errorf("%w: more than %d channels opened for unknown feeds", ErrProtocol, maxPendingOpens)
			}
			s.remoteOpens[dk] = m
			return nil
		}
		return s.remoteOpened(c, m)
	}
	// Every other message names a channel the peer opened.
	c, ok := s.byRemote[channelOf(m)]
	if cl, isClose := m.(*wire.Close); isClose && !ok {
		// Closing a channel for a feed this side does not replicate frees
		// its place among the pending opens.
		for dk, o := range s.remoteOpens {
			if o.Channel == cl.Channel {
				delete(s.remoteOpens, dk)
			}
		}
		return nil
	}
	if !ok {
		// The peer may have raced a Close; a message for a channel it never
		// opened is harmless to drop.
		return nil
	}
	switch m := m.(type) {
	case *wire.Close:
		s.peerClosed(c)
	case *wire.Sync:
		c.peerFork, c.peerLen = m.Fork, m.Length
		if m.Fork > c.f.Fork() {
			c.peerHas.reset() // a new history: what the peer held is void
		}
	case *wire.Range:
		if m.Drop {
			c.peerHas.drop(m.Start, m.Start+m.Length)
		} else {
			c.peerHas.add(m.Start, m.Start+m.Length, c.peerLen)
		}
	case *wire.Bitfield:
		c.peerHas.setPage(m.Page, m.Bits, c.peerLen)
	case *wire.Request:
		s.serve(c, []*wire.Request{m})
	case *received:
		return s.receive(c, []*received{m})
	case *wire.NoData:
		q, ok := c.reqs[m.ID]
		if !ok {
			return nil
		}
		delete(c.reqs, m.ID)
		if q.isBlock {
			c.r.release(s, q.block)
			c.peerHas.drop(q.block, q.block+1)
		} else {
			c.upgrade = false
		}
	case *wire.Cancel:
		// Requests are answered at once; nothing is queued to cancel.
	}
	return nil
}

// maxPendingOpens bounds the channels a peer may open for feeds this side
// does not replicate.
const maxPendingOpens = 1024

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
	}
	return 0
}

// remoteOpened completes a channel: the peer's capability must prove it
// holds the feed key.
func (s *Session) remoteOpened(c *channel, m *wire.Open) error {
	want := s.capability(!s.conn.Initiator(), c.f.Key())
	if !hmacEqual(want, m.Capability) {
		return fmt.Errorf("%w: wrong capability for feed %s", ErrProtocol, c.f.DiscoveryKey())
	}
	c.remote, c.open = m.Channel, true
	s.byRemote[m.Channel] = c
	s.announce(c)
	return nil
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
func (s *Session) announce(c *channel) {
	h := c.f.Head()
	if c.sentAny && h.Fork == c.sentFork && h.Length == c.sentLen {
		return
	}
	from := uint64(0)
	if c.sentAny && h.Fork == c.sentFork {
		from = c.sentLen
	}
	c.sentAny, c.sentFork, c.sentLen = true, h.Fork, h.Length
	s.send(&wire.Sync{Channel: c.local, Fork: h.Fork, Length: h.Length})
	if h.Length > from && c.f.Downloaded() == h.Length {
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

// serve answers a peer's requests, reading runs of consecutive blocks at
// once.
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
		s.send(wire.DataFrom(c.local, ms[k].ID, r.Proof, r.Data))
	}
}

// handleAll handles messages in order, giving each run of Data for one
// channel to the feed as one batch.
func (s *Session) handleAll(ms []wire.Message) error {
	for i := 0; i < len(ms); {
		if q, ok := ms[i].(*wire.Request); ok {
			j := i + 1
			for j < len(ms) {
				if r, ok := ms[j].(*wire.Request); !ok || r.Channel != q.Channel {
					break
				}
				j++
			}
			if c, ok := s.byRemote[q.Channel]; ok {
				reqs := make([]*wire.Request, 0, j-i)
				for _, m := range ms[i:j] {
					reqs = append(reqs, m.(*wire.Request))
				}
				s.serve(c, reqs)
			}
			i = j
			continue
		}
		d, ok := ms[i].(*received)
		if !ok {
			if err := s.handle(ms[i]); err != nil {
				return err
			}
			i++
			continue
		}
		j := i + 1
		for j < len(ms) {
			if e, ok := ms[j].(*received); !ok || e.Channel != d.Channel {
				break
			}
			j++
		}
		c, ok := s.byRemote[d.Channel]
		if ok {
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
// session: the feed stored nothing of it.
func (s *Session) receive(c *channel, ms []*received) error {
	batch := make([]feed.ProofData, 0, len(ms))
	var claimed []uint64
	defer func() {
		for _, i := range claimed {
			c.r.release(s, i)
		}
	}()
	for _, m := range ms {
		q, ok := c.reqs[m.ID]
		if !ok {
			return fmt.Errorf("%w: data for request %d, which was not made", ErrProtocol, m.ID)
		}
		delete(c.reqs, m.ID)
		if q.isBlock {
			claimed = append(claimed, q.block)
			if m.Block != nil && m.Block.Index != q.block {
				return fmt.Errorf("%w: block %d sent for request of block %d", ErrProtocol, m.Block.Index, q.block)
			}
		} else {
			c.upgrade = false
		}
		batch = append(batch, m.proof)
	}
	for _, err := range c.f.ApplyProofs(batch) {
		switch {
		case err == nil:
		case errors.Is(err, feed.ErrStale), errors.Is(err, feed.ErrStaleFork):
			// An answer overtaken by another peer's: not the peer's fault.
		case errors.Is(err, feed.ErrNotAvailable):
			// An upgrade from a length whose roots this sparse replica lacks.
		case errors.Is(err, feed.ErrInvalidProof), errors.Is(err, feed.ErrBlockTooLarge):
			return fmt.Errorf("%w: %v", ErrProtocol, err)
		default:
			return fmt.Errorf("swarm: store proof: %w", err)
		}
	}
	return nil
}

// pump sends requests while the window has room.
func (s *Session) pump() {
	s.mu.Lock()
	haves := s.haves
	s.haves = nil
	s.mu.Unlock()
	for _, hv := range haves {
		if c, ok := s.byKey[hv.r.f.DiscoveryKey()]; ok && c.open {
			s.send(&wire.Range{Channel: c.local, Start: hv.index, Length: 1})
		}
	}
	for _, c := range s.channels {
		if !c.open {
			continue
		}
		s.announce(c)
		// A replica always follows the newest head a peer has, so Len
		// tracks the writer.
		h := c.f.Head()
		if !c.upgrade && (c.peerFork > h.Fork || (c.peerFork == h.Fork && c.peerLen > h.Length)) {
			s.request(c, &wire.Request{Upgrade: true}, request{})
			c.upgrade = true
		}
		room := s.cfg.Window - len(c.reqs)
		if room <= 0 || c.peerFork != h.Fork {
			continue
		}
		claimed := c.r.claim(s, room, h.Length, c.peerHas.get)
		for k, r := range c.f.BlockRequests(claimed) {
			i := claimed[k]
			s.request(c, &wire.Request{Block: &wire.BlockRequest{Index: i, Nodes: r.Block.Nodes}}, request{block: i, isBlock: true})
		}
	}
}

func (s *Session) request(c *channel, m *wire.Request, q request) {
	s.nextReq++
	h := c.f.Head()
	m.Channel, m.ID, m.Fork, m.Length = c.local, s.nextReq, h.Fork, h.Length
	c.reqs[m.ID] = q
	s.send(m)
}
