// Package memnet is an in-memory network for tests: net.Conn and
// net.Listener between named hosts, with the faults a real network has and
// a few it should not (so that the layers above are seen to catch them).
//
// Hosts are names. An address is "host:port" (or any string, which is then
// a host of its own); a swarm.Swarm wants addresses that parse as
// netip.AddrPort, so tests name hosts by IP literals ("10.0.0.1:7000"). No
// byte leaves the process.
//
// A connection behaves as TCP does where the code above relies on it: bytes
// arrive in order and whole unless a fault says otherwise; each direction
// buffers up to Config.Buffer bytes, past which Write blocks (and a write
// deadline fails it with os.ErrDeadlineExceeded, having written part); Close
// lets the peer read what was sent and then io.EOF; a reset fails both ends
// at once. Deadlines work as on a net.TCPConn.
//
// Faults apply per pair of hosts (SetLinkFaults) or to every link
// (SetFaults), and take effect on the next write:
//
//   - Latency and Jitter delay delivery, keeping the order.
//   - Chunk cuts each write into pieces of 1 to Chunk bytes, and a read
//     returns one piece at most: the stream is re-chunked at arbitrary
//     boundaries, as a reader must cope with anyway.
//   - Reorder holds a write back and delivers it after the next one (or on
//     its own, once the hold expires): bytes out of order, which a stream
//     protocol must detect.
//   - Corrupt flips one bit of a write.
//   - Reset resets the connection instead of a write.
//
// Partition stops hosts reaching each other (existing connections between
// them are reset; dials fail) until Heal; Break resets the connections
// between two hosts without a partition. The package starts no goroutines.
package memnet

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// Faults are what a link does to the bytes written on it.
type Faults struct {
	// Latency delays every write's delivery; Jitter adds up to as much
	// again at random. The order of the bytes is kept.
	Latency, Jitter time.Duration
	// Chunk, if positive, cuts writes into pieces of 1 to Chunk bytes, each
	// read apart.
	Chunk int
	// Reorder is the probability that a write is held back and delivered
	// after the next write on the connection (or alone, after HoldFor).
	Reorder float64
	// Corrupt is the probability that a write has one of its bits flipped.
	Corrupt float64
	// Reset is the probability that a write resets the connection instead.
	Reset float64
}

// Config configures a Network. The zero value works.
type Config struct {
	// Seed seeds the faults' randomness; with concurrent writers, which
	// write a fault hits still depends on scheduling.
	Seed uint64
	// Buffer is how many bytes each direction of a connection holds before
	// Write blocks; default 256 KiB, about a socket's buffers.
	Buffer int
	// Backlog is how many connections a listener queues before dials to it
	// are refused; default 512.
	Backlog int
	// HoldFor is how long a write held back by Reorder waits for the next
	// write before it is delivered alone; default 20 ms.
	HoldFor time.Duration
}

// Stats count what a network has carried and done to it.
type Stats struct {
	Dials, Refused          int // connections made, and dials refused
	Writes, Bytes           int // writes, and bytes written
	Chunks                  int // pieces the Chunk fault cut writes into
	Reordered, Corrupted    int // writes held back, and writes with a bit flipped
	Resets                  int // connections reset (by faults, Break and Partition)
	Partitions, Heals, Outs int // Partition and Heal calls, and dials refused by a partition
}

// Network is an in-memory network. Its methods are safe for concurrent use.
type Network struct {
	cfg Config

	mu        sync.Mutex
	rng       *rand.Rand
	listeners map[string]*Listener
	conns     map[*Conn]struct{} // open connections, by their dialling end
	cut       map[[2]string]bool // host pairs a partition separates
	faults    Faults
	links     map[[2]string]Faults
	nextPort  int
	stats     Stats
	sent      map[string]int64 // bytes written, by the writer's host
}

// New returns an empty network.
func New(cfg Config) *Network {
	if cfg.Buffer <= 0 {
		cfg.Buffer = 256 << 10
	}
	if cfg.Backlog <= 0 {
		cfg.Backlog = 512
	}
	if cfg.HoldFor <= 0 {
		cfg.HoldFor = 20 * time.Millisecond
	}
	return &Network{
		cfg:       cfg,
		rng:       rand.New(rand.NewPCG(cfg.Seed, 0x6d656d6e6574)),
		listeners: map[string]*Listener{},
		conns:     map[*Conn]struct{}{},
		cut:       map[[2]string]bool{},
		links:     map[[2]string]Faults{},
		sent:      map[string]int64{},
		nextPort:  40000,
	}
}

