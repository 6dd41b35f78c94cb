package swarm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hyperfeed/hyperfeed/feed"
	"github.com/hyperfeed/hyperfeed/internal/watch"
)

// ErrClosed is returned by a Swarm that was closed.
var ErrClosed = errors.New("swarm: closed")

// Config configures a Swarm. The zero value works: a fresh identity, a
// listener on every interface, no discovery (add peers with Connect or
// Dial).
type Config struct {
	// KeyPair is this peer's identity; zero means a fresh one, so keep it
	// (LoadOrCreateKeyPair) for an identity that survives restarts.
	KeyPair KeyPair
	// Secret is the network secret (32 bytes): peers without it cannot
	// connect. Nil means an open network.
	Secret []byte
	// ListenAddr is where to accept connections; default ":0" (every
	// interface, a free port).
	ListenAddr string
	// Listener and Dial, if set, replace TCP: the swarm accepts
	// connections on Listener (and closes it) and dials peers' addresses
	// with Dial. Tests run swarms over an in-memory network with them.
	Listener net.Listener
	Dial     func(ctx context.Context, addr string) (net.Conn, error)
	// Discovery finds peers under the topics the swarm joins.
	Discovery []Discovery
	// Firewall, if set, is asked about every peer once its identity is
	// known; returning false refuses the peer.
	Firewall func(PeerKey) bool
	// Window, KeepAlive and RequestTimeout are passed to every session;
	// see SessionConfig.
	Window         int
	KeepAlive      time.Duration
	RequestTimeout time.Duration
	// ReconnectMin and ReconnectMax bound the backoff between dials to a
	// peer; defaults 100 ms and 30 s.
	ReconnectMin, ReconnectMax time.Duration
	// DialTimeout bounds a TCP connect and handshake, and an inbound
	// connection's handshake; default 10 s.
	DialTimeout time.Duration
	// MaxHandshakes bounds the inbound connections whose handshake is in
	// progress at once; default 64. At the bound the swarm accepts no more
	// until one finishes (or fails, or takes DialTimeout), so a storm of
	// connections waits in the kernel's listen backlog, and is refused past
	// it, instead of costing a goroutine and a handshake each. Dials are not
	// counted: the swarm dials each address from one goroutine at most.
	MaxHandshakes int
	Logger        *slog.Logger
}

