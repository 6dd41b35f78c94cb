package swarm

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/zeroconf/v2"
	"golang.org/x/crypto/blake2b"
)

const (
	mdnsService = "_hyperfeed._tcp"
	mdnsDomain  = "local."
	// mdnsHashKey keys the topic hash; the version in it changes if the
	// announcement format ever does, so old and new nodes ignore each other.
	mdnsHashKey = "hyperfeed/mdns/v1"

	mdnsDefaultInstance       = "hyperfeed"
	mdnsMaxInstance           = 32
	mdnsDefaultBrowseInterval = 10 * time.Second
	// mdnsMinQueryGap is the shortest time between two browses, each of
	// which starts with a query: RFC 6762 (5.2) asks for a second at least
	// between queries for the same name.
	mdnsMinQueryGap = time.Second
)

// MDNSConfig configures an MDNS. The zero value announces and browses on
// every multicast interface.
type MDNSConfig struct {
	// Interfaces names the network interfaces to announce and browse on;
	// nil or empty means every interface that is up and multicast-capable
	// when a topic is joined (for announcing) or a browse starts.
	Interfaces []string
	// Self is this node's key: announced with each topic, so that peers
	// learn who to expect, and used to skip this node's own announcements.
	// Zero announces no key.
	Self PeerKey
	// Instance starts the names of this node's announcements, which
	// everyone on the network sees: ASCII letters, digits, '-' and '_', at
	// most 32 bytes. Default "hyperfeed".
	Instance string
	// BrowseInterval is how long each browse lasts before a fresh one
	// starts and reports every peer again; at least 1 s, default 10 s.
	BrowseInterval time.Duration
	// Logger receives what goes wrong on the network, and at debug level
	// every announcement seen and why it was not reported. Default: none.
	Logger *slog.Logger
}

// MDNS is a Discovery on the local network by DNS service discovery over
// multicast DNS (RFC 6762, 6763), using github.com/libp2p/zeroconf/v2.
//
// For each topic joined, a node announces one service of type
// _hyperfeed._tcp in domain local. on the joined port. Its TXT record holds
// two strings and nothing else:
//
//	t=<hex of the first 16 bytes of BLAKE2b-256, keyed "hyperfeed/mdns/v1", of the topic>
//	k=<hex of Self>   (absent if Self is zero)
//
// A topic may be a feed's discovery key, which lets whoever knows it ask
// peers for the feed, so only its hash goes on the network. The instance
// name, "<Instance>-<node>-<first 12 hex digits of t>", is unique per node
// (node: 6 random bytes drawn by NewMDNS) and topic, and tells this node
// its own announcements apart even when Self is zero. The host name in the
// SRV record is the instance name too rather than the machine's, so that
// the node never speaks for the machine's name, which the system's own
// responder owns; its A and AAAA records list the addresses of the
// interface each query came in on, looked up when the query comes.
//
// All topics share one browse for the service type: a node finds every
// hyperfeed announcement on the network and keeps those whose t= is a topic
// it joined and whose key is not Self. Each browse runs for BrowseInterval
// and hears both the answers to its queries and the announcements of peers
// starting meanwhile; then a fresh one starts, which reports every peer
// again, so a peer that the caller dropped comes back. Joining a topic
// restarts the browse, since zeroconf reports each announcement once per
// browse: at once, or a second after the current browse started if that is
// later, so that a burst of Joins costs one query. Within a browse, each
// candidate is reported once.
//
// A candidate is reported for every IPv4 address and every IPv6 address
// that is not link-local. zeroconf announces an interface's link-local IPv6
// addresses when it has no other IPv6 address, but such an address is
// useless without the zone (the interface) it was heard on, which zeroconf
// does not tell; a network with only link-local IPv6 needs IPv4 or Static.
//
// found is called from the browse goroutine, with a lock held that Leave
// and Close wait for: it must not block, and must not call the MDNS's
// methods. After Leave or Close returns, found is not called again.
type MDNS struct {
	cfg    MDNSConfig
	log    *slog.Logger
	prefix string // of this node's instance names: "<Instance>-<node>-"

	// ipTraffic is the zeroconf.IPType a browse last worked with, or 0.
	ipTraffic atomic.Uint32

	// kick asks the browse to start afresh, after a Join.
	kick chan struct{}
	wg   sync.WaitGroup // browse goroutines

	// reportMu is held while found runs, so that Leave and Close can wait
	// out a report in flight.
	reportMu sync.Mutex

	mu         sync.Mutex
	topics     map[string]*mdnsTopic // by mdnsTopicHash
	closed     bool
	stopBrowse context.CancelFunc // nil when no browse runs
	browseDone chan struct{}
}