// Addr is a memnet address.
type Addr string

// Network returns "memnet".
func (Addr) Network() string { return "memnet" }

func (a Addr) String() string { return string(a) }

// Host returns the host of an address: the part before the port, or the
// whole address if it has no port.
func Host(addr string) string {
	if h, _, err := net.SplitHostPort(addr); err == nil {
		return h
	}
	return addr
}

// pair is the key of a link: two hosts, in either order.
func pair(a, b string) [2]string {
	if b < a {
		a, b = b, a
	}
	return [2]string{a, b}
}

// SetFaults sets the faults of every link that has none of its own.
func (n *Network) SetFaults(f Faults) {
	n.mu.Lock()
	n.faults = f
	n.mu.Unlock()
}

// SetLinkFaults sets the faults between hosts a and b, in both directions.
func (n *Network) SetLinkFaults(a, b string, f Faults) {
	n.mu.Lock()
	n.links[pair(a, b)] = f
	n.mu.Unlock()
}

// ClearFaults removes every fault, of every link.
func (n *Network) ClearFaults() {
	n.mu.Lock()
	n.faults = Faults{}
	clear(n.links)
	n.mu.Unlock()
}

// Stats returns what the network has done so far.
func (n *Network) Stats() Stats {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.stats
}

// Sent returns how many bytes endpoints on host have written, on every
// connection: how much a peer has said, whatever it said.
func (n *Network) Sent(host string) int64 {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.sent[host]
}

// Listen listens on addr ("host:port"; port 0 picks a free one).
func (n *Network) Listen(addr string) (*Listener, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if h, p, err := net.SplitHostPort(addr); err == nil && p == "0" {
		for {
			n.nextPort++
			addr = net.JoinHostPort(h, strconv.Itoa(n.nextPort))
			if _, used := n.listeners[addr]; !used {
				break
			}
		}
	}
	if _, used := n.listeners[addr]; used {
		return nil, &net.OpError{Op: "listen", Net: "memnet", Addr: Addr(addr), Err: syscall.EADDRINUSE}
	}
	l := &Listener{n: n, addr: Addr(addr), backlog: make(chan *Conn, n.cfg.Backlog), done: make(chan struct{})}
	n.listeners[addr] = l
	return l, nil
}

// Dial connects host from to the listener at addr.
func (n *Network) Dial(ctx context.Context, from, addr string) (net.Conn, error) {
	if err := ctx.Err(); err != nil {
		return nil, &net.OpError{Op: "dial", Net: "memnet", Addr: Addr(addr), Err: err}
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	refuse := func(err error) (net.Conn, error) {
		n.stats.Refused++
		return nil, &net.OpError{Op: "dial", Net: "memnet", Addr: Addr(addr), Err: err}
	}
	if n.cut[pair(Host(from), Host(addr))] {
		n.stats.Outs++
		return refuse(syscall.EHOSTUNREACH)
	}
	l, ok := n.listeners[addr]
	if !ok {
		return refuse(syscall.ECONNREFUSED)
	}
	n.nextPort++
	local := Addr(net.JoinHostPort(Host(from), strconv.Itoa(n.nextPort)))
	if Host(from) == from && from != "" {
		local = Addr(from + ":" + strconv.Itoa(n.nextPort))
	}
	ab, ba := newHalf(n.cfg.Buffer), newHalf(n.cfg.Buffer)
	client := &Conn{n: n, local: local, remote: l.addr, in: ba, out: ab, client: true}
	server := &Conn{n: n, local: l.addr, remote: local, in: ab, out: ba}
	client.peer, server.peer = server, client
	client.init()
	server.init()
	select {
	case l.backlog <- server:
	default:
		return refuse(syscall.ECONNREFUSED) // backlog full, or the listener closed
	}
	n.conns[client] = struct{}{}
	n.stats.Dials++
	return client, nil
}

// Dialer returns a dial function for host from, in the shape of
// swarm.Config.Dial.
func (n *Network) Dialer(from string) func(ctx context.Context, addr string) (net.Conn, error) {
	return func(ctx context.Context, addr string) (net.Conn, error) { return n.Dial(ctx, from, addr) }
}

// Partition separates every host of a from every host of b: connections
// between them are reset, and dials between them fail, until Heal.
func (n *Network) Partition(a, b []string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.stats.Partitions++
	for _, x := range a {
		for _, y := range b {
			n.cut[pair(x, y)] = true
		}
	}
	n.resetLocked(func(c *Conn) bool { return n.cut[pair(Host(string(c.local)), Host(string(c.remote)))] })
}

// Heal ends every partition.
func (n *Network) Heal() {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.stats.Heals++
	clear(n.cut)
}

// Break resets every connection between hosts a and b.
func (n *Network) Break(a, b string) int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.resetLocked(func(c *Conn) bool { return pair(Host(string(c.local)), Host(string(c.remote))) == pair(a, b) })
}