func (c *Config) defaults() error {
	if c.KeyPair.Public.IsZero() {
		kp, err := GenerateKeyPair()
		if err != nil {
			return err
		}
		c.KeyPair = kp
	}
	if c.ListenAddr == "" {
		c.ListenAddr = ":0"
	}
	if c.ReconnectMin <= 0 {
		c.ReconnectMin = 100 * time.Millisecond
	}
	if c.ReconnectMax <= 0 {
		c.ReconnectMax = 30 * time.Second
	}
	if c.DialTimeout <= 0 {
		c.DialTimeout = 10 * time.Second
	}
	if c.MaxHandshakes <= 0 {
		c.MaxHandshakes = 64
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

// Swarm connects to peers, keeps one encrypted session per peer, and
// replicates feeds over them: those given to Replicate, and any feed of its
// Store that a peer asks for by discovery key (and proves it knows the key).
type Swarm struct {
	cfg   Config
	store *feed.Store
	ln    net.Listener
	log   *slog.Logger

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu       sync.Mutex
	closed   bool
	sessions map[PeerKey]*Session
	reps     map[feed.DiscoveryKey]*Replicator
	topics   map[Topic]bool
	dialing  map[netip.AddrPort]*dialer
	watchers map[*watcher]bool

	// handshakes holds a token for each inbound connection accepted whose
	// handshake has not ended: at most Config.MaxHandshakes.
	handshakes chan struct{}
	// handshaking counts the inbound handshakes in progress, for tests.
	handshaking atomic.Int32
}

// New starts a swarm on store (which may be nil: then only the feeds given
// to Replicate are served) and listens for peers.
func New(store *feed.Store, cfg Config) (*Swarm, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	ln := cfg.Listener
	if ln == nil {
		var err error
		if ln, err = net.Listen("tcp", cfg.ListenAddr); err != nil {
			return nil, fmt.Errorf("swarm: listen: %w", err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Swarm{
		cfg: cfg, store: store, ln: ln, ctx: ctx, cancel: cancel,
		log:      cfg.Logger.With("self", cfg.KeyPair.Public.String()[:12]),
		sessions: map[PeerKey]*Session{},
		reps:     map[feed.DiscoveryKey]*Replicator{},
		topics:   map[Topic]bool{},
		dialing:  map[netip.AddrPort]*dialer{},
		watchers: map[*watcher]bool{},

		handshakes: make(chan struct{}, cfg.MaxHandshakes),
	}
	s.wg.Go(s.acceptLoop)
	return s, nil
}

// Key returns this peer's identity.
func (s *Swarm) Key() PeerKey { return s.cfg.KeyPair.Public }

// Addr returns the address the swarm listens on.
func (s *Swarm) Addr() net.Addr { return s.ln.Addr() }

// Port returns the port the swarm listens on (0 if its Listener has no
// TCP address).
func (s *Swarm) Port() int {
	if a, ok := s.ln.Addr().(*net.TCPAddr); ok {
		return a.Port
	}
	if ap, err := netip.ParseAddrPort(s.ln.Addr().String()); err == nil {
		return int(ap.Port())
	}
	return 0
}

// Replicate replicates f with every peer that has it too, now and later,
// and joins f's discovery key as a topic. It returns f's Replicator, for
// downloads.
func (s *Swarm) Replicate(f *feed.Feed) (*Replicator, error) {
	r, err := s.replicator(f)
	if err != nil {
		return nil, err
	}
	return r, s.Join(Topic(f.DiscoveryKey()))
}

// Attach replicates f with every peer that has it too, over the
// connections this swarm makes for its topics, without joining f's own
// topic: for feeds learnt of through another feed, as the usersession
// package learns of device feeds, where a topic each would cost an
// announcement each.
func (s *Swarm) Attach(f *feed.Feed) (*Replicator, error) { return s.replicator(f) }

func (s *Swarm) replicator(f *feed.Feed) (*Replicator, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	if r, ok := s.reps[f.DiscoveryKey()]; ok {
		return r, nil
	}
	r := NewReplicator(f)
	s.reps[f.DiscoveryKey()] = r
	for _, ss := range s.sessions {
		ss.Replicate(r)
	}
	return r, nil
}

// Download fetches blocks [start, end) of f from peers (end = Live follows
// the feed for ever). f is replicated if it was not yet.
func (s *Swarm) Download(f *feed.Feed, start, end uint64) (*Download, error) {
	r, err := s.Replicate(f)
	if err != nil {
		return nil, err
	}
	return r.Download(start, end), nil
}

// lookup serves a peer's request for a feed this swarm does not replicate
// yet: the store's, if it holds it.
func (s *Swarm) lookup(dk feed.DiscoveryKey) *Replicator {
	s.mu.Lock()
	r, ok := s.reps[dk]
	s.mu.Unlock()
	if ok || s.store == nil {
		return r
	}
	f, err := s.store.Find(dk)
	if err != nil {
		return nil
	}
	r, err = s.replicator(f)
	if err != nil {
		return nil
	}
	return r
}

// Join announces this peer under topic and connects to the peers that
// discovery finds under it.
func (s *Swarm) Join(topic Topic) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	if s.topics[topic] {
		s.mu.Unlock()
		return nil
	}
	s.topics[topic] = true
	s.mu.Unlock()
	var errs []error
	for _, d := range s.cfg.Discovery {
		found := s.found
		if _, ok := d.(*Static); ok {
			// A Static reports each address once, where MDNS reports its
			// peers again and again: a loop that gave up on one would not
			// be started again, so they are dialled as Connect's are.
			found = s.foundStatic
		}
		errs = append(errs, d.Join(topic, s.Port(), found))
	}
	return errors.Join(errs...)
}

// found is called by discovery; it must not block.
func (s *Swarm) found(c Candidate) {
	if c.Key == s.Key() {
		return
	}
	s.dial(c.Addr, false, c.Key)
}

// foundStatic is found for a Static.
func (s *Swarm) foundStatic(c Candidate) { s.dial(c.Addr, true, c.Key) }

// Connect keeps connecting to addr, a peer address from configuration: it
// is dialled now, and again with backoff whenever a dial fails or the
// session ends, until Forget or Close. While a session with the peer at
// addr is up, whichever side dialled it, addr is not dialled again: a
// redial would only make a second connection for one side or the other to
// refuse, or to replace the working one. Connecting to an address that Dial
// or discovery is dialling already makes that dialling persistent.
//
// addr is "ip:port", or "host:port" with the name resolved now (a peer that
// moves must be connected to anew).
func (s *Swarm) Connect(addr string) error {
	ap, err := parseAddr("connect", addr)
	if err != nil {
		return err
	}
	return s.dial(ap, true, PeerKey{})
}

// Dial connects to addr as to a peer that discovery found, for addresses
// learnt from data (a peer's announcement, a record) rather than from
// configuration: it redials with backoff when the session ends, as Connect
// does, but gives up after a few failed dials in a row, so that an address
// the peer has left is not dialled for ever; and when it finds a session
// with the peer already up (the peer dialled this side), it dials nothing,
// and stops once that session ends. Dial does nothing if addr is being
// dialled already. addr is as Connect takes it.
func (s *Swarm) Dial(addr string) error {
	ap, err := parseAddr("dial", addr)
	if err != nil {
		return err
	}
	return s.dial(ap, false, PeerKey{})
}

// Forget stops dialling addr, whether Connect, Dial or discovery started
// it: a dial in progress is abandoned, and a wait before the next one ends
// at once. A session established with the peer at addr is left alone: it
// runs until it ends for its own reasons, and is then not redialled from
// this side. Discovery that reports addr again dials it anew. Forgetting an
// address not being dialled does nothing. addr is as Connect takes it; the
// only error is one parsing it.
func (s *Swarm) Forget(addr string) error {
	ap, err := parseAddr("forget", addr)
	if err != nil {
		return err
	}
	s.mu.Lock()
	d := s.dialing[ap]
	delete(s.dialing, ap)
	s.mu.Unlock()
	if d != nil {
		d.cancel()
	}
	return nil
}

// parseAddr parses an address as Connect, Dial and Forget take it.
func parseAddr(op, addr string) (netip.AddrPort, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		tcp, rerr := net.ResolveTCPAddr("tcp", addr)
		if rerr != nil {
			return netip.AddrPort{}, fmt.Errorf("swarm: %s %q: %w", op, addr, rerr)
		}
		ap = tcp.AddrPort()
	}
	// Unmapped, as discovery reports addresses, so that an address is one
	// dial loop however it was learnt.
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), nil
}

// maxDialFailures is how many failed dials in a row end a dial loop that is
// not persistent (Dial, discovery).
const maxDialFailures = 5

// An Accept that fails for another reason than the listener closing (out of
// file descriptors, a connection aborted before it was accepted) is retried
// after a pause, from acceptRetryMin doubling up to acceptRetryMax, as
// net/http's Server does: the condition is usually brief, and giving up
// would stop the swarm accepting for good.
const (
	acceptRetryMin = 5 * time.Millisecond
	acceptRetryMax = time.Second
)

// dialer is one address's dial loop. ctx, cancel and done are set once;
// the other fields are guarded by Swarm.mu.
type dialer struct {
	ctx    context.Context // ends with the swarm, or when the address is forgotten
	cancel context.CancelFunc
	done   chan struct{} // closed when the loop has returned
	// persistent loops (Connect) never give up; the others give up after
	// maxDialFailures failed dials in a row.
	persistent bool
	// waiting is true while the loop waits for a session with its peer to
	// end, its own or another: it does not dial meanwhile. Tests read it to
	// know that a loop has settled.
	waiting bool
}

// dial starts a dial loop for addr unless one runs; persistent makes a
// running one persistent. peer, if not zero, is who discovery says listens
// at addr.
func (s *Swarm) dial(addr netip.AddrPort, persistent bool, peer PeerKey) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	if d, ok := s.dialing[addr]; ok {
		d.persistent = d.persistent || persistent
		return nil
	}
	if peer.IsZero() {
		// A session dialled to addr by an earlier loop, since forgotten,
		// names the peer there.
		for k, sess := range s.sessions {
			if sess.conn.Initiator() && sess.conn.RemoteAddr().String() == addr.String() {
				peer = k
				break
			}
		}
	}
	ctx, cancel := context.WithCancel(s.ctx)
	d := &dialer{ctx: ctx, cancel: cancel, done: make(chan struct{}), persistent: persistent}
	s.dialing[addr] = d
	s.wg.Go(func() {
		defer close(d.done)
		defer func() {
			s.mu.Lock()
			if s.dialing[addr] == d {
				delete(s.dialing, addr)
			}
			s.mu.Unlock()
			cancel()
		}()
		s.dialLoop(d, addr, peer)
	})
	return nil
}

// dialLoop dials addr until d ends (Forget, Close) or, unless persistent,
// gives up. After a failed dial, or once its session ends, it waits a
// backoff, doubling from ReconnectMin to ReconnectMax and jittered so that
// peers that lost each other at once do not redial in step, and dials
// again.
//
// It never dials while a session with the peer at addr is up, whichever
// side dialled it: when both peers dial each other at once, the side whose
// connection lost sees it end (as a duplicate, or with EOF when the peer
// dropped it first), and a redial then would make yet another connection to
// be refused, or, from the peer with the smaller key, replace the working
// one. So the loop waits for that session to end instead: then a persistent
// loop dials again, and one that is not ends, since the peer's own dialling
// (or discovery) covers it. peer is who listens at addr, once known: the
// handshake says so, even on a connection the swarm then refuses. An
// address where this swarm itself answers is not dialled again.
func (s *Swarm) dialLoop(d *dialer, addr netip.AddrPort, peer PeerKey) {
	backoff, failures := s.cfg.ReconnectMin, 0
	for {
		up := s.live(peer)
		if up == nil {
			started := time.Now()
			sess, key, err := s.dialOnce(d.ctx, addr)
			if key == s.Key() {
				// addr is this swarm's own (a list of peers shared by all
				// of them): idle until forgotten, so that the address
				// reported again is not dialled again.
				s.log.Debug("swarm: not dialling own address", "addr", addr)
				s.await(d, nil)
				return
			}
			if !key.IsZero() {
				peer = key
			}
			if err == nil {
				if !s.await(d, sess) {
					return
				}
				err = sess.Err()
				if time.Since(started) > 10*s.cfg.ReconnectMin {
					backoff, failures = s.cfg.ReconnectMin, 0 // it worked for a while
				}
			}
			if d.ctx.Err() != nil {
				return
			}
			if up = s.live(peer); up == nil {
				failures++
				if failures >= maxDialFailures && s.giveUp(d, addr) {
					s.log.Debug("swarm: giving up on peer", "addr", addr, "err", err)
					return
				}
				s.log.Debug("swarm: reconnecting", "addr", addr, "in", backoff, "err", err)
			}
		}
		if up != nil {
			if !s.await(d, up) || s.giveUp(d, addr) {
				return
			}
			// The peer was there until now.
			backoff, failures = s.cfg.ReconnectMin, 0
		}
		if !sleep(d.ctx, jitter(backoff)) {
			return
		}
		backoff = min(2*backoff, s.cfg.ReconnectMax)
	}
}

// live returns the session with peer k if one is up.
func (s *Swarm) live(k PeerKey) *Session {
	if k.IsZero() {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if sess := s.sessions[k]; sess != nil && !ended(sess) {
		return sess
	}
	return nil
}

// ended reports whether sess has ended (it may still be among the swarm's
// sessions until its goroutine in register removes it).
func ended(sess *Session) bool {
	select {
	case <-sess.Done():
		return true
	default:
		return false
	}
}

// await waits for sess to end (for ever if sess is nil), and reports false
// if d ended first.
func (s *Swarm) await(d *dialer, sess *Session) bool {
	s.mu.Lock()
	d.waiting = true
	s.mu.Unlock()
	var done <-chan struct{}
	if sess != nil {
		done = sess.Done()
	}
	select {
	case <-done:
	case <-d.ctx.Done():
	}
	s.mu.Lock()
	d.waiting = false
	s.mu.Unlock()
	return d.ctx.Err() == nil
}

// giveUp ends d unless it is persistent, removing it from the addresses
// being dialled in the same critical section in which it reads persistent:
// so a Connect either finds d persistent or starts a loop of its own.
func (s *Swarm) giveUp(d *dialer, addr netip.AddrPort) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if d.persistent {
		return false
	}
	if s.dialing[addr] == d {
		delete(s.dialing, addr)
	}
	return true
}

// jitter returns a wait drawn uniformly from [d/2, d], so that peers that
// lost each other at once (a partition healing, a restart) spread their
// redials over half a backoff rather than dialling in step.
func jitter(d time.Duration) time.Duration {
	if d <= 1 {
		return d
	}
	return d/2 + rand.N(d-d/2+1)
}

// sleep waits for d, and reports false if ctx ended first.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

var (
	errDuplicate = errors.New("swarm: duplicate connection to peer")
	errSelf      = errors.New("swarm: connected to itself")
)

// dialOnce dials addr and starts a session. It returns the peer's key
// whenever the handshake told it, even if the swarm then refused the
// session.
func (s *Swarm) dialOnce(ctx context.Context, addr netip.AddrPort) (*Session, PeerKey, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.DialTimeout)
	defer cancel()
	var conn net.Conn
	var err error
	if s.cfg.Dial != nil {
		conn, err = s.cfg.Dial(ctx, addr.String())
	} else {
		var d net.Dialer
		conn, err = d.DialContext(ctx, "tcp", addr.String())
	}
	if err != nil {
		return nil, PeerKey{}, err
	}
	sess, err := s.handshake(ctx, conn, true)
	if err != nil {
		return nil, PeerKey{}, err
	}
	if err := s.register(sess); err != nil {
		return nil, sess.RemoteKey(), err
	}
	return sess, sess.RemoteKey(), nil
}