var _ Discovery = (*MDNS)(nil)

type mdnsTopic struct {
	found  func(Candidate)
	server *zeroconf.Server
}

// NewMDNS returns an MDNS configured by cfg. It checks the configuration
// and the interfaces named, but touches the network only on Join.
func NewMDNS(cfg MDNSConfig) (*MDNS, error) {
	cfg.Interfaces = slices.Clone(cfg.Interfaces)
	for _, name := range cfg.Interfaces {
		ifi, err := net.InterfaceByName(name)
		if err != nil {
			return nil, fmt.Errorf("swarm: mdns: interface %q: %w", name, err)
		}
		if ifi.Flags&net.FlagMulticast == 0 {
			return nil, fmt.Errorf("swarm: mdns: interface %q cannot multicast", name)
		}
	}
	if cfg.Instance == "" {
		cfg.Instance = mdnsDefaultInstance
	}
	if err := mdnsCheckInstance(cfg.Instance); err != nil {
		return nil, err
	}
	switch {
	case cfg.BrowseInterval == 0:
		cfg.BrowseInterval = mdnsDefaultBrowseInterval
	case cfg.BrowseInterval < mdnsMinQueryGap:
		return nil, fmt.Errorf("swarm: mdns: BrowseInterval %v is under %v", cfg.BrowseInterval, mdnsMinQueryGap)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var node [6]byte
	rand.Read(node[:])
	return &MDNS{
		cfg:    cfg,
		log:    log,
		prefix: cfg.Instance + "-" + hex.EncodeToString(node[:]) + "-",
		kick:   make(chan struct{}, 1),
		topics: make(map[string]*mdnsTopic),
	}, nil
}

// mdnsCheckInstance keeps instance names to one plain DNS label: zeroconf
// joins names with dots without escaping them.
func mdnsCheckInstance(s string) error {
	if len(s) > mdnsMaxInstance {
		return fmt.Errorf("swarm: mdns: Instance %q is longer than %d bytes", s, mdnsMaxInstance)
	}
	for _, c := range []byte(s) {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return fmt.Errorf("swarm: mdns: Instance %q may hold only ASCII letters, digits, '-' and '_'", s)
		}
	}
	return nil
}

// Join announces topic on port and reports the peers announcing it.
func (m *MDNS) Join(topic Topic, port int, found func(Candidate)) error {
	if found == nil {
		return errors.New("swarm: mdns: Join with nil found")
	}
	if port < 1 || port > 65535 {
		return fmt.Errorf("swarm: mdns: port %d out of range", port)
	}
	h := mdnsTopicHash(topic)
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrDiscoveryClosed
	}
	if m.topics[h] != nil {
		return nil
	}
	ifaces, err := m.interfaces()
	if err != nil {
		return err
	}
	inst := m.prefix + h[:12]
	// No addresses given: zeroconf then answers each query with the
	// addresses of the interface it came in on, as they are at that moment.
	srv, err := zeroconf.RegisterProxy(inst, mdnsService, mdnsDomain, port, inst, nil, mdnsTXT(h, m.cfg.Self), ifaces)
	if err != nil {
		return fmt.Errorf("swarm: mdns: announce: %w", err)
	}
	m.topics[h] = &mdnsTopic{found: found, server: srv}
	if m.stopBrowse == nil {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		m.stopBrowse, m.browseDone = cancel, done
		m.wg.Add(1)
		go func() {
			defer m.wg.Done()
			defer close(done)
			m.browse(ctx)
		}()
	} else {
		select {
		case m.kick <- struct{}{}:
		default:
		}
	}
	return nil
}

