package swarm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/hyperfeed/hyperfeed/feed"
)

// ErrClosed is returned by a Swarm that was closed.
var ErrClosed = errors.New("swarm: closed")

// Config configures a Swarm. The zero value works: a fresh identity, a
// listener on every interface, no discovery (add peers with Connect).
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
	// DialTimeout bounds a TCP connect and handshake; default 10 s.
	DialTimeout time.Duration
	Logger      *slog.Logger
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
	dialing  map[netip.AddrPort]bool
	watchers map[*watcher]bool
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
		dialing:  map[netip.AddrPort]bool{},
		watchers: map[*watcher]bool{},
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
		errs = append(errs, d.Join(topic, s.Port(), s.found))
	}
	return errors.Join(errs...)
}

// found is called by discovery; it must not block.
func (s *Swarm) found(c Candidate) {
	if c.Key == s.Key() {
		return
	}
	s.dial(c.Addr, false)
}

// Connect adds a peer address to keep connected to: dialled now, and again
// with backoff whenever the connection drops, until Close.
func (s *Swarm) Connect(addr string) error {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		tcp, rerr := net.ResolveTCPAddr("tcp", addr)
		if rerr != nil {
			return fmt.Errorf("swarm: connect %q: %w", addr, rerr)
		}
		ap = tcp.AddrPort()
	}
	s.dial(ap, true)
	return nil
}

// dial starts a dial loop for addr unless one runs. A persistent loop
// (static peers) never gives up; one for a discovered peer ends after a few
// failed dials, and discovery starts it again if the peer is still there.
func (s *Swarm) dial(addr netip.AddrPort, persistent bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.dialing[addr] {
		return
	}
	s.dialing[addr] = true
	s.wg.Go(func() {
		defer func() {
			s.mu.Lock()
			delete(s.dialing, addr)
			s.mu.Unlock()
		}()
		s.dialLoop(addr, persistent)
	})
}

func (s *Swarm) dialLoop(addr netip.AddrPort, persistent bool) {
	backoff := s.cfg.ReconnectMin
	failures := 0
	for s.ctx.Err() == nil {
		started := time.Now()
		sess, err := s.connect(addr)
		if err == nil {
			select {
			case <-sess.Done():
			case <-s.ctx.Done():
				return
			}
			err = sess.Err()
			if time.Since(started) > 10*s.cfg.ReconnectMin {
				backoff, failures = s.cfg.ReconnectMin, 0 // it worked for a while
			}
		}
		if errors.Is(err, errDuplicate) {
			return // another connection to the same peer carries on
		}
		failures++
		if !persistent && failures >= 5 {
			s.log.Debug("swarm: giving up on peer", "addr", addr, "err", err)
			return
		}
		s.log.Debug("swarm: reconnecting", "addr", addr, "in", backoff, "err", err)
		t := time.NewTimer(backoff)
		select {
		case <-t.C:
		case <-s.ctx.Done():
			t.Stop()
			return
		}
		backoff = min(2*backoff, s.cfg.ReconnectMax)
	}
}

var errDuplicate = errors.New("swarm: duplicate connection to peer")

func (s *Swarm) connect(addr netip.AddrPort) (*Session, error) {
	ctx, cancel := context.WithTimeout(s.ctx, s.cfg.DialTimeout)
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
		return nil, err
	}
	return s.start(ctx, conn, true)
}

func (s *Swarm) acceptLoop() {
	for {
		conn, err := s.ln.Accept()
		if err != nil {
			return // closed
		}
		s.wg.Go(func() {
			ctx, cancel := context.WithTimeout(s.ctx, s.cfg.DialTimeout)
			defer cancel()
			if _, err := s.start(ctx, conn, false); err != nil {
				s.log.Debug("swarm: inbound connection failed", "addr", conn.RemoteAddr(), "err", err)
			}
		})
	}
}

// start runs the handshake and registers the session, keeping one session
// per peer: when both peers dial each other at once, both keep the
// connection dialled by the peer with the smaller key.
func (s *Swarm) start(ctx context.Context, conn net.Conn, initiator bool) (*Session, error) {
	sess, err := NewSession(ctx, conn, initiator, SessionConfig{
		KeyPair:        s.cfg.KeyPair,
		Secret:         s.cfg.Secret,
		Window:         s.cfg.Window,
		KeepAlive:      s.cfg.KeepAlive,
		RequestTimeout: s.cfg.RequestTimeout,
		Logger:         s.cfg.Logger,
		Lookup:         s.lookup,
	})
	if err != nil {
		return nil, err
	}
	remote := sess.RemoteKey()
	if s.cfg.Firewall != nil && !s.cfg.Firewall(remote) {
		sess.Close()
		return nil, fmt.Errorf("swarm: peer %s refused by the firewall", remote)
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		sess.Close()
		return nil, ErrClosed
	}
	addr := addrPort(conn.RemoteAddr())
	if old, ok := s.sessions[remote]; ok {
		if !s.prefer(sess, old) {
			s.mu.Unlock()
			sess.Close()
			return nil, errDuplicate
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
	s.log.Debug("swarm: connected", "peer", remote, "initiator", initiator)
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
	return sess, nil
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
// newer wins, as the older is likely dead.
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
	w := &watcher{kick: make(chan struct{}, 1)}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		close(out)
		return out
	}
	for k, sess := range s.sessions {
		w.queue = append(w.queue, PeerEvent{Key: k, Addr: addrPort(sess.conn.RemoteAddr()), Up: true})
	}
	s.watchers[w] = true
	s.wg.Go(func() {
		defer close(out)
		defer func() {
			s.mu.Lock()
			delete(s.watchers, w)
			s.mu.Unlock()
		}()
		w.run(ctx, s.ctx, out)
	})
	s.mu.Unlock()
	return out
}

// watcher is one Watch: the events not yet delivered, and a goroutine that
// delivers them.
type watcher struct {
	mu    sync.Mutex
	queue []PeerEvent
	kick  chan struct{} // events were queued
}

// emit queues e for every watcher. The caller holds s.mu, so that events
// are queued in the order the sessions changed.
func (s *Swarm) emit(e PeerEvent) {
	for w := range s.watchers {
		w.mu.Lock()
		w.queue = append(w.queue, e)
		w.mu.Unlock()
		select {
		case w.kick <- struct{}{}:
		default:
		}
	}
}

// run delivers w's events to out until ctx or the swarm's context ends.
func (w *watcher) run(ctx, swarm context.Context, out chan<- PeerEvent) {
	for {
		w.mu.Lock()
		q := w.queue
		w.queue = nil
		w.mu.Unlock()
		for _, e := range q {
			select {
			case out <- e:
			case <-ctx.Done():
				return
			case <-swarm.Done():
				return
			}
		}
		select {
		case <-w.kick:
		case <-ctx.Done():
			return
		case <-swarm.Done():
			return
		}
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