// connect dials addr once, outside any dial loop.
func (s *Swarm) connect(addr netip.AddrPort) (*Session, error) {
	sess, _, err := s.dialOnce(s.ctx, addr)
	return sess, err
}

// acceptLoop accepts connections until the listener closes, handshaking
// with at most MaxHandshakes at once.
func (s *Swarm) acceptLoop() {
	var pause time.Duration
	for {
		// A slot is taken before Accept, not after: at the bound, the
		// connections beyond it wait in the kernel's listen backlog (and
		// are refused once it fills), costing this process nothing, rather
		// than each taking a goroutine and a handshake's memory here.
		select {
		case s.handshakes <- struct{}{}:
		case <-s.ctx.Done():
			return
		}
		conn, err := s.ln.Accept()
		if err != nil {
			<-s.handshakes
			if errors.Is(err, net.ErrClosed) || s.ctx.Err() != nil {
				return
			}
			pause = min(max(2*pause, acceptRetryMin), acceptRetryMax)
			s.log.Debug("swarm: accept failed", "err", err, "retry in", pause)
			if !sleep(s.ctx, pause) {
				return
			}
			continue
		}
		pause = 0
		s.wg.Go(func() { s.accept(conn) })
	}
}

// accept handshakes on an inbound connection, holding a slot of
// s.handshakes (taken by acceptLoop) until the handshake ends.
func (s *Swarm) accept(conn net.Conn) {
	ctx, cancel := context.WithTimeout(s.ctx, s.cfg.DialTimeout)
	defer cancel()
	s.handshaking.Add(1)
	sess, err := s.handshake(ctx, conn, false)
	s.handshaking.Add(-1)
	<-s.handshakes
	if err == nil {
		err = s.register(sess)
	}
	if err != nil {
		s.log.Debug("swarm: inbound connection failed", "addr", conn.RemoteAddr(), "err", err)
	}
}