// Leave withdraws the announcement of topic, and stops the browse if no
// topic is left.
func (m *MDNS) Leave(topic Topic) error {
	m.mu.Lock()
	h := mdnsTopicHash(topic)
	t := m.topics[h]
	if t == nil {
		m.mu.Unlock()
		return nil
	}
	delete(m.topics, h)
	var stop context.CancelFunc
	var done chan struct{}
	if len(m.topics) == 0 {
		stop, done = m.stopBrowse, m.browseDone
		m.stopBrowse, m.browseDone = nil, nil
	}
	m.mu.Unlock()

	t.server.Shutdown()
	if stop != nil {
		stop()
		<-done
	}
	m.waitReports()
	return nil
}

// Close withdraws every announcement and stops browsing; no goroutine it
// started outlives it.
func (m *MDNS) Close() error {
	m.mu.Lock()
	m.closed = true
	topics := m.topics
	m.topics = make(map[string]*mdnsTopic)
	stop := m.stopBrowse
	m.stopBrowse, m.browseDone = nil, nil
	m.mu.Unlock()

	for _, t := range topics {
		t.server.Shutdown()
	}
	if stop != nil {
		stop()
	}
	m.wg.Wait()
	m.waitReports()
	return nil
}

// waitReports returns once no found call is running: one that started
// before its topic left the map may still be, and none may run after Leave
// or Close returns.
func (m *MDNS) waitReports() {
	m.reportMu.Lock()
	defer m.reportMu.Unlock()
}

// interfaces looks the configured interfaces up anew, since an interface
// that went away and came back has a new index. nil means all.
func (m *MDNS) interfaces() ([]net.Interface, error) {
	if len(m.cfg.Interfaces) == 0 {
		return nil, nil
	}
	ifaces := make([]net.Interface, 0, len(m.cfg.Interfaces))
	for _, name := range m.cfg.Interfaces {
		ifi, err := net.InterfaceByName(name)
		if err != nil {
			return nil, fmt.Errorf("swarm: mdns: interface %q: %w", name, err)
		}
		ifaces = append(ifaces, *ifi)
	}
	return ifaces, nil
}

// browse runs one browse after another until ctx ends.
func (m *MDNS) browse(ctx context.Context) {
	for ctx.Err() == nil {
		// This round sees every topic joined so far.
		select {
		case <-m.kick:
		default:
		}
		round, cancel := context.WithTimeout(ctx, m.cfg.BrowseInterval)
		m.browseRound(round, cancel)
		// A round that failed to start waits out its time rather than
		// retrying at once.
		<-round.Done()
		cancel()
	}
}

// browseRound browses until ctx ends or a Join kicks, reporting what it
// finds. It returns once zeroconf's Browse has returned, and with it every
// goroutine and socket of the round.
//
// zeroconf fails a browse outright when one IP family cannot join the
// multicast group (IPv6 is often disabled in containers), so a round falls
// back to one family, and remembers which worked.
func (m *MDNS) browseRound(ctx context.Context, cancel context.CancelFunc) {
	started := time.Now()
	ifaces, err := m.interfaces()
	if err != nil {
		m.log.Warn("mdns: cannot browse", "err", err)
		return
	}
	order := []zeroconf.IPType{zeroconf.IPv4AndIPv6, zeroconf.IPv4, zeroconf.IPv6}
	if last := zeroconf.IPType(m.ipTraffic.Load()); last != 0 {
		order = slices.DeleteFunc(order, func(t zeroconf.IPType) bool { return t == last })
		order = slices.Insert(order, 0, last)
	}
	seen := make(map[mdnsSeen]bool)
	kick := m.kick
	var restart <-chan time.Time
	for _, t := range order {
		opts := []zeroconf.ClientOption{zeroconf.SelectIPTraffic(t)}
		if ifaces != nil {
			opts = append(opts, zeroconf.SelectIfaces(ifaces))
		}
		// zeroconf sends each entry without a select: keep reading until
		// Browse has returned, or it never does.
		entries := make(chan *zeroconf.ServiceEntry)
		done := make(chan error, 1)
		go func() { done <- zeroconf.Browse(ctx, mdnsService, mdnsDomain, entries, opts...) }()
		for browsing := true; browsing; {
			select {
			case e, ok := <-entries:
				if !ok {
					entries = nil // closed as Browse ends; done follows
					continue
				}
				m.handleEntry(e, seen)
			case err := <-done:
				browsing = false
				if err == nil || ctx.Err() != nil {
					m.ipTraffic.Store(uint32(t))
					return
				}
				m.log.Debug("mdns: browse failed, trying another IP family", "family", t, "err", err)
			case <-kick:
				kick = nil
				// Joins in a burst restart the browse once, and no sooner
				// than a second after it started.
				wait := time.NewTimer(time.Until(started.Add(mdnsMinQueryGap)))
				defer wait.Stop()
				restart = wait.C
			case <-restart:
				restart = nil
				cancel()
			}
		}
	}
	m.log.Warn("mdns: cannot browse on any IP family")
}