// BreakAll resets every connection, and returns how many it reset.
func (n *Network) BreakAll() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.resetLocked(func(*Conn) bool { return true })
}

// Conns returns how many connections are open: neither reset nor closed
// at both ends.
func (n *Network) Conns() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.conns)
}

// resetLocked resets the open connections that match, and returns how many.
func (n *Network) resetLocked(match func(*Conn) bool) int {
	var hit []*Conn
	for c := range n.conns {
		if match(c) {
			hit = append(hit, c)
		}
	}
	for _, c := range hit {
		n.stats.Resets++
		c.resetLocked()
	}
	return len(hit)
}

// faultsFor returns the faults of the link between two hosts.
func (n *Network) faultsFor(a, b string) Faults {
	if f, ok := n.links[pair(a, b)]; ok {
		return f
	}
	return n.faults
}

// Listener is a memnet listener.
type Listener struct {
	n       *Network
	addr    Addr
	backlog chan *Conn
	done    chan struct{}
	once    sync.Once
}

// Accept waits for a connection.
func (l *Listener) Accept() (net.Conn, error) {
	select {
	case c := <-l.backlog:
		return c, nil
	case <-l.done:
		return nil, &net.OpError{Op: "accept", Net: "memnet", Addr: l.addr, Err: net.ErrClosed}
	}
}

// Close stops listening; connections not yet accepted are reset.
func (l *Listener) Close() error {
	l.once.Do(func() {
		l.n.mu.Lock()
		defer l.n.mu.Unlock()
		if l.n.listeners[string(l.addr)] == l {
			delete(l.n.listeners, string(l.addr))
		}
		close(l.done)
		for {
			select {
			case c := <-l.backlog:
				c.resetLocked()
			default:
				return
			}
		}
	})
	return nil
}

// Addr returns the listening address.
func (l *Listener) Addr() net.Addr { return l.addr }

// segment is bytes written and not yet read, readable from at.
type segment struct {
	data []byte
	at   time.Time
}

// half is one direction of a connection.
type half struct {
	mu      sync.Mutex
	limit   int
	segs    []segment
	queued  int      // bytes in segs and held
	held    *segment // a write held back by Reorder, readable from held.at if no write follows
	last    time.Time
	eof     bool  // the writer closed: io.EOF once drained
	gone    bool  // the reader closed: writes fail
	reset   error // the connection was reset: both ends fail now
	changed chan struct{}
}

func newHalf(limit int) *half { return &half{limit: limit, changed: make(chan struct{})} }

// signal wakes whoever waits on h. The caller holds h.mu.
func (h *half) signal() {
	close(h.changed)
	h.changed = make(chan struct{})
}

// Conn is one end of a memnet connection.
type Conn struct {
	n             *Network
	local, remote Addr
	in, out       *half
	peer          *Conn
	client        bool       // the dialling end
	rng           *rand.Rand // under out.mu

	dmu      sync.Mutex
	rdl, wdl time.Time
	dchanged chan struct{} // closed and replaced when a deadline changes
	closed   bool
}

func (c *Conn) init() {
	c.dchanged = make(chan struct{})
	c.rng = rand.New(rand.NewPCG(c.n.rng.Uint64(), c.n.rng.Uint64()))
}

// dialler returns the dialling end of c's connection, the one n.conns
// holds.
func (c *Conn) dialler() *Conn {
	if c.client {
		return c
	}
	return c.peer
}

// LocalAddr returns this end's address.
func (c *Conn) LocalAddr() net.Addr { return c.local }

// RemoteAddr returns the peer's address.
func (c *Conn) RemoteAddr() net.Addr { return c.remote }

// errPipe is what writing to a peer that closed its end fails with.
var errPipe = syscall.EPIPE

func (c *Conn) opErr(op string, err error) error {
	if err == io.EOF {
		return err
	}
	return &net.OpError{Op: op, Net: "memnet", Source: c.local, Addr: c.remote, Err: err}
}

// deadline returns a deadline and the channel that closes when deadlines
// change, and whether this end was closed.
func (c *Conn) deadline(read bool) (time.Time, <-chan struct{}, bool) {
	c.dmu.Lock()
	defer c.dmu.Unlock()
	if read {
		return c.rdl, c.dchanged, c.closed
	}
	return c.wdl, c.dchanged, c.closed
}