// handshake runs the Noise handshake on conn and starts a session on it.
func (s *Swarm) handshake(ctx context.Context, conn net.Conn, initiator bool) (*Session, error) {
	return NewSession(ctx, conn, initiator, SessionConfig{
		KeyPair:        s.cfg.KeyPair,
		Secret:         s.cfg.Secret,
		Window:         s.cfg.Window,
		KeepAlive:      s.cfg.KeepAlive,
		RequestTimeout: s.cfg.RequestTimeout,
		Logger:         s.cfg.Logger,
		Lookup:         s.lookup,
	})
}

// register asks the firewall about sess's peer and adds sess to the swarm's
// sessions, keeping one per peer. Of two sessions with a peer, both up, the
// one prefer picks is kept on both sides; a session that has ended always
// gives way. A session refused is closed, and register returns why.
func (s *Swarm) register(sess *Session) error {
	remote := sess.RemoteKey()
	if remote == s.Key() {
		sess.Close()
		return errSelf
	}
	if s.cfg.Firewall != nil && !s.cfg.Firewall(remote) {
		sess.Close()
		return fmt.Errorf("swarm: peer %s refused by the firewall", remote)
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		sess.Close()
		return ErrClosed
	}
	addr := addrPort(sess.conn.RemoteAddr())
	if old, ok := s.sessions[remote]; ok {
		if !ended(old) && !s.prefer(sess, old) {
			s.mu.Unlock()
			sess.Close()
			return errDuplicate
		}
		old.fail(errDuplicate)
		// The old session is down as far as watchers know: its end,
		// later, is not reported again.
		s.emit(PeerEvent{Key: remote, Addr: addrPort(old.conn.RemoteAddr())})
	}
	s.sessions[remote] = sess
	for _, r := range s.reps {
		sess.Replicate(r)
	}
	s.emit(PeerEvent{Key: remote, Addr: addr, Up: true})
	s.mu.Unlock()
	s.log.Debug("swarm: connected", "peer", remote, "initiator", sess.conn.Initiator())
	s.wg.Go(func() {
		select {
		case <-sess.Done():
		case <-s.ctx.Done():
			sess.Close()
		}
		s.mu.Lock()
		if s.sessions[remote] == sess {
			delete(s.sessions, remote)
			s.emit(PeerEvent{Key: remote, Addr: addr})
		}
		s.mu.Unlock()
	})
	return nil
}