// mdnsSeen is a report made in the current browse.
type mdnsSeen struct {
	hash string
	c    Candidate
}

// handleEntry reports e's addresses under its topic if this node joined it
// and e is not this node's.
func (m *MDNS) handleEntry(e *zeroconf.ServiceEntry, seen map[mdnsSeen]bool) {
	ignore := func(reason string) {
		m.log.Debug("mdns: ignored announcement", "instance", e.Instance, "reason", reason)
	}
	if strings.HasPrefix(e.Instance, m.prefix) {
		ignore("own")
		return
	}
	var h string
	var key PeerKey
	for _, s := range e.Text {
		name, value, _ := strings.Cut(s, "=")
		switch name {
		case "t":
			h = value
		case "k":
			if err := key.UnmarshalText([]byte(value)); err != nil {
				ignore("bad key")
				return
			}
		}
	}
	if h == "" {
		ignore("no topic")
		return
	}
	if !m.cfg.Self.IsZero() && key == m.cfg.Self {
		ignore("own key")
		return
	}
	if e.Port < 1 || e.Port > 65535 {
		ignore("bad port")
		return
	}
	addrs := mdnsAddrs(e)
	if len(addrs) == 0 {
		ignore("no usable address")
		return
	}

	m.reportMu.Lock()
	defer m.reportMu.Unlock()
	m.mu.Lock()
	t := m.topics[h]
	m.mu.Unlock()
	if t == nil {
		ignore("other topic")
		return
	}
	for _, a := range addrs {
		c := Candidate{Addr: netip.AddrPortFrom(a, uint16(e.Port)), Key: key}
		if seen[mdnsSeen{h, c}] {
			continue
		}
		seen[mdnsSeen{h, c}] = true
		m.log.Debug("mdns: found", "instance", e.Instance, "addr", c.Addr, "key", c.Key)
		t.found(c)
	}
}

// mdnsAddrs returns the addresses of e a peer can be dialled on.
func mdnsAddrs(e *zeroconf.ServiceEntry) []netip.Addr {
	var out []netip.Addr
	for _, ip := range slices.Concat(e.AddrIPv4, e.AddrIPv6) {
		a, ok := netip.AddrFromSlice(ip)
		if !ok {
			continue
		}
		a = a.Unmap()
		if a.IsUnspecified() || a.IsLoopback() || a.IsMulticast() ||
			a.Is6() && a.IsLinkLocalUnicast() || slices.Contains(out, a) {
			continue
		}
		out = append(out, a)
	}
	return out
}

// mdnsTopicHash names topic on the network without revealing it.
func mdnsTopicHash(topic Topic) string {
	h, err := blake2b.New256([]byte(mdnsHashKey))
	if err != nil {
		panic(err) // only for a key over 64 bytes
	}
	h.Write(topic[:])
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// mdnsTXT is the TXT record announcing topic hash h.
func mdnsTXT(h string, self PeerKey) []string {
	txt := []string{"t=" + h}
	if !self.IsZero() {
		txt = append(txt, "k="+self.String())
	}
	return txt
}