// wait blocks until wake closes, the deadline changes or passes, or until
// (if not zero); it reports a passed deadline.
func wait(wake <-chan struct{}, dl time.Time, dchanged <-chan struct{}, until time.Time) error {
	now := time.Now()
	if !dl.IsZero() && !now.Before(dl) {
		return os.ErrDeadlineExceeded
	}
	var timeout <-chan time.Time
	next := until
	if !dl.IsZero() && (next.IsZero() || dl.Before(next)) {
		next = dl
	}
	if !next.IsZero() {
		t := time.NewTimer(next.Sub(now))
		defer t.Stop()
		timeout = t.C
	}
	select {
	case <-wake:
	case <-dchanged:
	case <-timeout:
	}
	return nil
}

// Read reads what the peer wrote.
func (c *Conn) Read(p []byte) (int, error) {
	h := c.in
	for {
		dl, dchanged, closed := c.deadline(true)
		if closed {
			return 0, c.opErr("read", net.ErrClosed)
		}
		if !dl.IsZero() && !time.Now().Before(dl) {
			return 0, c.opErr("read", os.ErrDeadlineExceeded)
		}
		h.mu.Lock()
		if h.reset != nil {
			h.mu.Unlock()
			return 0, c.opErr("read", h.reset)
		}
		now := time.Now()
		if h.held != nil && !now.Before(h.held.at) {
			// Nothing followed the held write in time: it goes alone.
			h.segs = append(h.segs, *h.held)
			h.held = nil
		}
		if len(h.segs) > 0 && !now.Before(h.segs[0].at) {
			if len(p) == 0 {
				h.mu.Unlock()
				return 0, nil
			}
			s := &h.segs[0]
			k := copy(p, s.data)
			s.data = s.data[k:]
			if len(s.data) == 0 {
				h.segs[0] = segment{}
				h.segs = h.segs[1:]
			}
			h.queued -= k
			h.signal()
			h.mu.Unlock()
			return k, nil
		}
		if len(h.segs) == 0 && h.held == nil && h.eof {
			h.mu.Unlock()
			return 0, io.EOF
		}
		var until time.Time
		if len(h.segs) > 0 {
			until = h.segs[0].at
		} else if h.held != nil {
			until = h.held.at
		}
		wake := h.changed
		h.mu.Unlock()
		if err := wait(wake, dl, dchanged, until); err != nil {
			return 0, c.opErr("read", err)
		}
	}
}

// Write writes p, blocking while the peer's buffer is full. A write that
// times out or fails on the way may have written part of p, as on TCP.
func (c *Conn) Write(p []byte) (int, error) {
	c.n.mu.Lock()
	f := c.n.faultsFor(Host(string(c.local)), Host(string(c.remote)))
	c.n.stats.Writes++
	c.n.mu.Unlock()
	h := c.out
	if f.Reset > 0 {
		h.mu.Lock()
		reset := c.rng.Float64() < f.Reset
		h.mu.Unlock()
		if reset {
			c.n.mu.Lock()
			c.n.stats.Resets++
			c.resetLocked()
			c.n.mu.Unlock()
			return 0, c.opErr("write", syscall.ECONNRESET)
		}
	}
	written := 0
	for {
		dl, dchanged, closed := c.deadline(false)
		if closed {
			return written, c.opErr("write", net.ErrClosed)
		}
		if !dl.IsZero() && !time.Now().Before(dl) {
			return written, c.opErr("write", os.ErrDeadlineExceeded)
		}
		h.mu.Lock()
		switch {
		case h.reset != nil:
			h.mu.Unlock()
			return written, c.opErr("write", h.reset)
		case h.gone || h.eof:
			h.mu.Unlock()
			return written, c.opErr("write", errPipe)
		}
		var done faultCounts
		before := written
		if room := h.limit - h.queued; room > 0 && written < len(p) {
			k := min(room, len(p)-written)
			done = c.deliverLocked(p[written:written+k], f)
			written += k
			h.signal()
		}
		full := written == len(p)
		wake := h.changed
		h.mu.Unlock()
		// The network's lock is taken after the half's is released: Partition
		// takes them the other way round.
		c.n.mu.Lock()
		c.n.stats.Corrupted += done.corrupted
		c.n.stats.Reordered += done.reordered
		c.n.stats.Chunks += done.chunks
		if k := int64(written - before); k > 0 {
			c.n.sent[Host(string(c.local))] += k
		}
		if full {
			c.n.stats.Bytes += len(p)
		}
		c.n.mu.Unlock()
		if full {
			return written, nil
		}
		// The buffer is full: wait for the reader to make room. A change
		// since the lock was released closed wake already.
		if err := wait(wake, dl, dchanged, time.Time{}); err != nil {
			return written, c.opErr("write", err)
		}
	}
}