// addrPort returns a connection's address as a netip.AddrPort, or the zero
// AddrPort for one that is not TCP.
func addrPort(a net.Addr) netip.AddrPort {
	if t, ok := a.(*net.TCPAddr); ok {
		ap := t.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	return netip.AddrPort{}
}

// prefer reports whether a new session should replace the one to the same
// peer: the survivor is the one dialled by the peer with the smaller key,
// which both peers compute alike; between two dialled by the same peer, the
// newer wins, as the older is likely dead: a dial loop does not dial a peer
// it knows a live session with (see dialLoop), so a peer dials again once
// its side of the older session has ended, though this side may not have
// noticed yet (the peer's host lost its network, or restarted). Only a loop
// that does not know yet who listens at its address (its first dial) can
// replace a live session so.
func (s *Swarm) prefer(n, old *Session) bool {
	dialler := func(x *Session) PeerKey {
		if x.conn.Initiator() {
			return s.Key()
		}
		return x.RemoteKey()
	}
	dn, do := dialler(n), dialler(old)
	if dn == do {
		return true
	}
	return bytes.Compare(dn[:], do[:]) < 0
}

// Peers returns the identities of the peers connected now.
func (s *Swarm) Peers() []PeerKey {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]PeerKey, 0, len(s.sessions))
	for k := range s.sessions {
		out = append(out, k)
	}
	return out
}

// Connected reports whether a session with peer k runs now.
func (s *Swarm) Connected(k PeerKey) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.sessions[k]
	return ok
}

// PeerEvent is a peer connecting or disconnecting, as Watch reports it.
type PeerEvent struct {
	// Key is the peer's identity.
	Key PeerKey
	// Addr is the peer's address on the connection: where it listens if
	// this side dialled, else the port it dialled from.
	Addr netip.AddrPort
	// Up is true when the peer connected, false when it disconnected.
	Up bool
}

// Watch reports peers connecting and disconnecting: first an Up event for
// every peer connected now, then an Up event each time a session with a
// peer is established (after the choice between two connections, when both
// peers dialled) and a Down event when it ends. A peer's events alternate,
// Up first; a session replaced by a newer one to the same peer is reported
// as Down then Up. No event is dropped: those a watcher has not read yet
// are queued. The channel is closed when ctx ends or the swarm closes.
func (s *Swarm) Watch(ctx context.Context) <-chan PeerEvent {
	out := make(chan PeerEvent)
	w := watch.NewQueue[PeerEvent]()
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		close(out)
		return out
	}
	for k, sess := range s.sessions {
		w.Add(PeerEvent{Key: k, Addr: addrPort(sess.conn.RemoteAddr()), Up: true})
	}
	s.watchers[w] = true
	s.wg.Go(func() {
		defer close(out)
		defer func() {
			s.mu.Lock()
			delete(s.watchers, w)
			s.mu.Unlock()
		}()
		w.Run(ctx, s.ctx, out)
	})
	s.mu.Unlock()
	return out
}

// watcher is one Watch: the events its caller has not read yet.
type watcher = watch.Queue[PeerEvent]

// emit queues e for every watcher. The caller holds s.mu, so that events
// are queued in the order the sessions changed.
func (s *Swarm) emit(e PeerEvent) {
	for w := range s.watchers {
		w.Add(e)
	}
}

// Close disconnects every peer, leaves every topic and stops every
// goroutine the swarm started. Feeds stay open: they are the caller's.
func (s *Swarm) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	reps := s.reps
	s.mu.Unlock()
	s.cancel()
	err := s.ln.Close()
	var errs []error
	for _, d := range s.cfg.Discovery {
		errs = append(errs, d.Close())
	}
	s.wg.Wait()
	for _, r := range reps {
		r.Close()
	}
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	return errors.Join(append(errs, err)...)
}