// faultCounts are the faults one delivery injected.
type faultCounts struct{ corrupted, reordered, chunks int }

// deliverLocked queues b for the peer with the link's faults. The caller
// holds c.out.mu.
func (c *Conn) deliverLocked(b []byte, f Faults) faultCounts {
	h := c.out
	b = append([]byte(nil), b...)
	now := time.Now()
	at := now.Add(f.Latency)
	if f.Jitter > 0 {
		at = at.Add(time.Duration(c.rng.Int64N(int64(f.Jitter) + 1)))
	}
	if at.Before(h.last) {
		at = h.last // keep the order
	}
	h.last = at
	var fc faultCounts
	if f.Corrupt > 0 && c.rng.Float64() < f.Corrupt {
		i := c.rng.IntN(len(b))
		b[i] ^= 1 << c.rng.IntN(8)
		fc.corrupted++
	}
	h.queued += len(b)
	var segs []segment
	if f.Chunk > 0 {
		for rest := b; len(rest) > 0; {
			k := min(len(rest), 1+c.rng.IntN(f.Chunk))
			segs = append(segs, segment{data: rest[:k:k], at: at})
			rest = rest[k:]
			fc.chunks++
		}
	} else {
		segs = []segment{{data: b, at: at}}
	}
	if h.held != nil {
		// The held write goes after this one: out of order.
		held := *h.held
		h.held = nil
		held.at = at
		segs = append(segs, held)
	} else if f.Reorder > 0 && c.rng.Float64() < f.Reorder {
		joined := segment{data: b, at: at.Add(c.n.cfg.HoldFor)}
		h.held = &joined
		segs = nil
		fc.reordered++
	}
	h.segs = append(h.segs, segs...)
	return fc
}

// Close closes this end: the peer reads what was written, then io.EOF, and
// its writes fail.
func (c *Conn) Close() error {
	c.dmu.Lock()
	if c.closed {
		c.dmu.Unlock()
		return nil
	}
	c.closed = true
	close(c.dchanged)
	c.dchanged = make(chan struct{})
	c.dmu.Unlock()
	c.out.mu.Lock()
	c.out.eof = true
	c.out.signal()
	c.out.mu.Unlock()
	c.in.mu.Lock()
	c.in.gone = true
	c.in.segs, c.in.held, c.in.queued = nil, nil, 0
	c.in.signal()
	c.in.mu.Unlock()
	c.n.mu.Lock()
	if c.peer.isClosed() {
		delete(c.n.conns, c.dialler())
	}
	c.n.mu.Unlock()
	return nil
}

func (c *Conn) isClosed() bool {
	c.dmu.Lock()
	defer c.dmu.Unlock()
	return c.closed
}

// resetLocked resets the connection: both ends fail at once, and what was
// in flight is lost. The caller holds c.n.mu.
func (c *Conn) resetLocked() {
	for _, h := range []*half{c.in, c.out} {
		h.mu.Lock()
		if h.reset == nil {
			h.reset = syscall.ECONNRESET
		}
		h.segs, h.held, h.queued = nil, nil, 0
		h.signal()
		h.mu.Unlock()
	}
	delete(c.n.conns, c.dialler())
}

// SetDeadline sets both deadlines.
func (c *Conn) SetDeadline(t time.Time) error {
	c.setDeadline(&c.rdl, t, &c.wdl)
	return nil
}

// SetReadDeadline sets the read deadline.
func (c *Conn) SetReadDeadline(t time.Time) error {
	c.setDeadline(&c.rdl, t, nil)
	return nil
}

// SetWriteDeadline sets the write deadline.
func (c *Conn) SetWriteDeadline(t time.Time) error {
	c.setDeadline(&c.wdl, t, nil)
	return nil
}

func (c *Conn) setDeadline(a *time.Time, t time.Time, b *time.Time) {
	c.dmu.Lock()
	defer c.dmu.Unlock()
	*a = t
	if b != nil {
		*b = t
	}
	close(c.dchanged)
	c.dchanged = make(chan struct{})
}

// String names the connection, for test logs.
func (c *Conn) String() string { return fmt.Sprintf("memnet %s->%s", c.local, c.remote) }

var (
	_ net.Conn     = (*Conn)(nil)
	_ net.Listener = (*Listener)(nil)
)
