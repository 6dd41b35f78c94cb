package usersession

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/hashicorp/go-msgpack/v2/codec"
	"golang.org/x/crypto/blake2b"

	"github.com/hyperfeed/hyperfeed/feed"
	"github.com/hyperfeed/hyperfeed/swarm"
)

// The node's data directory (Config.Dir):
//
//	identity   the user's identity (SaveIdentity), mode 0600
//	peer.key   the node's swarm key pair (swarm.LoadOrCreateKeyPair)
//	feeds/     a feed.Store: this device's feed, every other device feed
//	           the node has learnt of, and the directory's rendezvous feed
//
// The device feed is the store's named feed "device"; if the identity
// unregistered the alias it was certified for, the next start takes
// "device.1", then "device.2" and so on, since a device feed keeps one
// certificate for its whole life.
const (
	identityFile   = "identity"
	peerKeyFile    = "peer.key"
	feedsDir       = "feeds"
	deviceFeedName = "device"
	// maxGenerations bounds the device feeds a data directory may go
	// through, one per unregistering.
	maxGenerations = 1000
)

// The directory's rendezvous: a feed key derived from the topic, which
// every node computes alike and nobody can write, since no one knows a
// secret key for it. Replicating its empty feed joins the swarm topic of
// its discovery key and opens a channel with every node of the directory,
// on which nodes tell each other, by extension, the device feeds they know.
const directoryLabel = "hyperfeed/usersession/directory/v1\x00"

// The device lists. A node publishes the device feeds it holds a
// certificate of, each as [device key (32-byte binary), blocks held
// (uint)], sorted by key, as msgpack arrays of at most devicesPerChunk
// entries (about 45 KiB, under swarm.MaxExtensionPayload), under the
// extension names "devices/0" to "devices/3". Chunk 0 is always published,
// and published last after a change, so that a peer that has chunk 0 has
// had the chance to get the others. A node takes in at most maxDevices
// devices; what peers list beyond is ignored.
const (
	devicesExtension = "devices/"
	devicesPerChunk  = 1024
	deviceChunks     = 4
	maxDevices       = devicesPerChunk * deviceChunks
)

// deliverTimeout bounds how long Logout and Unregister wait for the
// connected peers to take the entry before the node closes, unless none
// has taken it by then (see Node.deliver).
const deliverTimeout = 2 * time.Second

// directoryKey is the rendezvous feed key of topic.
func directoryKey(topic string) feed.Key {
	h, _ := blake2b.New256(nil) // unkeyed: never fails
	h.Write([]byte(directoryLabel))
	h.Write([]byte(topic))
	return feed.Key(h.Sum(nil))
}

// current is the node StartUserSession started last, for the package's
// GetUsers and FindUserSession; nil once it closed.
var current atomic.Pointer[Node]

// GetUsers returns the directory of the node started last (see
// Node.GetUsers), or ErrNoSession if there is none or it closed.
func GetUsers() (map[string]UserSession, error) {
	n := current.Load()
	if n == nil {
		return nil, fmt.Errorf("usersession: get users: %w", ErrNoSession)
	}
	return n.GetUsers(), nil
}

// FindUserSession looks name up in the directory of the node started last
// (see Node.FindUserSession), or fails with ErrNoSession if there is none
// or it closed.
func FindUserSession(name string) (UserSession, error) {
	n := current.Load()
	if n == nil {
		return UserSession{}, fmt.Errorf("usersession: find %q: %w", shorten(name), ErrNoSession)
	}
	return n.FindUserSession(name)
}

// Node is a running user session: this device's feed, the device feeds of
// everyone else it has learnt of, the swarm that replicates them, and the
// directory folded from them, with presence. Make one with
// StartUserSession; end it with Logout, Unregister or Close. Its methods
// are safe for concurrent use.
type Node struct {
	cfg   Config
	log   *slog.Logger
	alias string // normalized
	id    *Identity

	store     *feed.Store
	sw        *swarm.Swarm
	dirKey    feed.Key // the rendezvous feed's
	dirRep    *swarm.Replicator
	own       *feed.Feed
	ownKey    DeviceKey
	ownSecret ed25519.PrivateKey
	ownRep    *swarm.Replicator
	swarmAddr string // this node's, as its logins publish it
	started   time.Time

	// ready opens the swarm's firewall once the directory's extension
	// handlers are in place, so that no peer's device list arrives before
	// there is a handler to take it.
	ready atomic.Bool

	ctx    context.Context // ends at Close
	cancel context.CancelFunc
	wg     sync.WaitGroup // the loop and the watchers
	kick   chan struct{}  // something is pending for the loop

	// appendMu orders the node's own appends (start, Logout, Unregister).
	appendMu sync.Mutex

	// What callbacks on other goroutines (feed events, extension
	// handlers) report, for the loop. They take only pendMu, never mu, so
	// that no swarm or feed goroutine ever waits for the directory.
	pendMu sync.Mutex
	pend   pending

	mu       sync.Mutex
	closed   bool
	dir      *Directory
	devices  map[DeviceKey]*deviceFeed
	peers    map[swarm.PeerKey]*peerState
	addrs    map[DeviceKey]string   // swarm address of each device's last login
	dialed   map[string]bool        // addresses connected to since the last loss
	listed   map[DeviceKey]uint64   // the most blocks any peer listed of a device
	progress time.Time              // when the last block or device came in
	presence map[DeviceKey]reach    // what the directory was told
	users    map[string]UserSession // the listing events are computed against
	watchers map[*watcher]bool
	changed  chan struct{} // closed, and replaced, at every refresh
	loggedIn bool
	login    uint64 // the index of the current Login in the own feed
	selfOK   bool   // the own session was within the limit at the last refresh
	selfName string // the name the own session was listed under
	full     bool   // maxDevices was reached (logged once)
	// touched: the directory changed since the listing was last compared;
	// listChanged: since the device list was last published.
	touched, listChanged bool
	// published holds the device list chunks published last.
	published [deviceChunks][]byte
}

// deviceFeed is a device feed the node follows.
type deviceFeed struct {
	f           *feed.Feed
	fork        uint64 // the fork applied to the directory
	unsubscribe func()
}

// peerState is what the node knows of a swarm peer.
type peerState struct {
	up    bool
	since time.Time // when its session started, or ended
	// heard: it has sent its device list (chunk 0) at least once. It stays
	// set across reconnections: what it listed is known.
	heard bool
}

// reach is what the node last told the directory of a device.
type reach struct {
	online bool
	live   bool // connected now (or this node's own device)
	seen   time.Time
}

// pending is what the loop has yet to take in.
type pending struct {
	dirty  map[DeviceKey]bool
	listed map[DeviceKey]uint64
	heard  map[swarm.PeerKey]bool
}

func newPending() pending {
	return pending{dirty: map[DeviceKey]bool{}, listed: map[DeviceKey]uint64{}, heard: map[swarm.PeerKey]bool{}}
}

// maxPendingListed bounds what peers' lists may queue between two turns of
// the loop.
const maxPendingListed = 2 * maxDevices

// StartUserSession starts this device's session as s.Alias: it opens the
// data directory (creating the identity on first use), joins the
// directory's swarm, certifies the device for the alias on its first
// start, and logs in with s's address and metadata. The returned node is
// also the package's current one (GetUsers, FindUserSession).
//
// From s it takes Alias (required), IP (default: the listen address's IP if
// it names one, else the first IPv4 address of an up, non-loopback
// interface among Config.Interfaces, else 127.0.0.1), Port (default: the
// port the node listens on for peers), DeviceName (default: the host name;
// used only when the device is first certified) and Metadata.
//
// On a device's first start, before it claims the alias, the node settles:
// it waits until every connected peer has sent its device list and those
// feeds have come in, or for one HeartbeatInterval if no peer answers. If
// another identity owns the alias then, it fails with ErrAliasTaken. A
// start that would exceed the identity's session limit, counting the
// user's other devices online, fails with ErrSessionLimit. ctx bounds the
// start, not the session.
func StartUserSession(ctx context.Context, s UserSession, cfg Config) (*Node, error) {
	alias, err := NormalizeAlias(s.Alias)
	if err != nil {
		return nil, fmt.Errorf("usersession: start: %w", err)
	}
	if err := cfg.defaults(alias); err != nil {
		return nil, fmt.Errorf("usersession: start %s: %w", alias, err)
	}
	n, err := startNode(ctx, alias, s, cfg)
	if err != nil {
		return nil, fmt.Errorf("usersession: start %s: %w", alias, err)
	}
	current.Store(n)
	return n, nil
}

func startNode(ctx context.Context, alias string, s UserSession, cfg Config) (_ *Node, err error) {
	login, deviceName, err := sessionFields(alias, s, cfg)
	if err != nil {
		return nil, err
	}
	if _, err := swarm.NewStatic(cfg.Peers...); err != nil {
		return nil, fmt.Errorf("%w: Peers: %w", ErrInvalidConfig, err)
	}

	n := newNode(alias, cfg)
	defer func() {
		if err != nil {
			n.Close()
		}
	}()
	kp, err := n.openFiles()
	if err != nil {
		return nil, err
	}
	if err := n.startSwarm(kp, login.IP); err != nil {
		return nil, err
	}
	if login.Port == 0 {
		login.Port = n.sw.Port()
	}
	login.Swarm = n.swarmAddr

	n.mu.Lock()
	_, certErr := n.dir.Certificate(n.ownKey)
	n.mu.Unlock()
	if certErr != nil {
		if err := n.settle(ctx); err != nil {
			return nil, fmt.Errorf("waiting for peers' devices: %w", err)
		}
		n.mu.Lock()
		owner, owned := n.dir.Owner(alias)
		n.mu.Unlock()
		if owned && owner != n.id.Key() {
			return nil, fmt.Errorf("%w: %q belongs to identity %s", ErrAliasTaken, alias, owner)
		}
	}
	if err := n.checkLimit(ctx); err != nil {
		return nil, err
	}
	if certErr != nil {
		now := time.Now()
		n.mu.Lock()
		claimed, ok := n.claimLocked()
		n.mu.Unlock()
		if !ok {
			claimed = now.UnixMilli()
		}
		c, err := NewCertificate(n.id, Certificate{
			Device: n.ownKey, Peer: kp.Public, Alias: alias, DeviceName: deviceName,
			Claimed: claimed, Created: max(claimed, now.UnixMilli()),
		})
		if err != nil {
			return nil, err
		}
		if _, err := n.append(c); err != nil {
			return nil, err
		}
		n.log.Info("usersession: device certified", "device", n.ownKey, "identity", n.id.Key())
	}
	login.Started = time.Now().UnixMilli()
	if _, err := n.append(login); err != nil {
		return nil, err
	}
	n.log.Info("usersession: logged in", "ip", login.IP, "port", login.Port, "swarm", login.Swarm)
	return n, nil
}

// newNode returns a node that has opened nothing yet, so that Close may end
// a start that fails at any point. An observer is such a node that never
// opens a device of its own (see Observe): every method it uses copes with
// a nil identity and own feed.
func newNode(alias string, cfg Config) *Node {
	nctx, cancel := context.WithCancel(context.Background())
	n := &Node{
		cfg:         cfg,
		log:         cfg.Logger.With("alias", alias),
		alias:       alias,
		dirKey:      directoryKey(cfg.Topic),
		started:     time.Now(),
		ctx:         nctx,
		cancel:      cancel,
		kick:        make(chan struct{}, 1),
		pend:        newPending(),
		dir:         NewDirectory(cfg.MaxSessions),
		devices:     map[DeviceKey]*deviceFeed{},
		peers:       map[swarm.PeerKey]*peerState{},
		addrs:       map[DeviceKey]string{},
		dialed:      map[string]bool{},
		listed:      map[DeviceKey]uint64{},
		presence:    map[DeviceKey]reach{},
		watchers:    map[*watcher]bool{},
		changed:     make(chan struct{}),
		touched:     true,
		listChanged: true,
	}
	return n
}

// sessionFields checks s and returns the Login to append (Port 0 standing
// for the swarm's port) and the device name to certify.
func sessionFields(alias string, s UserSession, cfg Config) (*Login, string, error) {
	if s.Port < 0 || s.Port > 65535 {
		return nil, "", fmt.Errorf("%w: port %d, want 1 to 65535 (or 0 for the node's)", ErrBadEntry, s.Port)
	}
	ip := s.IP
	if ip == "" {
		ip = defaultIP(cfg.ListenAddr, cfg.Interfaces)
	} else if a, err := netip.ParseAddr(ip); err == nil {
		ip = a.Unmap().String() // canonical, as a login must be
	}
	login := &Login{Alias: alias, IP: ip, Port: s.Port, Metadata: maps.Clone(s.Metadata)}
	probe := *login
	probe.Port = max(probe.Port, 1) // 0 is filled in once the node listens
	if err := probe.check(); err != nil {
		return nil, "", err
	}
	name := s.DeviceName
	if name == "" {
		name = hostName()
	} else if len(name) > MaxDeviceName || !printable(name) {
		return nil, "", fmt.Errorf("%w: device name %q: at most %d bytes of printable UTF-8", ErrBadEntry, shorten(name), MaxDeviceName)
	}
	return login, name, nil
}

// hostName is the default device name: the host's name, cut to fit.
func hostName() string {
	h, err := os.Hostname()
	if err != nil || !printable(h) {
		return ""
	}
	for len(h) > MaxDeviceName {
		_, size := utf8.DecodeLastRuneInString(h)
		h = h[:len(h)-size]
	}
	return h
}

// defaultIP is the IP address a login publishes when the caller gives
// none: the listen address's, if it names one; else the first IPv4
// address, neither loopback nor link-local, of an up interface among
// ifaces (all if none); else 127.0.0.1.
func defaultIP(listen string, ifaces []string) string {
	if host, _, err := net.SplitHostPort(listen); err == nil {
		if a, err := netip.ParseAddr(host); err == nil && !a.IsUnspecified() && a.Zone() == "" {
			return a.Unmap().String()
		}
	}
	var list []net.Interface
	if len(ifaces) == 0 {
		list, _ = net.Interfaces()
	} else {
		for _, name := range ifaces {
			if ifi, err := net.InterfaceByName(name); err == nil {
				list = append(list, *ifi)
			}
		}
	}
	for _, ifi := range list {
		if ifi.Flags&net.FlagUp == 0 || ifi.Flags&net.FlagLoopback != 0 {
			continue
		}
		addrs, err := ifi.Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			ipn, ok := a.(*net.IPNet)
			if !ok {
				continue
			}
			if ip, ok := netip.AddrFromSlice(ipn.IP); ok {
				ip = ip.Unmap()
				if ip.Is4() && !ip.IsLoopback() && !ip.IsLinkLocalUnicast() {
					return ip.String()
				}
			}
		}
	}
	return "127.0.0.1"
}

// swarmAddr is the address other nodes can dial this one at: the listen
// address's IP if it names one, else the published IP, with the port the
// swarm listens on.
func swarmAddr(listen, ip string, port int) string {
	host := ip
	if h, _, err := net.SplitHostPort(listen); err == nil {
		if a, err := netip.ParseAddr(h); err == nil && !a.IsUnspecified() && a.Zone() == "" {
			host = a.Unmap().String()
		}
	}
	return net.JoinHostPort(host, strconv.Itoa(port))
}

// openFiles opens the data directory: the identity (created on first
// use), the feeds (openFeeds), and this device's feed.
func (n *Node) openFiles() (swarm.KeyPair, error) {
	dir := n.cfg.Dir
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return swarm.KeyPair{}, err
	}
	path := filepath.Join(dir, identityFile)
	id, err := LoadIdentity(path, n.cfg.Passphrase)
	if errors.Is(err, fs.ErrNotExist) {
		if id, err = GenerateIdentity(); err == nil {
			err = SaveIdentity(path, id, n.cfg.Passphrase)
		}
		if err == nil {
			n.log.Info("usersession: new identity", "identity", id.Key(), "file", path)
		}
	}
	if err != nil {
		return swarm.KeyPair{}, err
	}
	n.id = id
	kp, err := n.openFeeds()
	if err != nil {
		return swarm.KeyPair{}, err
	}
	return kp, n.openDevice()
}

// openFeeds opens the swarm key, the store and every feed in it. It folds
// every device feed into the directory, so that the node answers from disk
// before it meets any peer.
func (n *Node) openFeeds() (swarm.KeyPair, error) {
	dir := n.cfg.Dir
	kp, err := swarm.LoadOrCreateKeyPair(filepath.Join(dir, peerKeyFile))
	if err != nil {
		return swarm.KeyPair{}, err
	}
	n.store, err = feed.OpenStore(filepath.Join(dir, feedsDir), &feed.StoreOptions{Logger: n.cfg.Logger})
	if err != nil {
		return swarm.KeyPair{}, err
	}
	// The store locks feed by feed: the rendezvous feed first, so that a
	// second process on this directory fails here (feed.ErrLocked), not
	// with a warning for every device feed.
	if _, err := n.store.Get(n.dirKey); err != nil {
		return swarm.KeyPair{}, err
	}

	dirDK := n.dirKey.DiscoveryKey()
	dks, err := n.store.List()
	if err != nil {
		return swarm.KeyPair{}, err
	}
	for _, dk := range dks {
		if dk == dirDK {
			continue // the rendezvous feed of this topic: no device
		}
		f, err := n.store.Find(dk)
		if err != nil {
			// One damaged feed should not keep the user out.
			n.log.Warn("usersession: cannot open a stored feed", "discovery", dk, "err", err)
			continue
		}
		n.follow(f)
	}
	now := time.Now()
	n.mu.Lock()
	for dev := range n.devices {
		n.applyLocked(dev, now)
	}
	n.refreshLocked(now)
	n.mu.Unlock()
	return kp, nil
}

// openDevice picks this device's feed: the first generation whose
// certificate has not been unregistered, or that has none yet.
func (n *Node) openDevice() error {
	for g := range maxGenerations {
		name := deviceFeedName
		if g > 0 {
			name = deviceFeedName + "." + strconv.Itoa(g)
		}
		sk, err := n.store.NamedKey(name)
		if err != nil {
			return err
		}
		key := DeviceKey(feed.KeyOf(sk))
		n.mu.Lock()
		cert, certErr := n.dir.Certificate(key)
		_, sessErr := n.dir.Session(key)
		_, known := n.devices[key]
		n.mu.Unlock()
		if certErr == nil {
			switch {
			case cert.Identity != n.id.Key():
				return fmt.Errorf("the data directory's device %s is certified for identity %s, not %s (was the identity file replaced?)",
					key, cert.Identity, n.id.Key())
			case errors.Is(sessErr, ErrUnregistered):
				continue // retired: its certificate is void for good
			case cert.Alias != n.alias:
				return fmt.Errorf("%w: device %s is %q's, not %q's", ErrAliasMismatch, key, cert.Alias, n.alias)
			}
		}
		f, err := n.store.Named(name)
		if err != nil {
			return err
		}
		if certErr != nil && f.Len() > 0 {
			continue // entry 0 is no certificate of ours: unusable
		}
		if !known {
			n.follow(f)
		}
		n.own, n.ownKey, n.ownSecret = f, key, sk
		return nil
	}
	return fmt.Errorf("the data directory has used up its %d device feeds", maxGenerations)
}

// follow starts following a device feed: its changes mark it for the loop.
// Replication starts with the swarm (see attach).
func (n *Node) follow(f *feed.Feed) *deviceFeed {
	key := DeviceKey(f.Key())
	d := &deviceFeed{f: f, fork: f.Fork()}
	d.unsubscribe = f.Subscribe(func(e feed.Event) {
		if e.Kind != feed.EventWant {
			n.markDirty(key)
		}
	})
	n.mu.Lock()
	n.devices[key] = d
	n.mu.Unlock()
	n.markDirty(key)
	return d
}

// attach replicates a device feed on the swarm, without joining its topic:
// the directory's connections carry it. A replica is downloaded whole, and
// followed as it grows.
func (n *Node) attach(f *feed.Feed) (*swarm.Replicator, error) {
	rep, err := n.sw.Attach(f)
	if err != nil {
		return nil, err
	}
	if !f.Writable() {
		rep.Download(0, swarm.Live)
	}
	return rep, nil
}

// startSwarm starts the swarm, replicates the directory's rendezvous feed
// and every device feed, and starts the loop. ip is the address the
// node's logins publish.
func (n *Node) startSwarm(kp swarm.KeyPair, ip string) error {
	var disc []swarm.Discovery
	if !n.cfg.NoMDNS {
		m, err := swarm.NewMDNS(swarm.MDNSConfig{Interfaces: n.cfg.Interfaces, Self: kp.Public, Logger: n.cfg.Logger})
		if err != nil {
			return fmt.Errorf("%w: %w", ErrInvalidConfig, err)
		}
		disc = append(disc, m)
	}
	ka := n.cfg.keepAlive()
	sw, err := swarm.New(nil, swarm.Config{
		KeyPair:      kp,
		Secret:       n.cfg.Secret,
		ListenAddr:   n.cfg.ListenAddr,
		Discovery:    disc,
		Firewall:     func(swarm.PeerKey) bool { return n.ready.Load() },
		KeepAlive:    ka,
		ReconnectMin: min(100*time.Millisecond, ka),
		ReconnectMax: n.cfg.reconnectMax(),
		Logger:       n.cfg.Logger,
	})
	if err != nil {
		for _, d := range disc {
			d.Close()
		}
		return err
	}
	n.sw = sw
	n.swarmAddr = swarmAddr(n.cfg.ListenAddr, ip, sw.Port())

	dirFeed, err := n.store.Get(n.dirKey)
	if err != nil {
		return err
	}
	if n.dirRep, err = sw.Attach(dirFeed); err != nil {
		return err
	}
	for i := range deviceChunks {
		n.dirRep.HandleExtension(devicesExtension+strconv.Itoa(i), n.onDevices(i))
	}
	n.mu.Lock()
	feeds := make([]*feed.Feed, 0, len(n.devices))
	for _, d := range n.devices {
		feeds = append(feeds, d.f)
	}
	n.mu.Unlock()
	for _, f := range feeds {
		rep, err := n.attach(f)
		if err != nil {
			return err
		}
		if f == n.own {
			n.ownRep = rep
		}
	}
	// Watch before any peer can connect, so that none is missed.
	events := sw.Watch(n.ctx)
	n.ready.Store(true)
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		n.run(events)
	}()
	for _, p := range n.cfg.Peers {
		if err := sw.Connect(p); err != nil {
			return fmt.Errorf("%w: Peers: %w", ErrInvalidConfig, err)
		}
	}
	if _, err := sw.Replicate(dirFeed); err != nil {
		return fmt.Errorf("joining topic %q: %w", n.cfg.Topic, err)
	}
	return nil
}

// markDirty tells the loop that dev's feed changed.
func (n *Node) markDirty(dev DeviceKey) {
	n.pendMu.Lock()
	n.pend.dirty[dev] = true
	n.pendMu.Unlock()
	n.poke()
}

func (n *Node) poke() {
	select {
	case n.kick <- struct{}{}:
	default:
	}
}

// listedDevice is one entry of a device list.
type listedDevice struct {
	Key    []byte
	Length uint64
}

// onDevices returns the handler of device list chunk i. It runs on a
// session's goroutine, so it only decodes and queues.
func (n *Node) onDevices(i int) func(swarm.PeerKey, []byte) {
	return func(from swarm.PeerKey, payload []byte) {
		list, err := decodeDeviceList(payload)
		if err != nil {
			n.log.Debug("usersession: bad device list", "peer", from, "chunk", i, "err", err)
			return
		}
		n.pendMu.Lock()
		for _, d := range list {
			key := DeviceKey(d.Key)
			if old, ok := n.pend.listed[key]; ok || len(n.pend.listed) < maxPendingListed {
				n.pend.listed[key] = max(old, d.Length)
			}
		}
		if i == 0 {
			n.pend.heard[from] = true
		}
		n.pendMu.Unlock()
		n.poke()
	}
}

func decodeDeviceList(payload []byte) ([]listedDevice, error) {
	var list []listedDevice
	dec := codec.NewDecoderBytes(payload, msgpackHandle)
	if err := dec.Decode(&list); err != nil {
		return nil, err
	}
	if dec.NumBytesRead() != len(payload) {
		return nil, fmt.Errorf("%d bytes after the list", len(payload)-dec.NumBytesRead())
	}
	if len(list) > devicesPerChunk {
		return nil, fmt.Errorf("%d devices, at most %d", len(list), devicesPerChunk)
	}
	for _, d := range list {
		if len(d.Key) != len(DeviceKey{}) {
			return nil, fmt.Errorf("device key of %d bytes", len(d.Key))
		}
	}
	return list, nil
}

func encodeDeviceList(list []listedDevice) []byte {
	var b []byte
	// Slices of byte strings and integers always encode.
	_ = codec.NewEncoderBytes(&b, msgpackHandle).Encode(list)
	return b
}

// run is the node's loop: it takes in peers coming and going, device
// lists, and feed changes, and keeps the directory, the presence, the
// published device list and the connections up to date.
func (n *Node) run(events <-chan swarm.PeerEvent) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		wake := n.step()
		timer.Stop()
		if !wake.IsZero() {
			timer.Reset(time.Until(wake))
		}
		select {
		case <-n.ctx.Done():
			return
		case <-n.kick:
		case e, ok := <-events:
			if !ok {
				events = nil
				continue
			}
			n.notePeer(e)
		case <-timer.C:
		}
	}
}

// notePeer records a peer connecting or disconnecting. After a loss, the
// devices not connected are dialled again (see dialsLocked).
func (n *Node) notePeer(e swarm.PeerEvent) {
	if !e.Up && n.sw.Connected(e.Key) {
		// A newer session to the peer replaced this one (both dialled at
		// once), and the swarm registered it before reporting this end:
		// the peer never went away, so do not show it leaving.
		n.log.Debug("usersession: peer session replaced", "peer", e.Key)
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	p := n.peers[e.Key]
	if p == nil {
		p = &peerState{}
		n.peers[e.Key] = p
	}
	p.up, p.since = e.Up, time.Now()
	n.log.Debug("usersession: peer", "peer", e.Key, "addr", e.Addr, "up", e.Up)
	if !e.Up {
		clear(n.dialed)
	}
}

// step takes in what is pending, and returns when to look again (zero:
// when something happens).
func (n *Node) step() time.Time {
	n.pendMu.Lock()
	p := n.pend
	n.pend = newPending()
	n.pendMu.Unlock()

	// Devices newly listed: open and replicate them, outside the lock,
	// since the swarm and the store take their own.
	now := time.Now()
	var fresh []DeviceKey
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return time.Time{}
	}
	for k := range p.heard {
		ps := n.peers[k]
		if ps == nil {
			ps = &peerState{}
			n.peers[k] = ps
		}
		ps.heard = true
	}
	for _, k := range slices.SortedFunc(maps.Keys(p.listed), compareKeys) {
		l := p.listed[k]
		if feed.Key(k) == n.dirKey {
			continue // a peer's mistake, or mischief: no device
		}
		if _, ok := n.devices[k]; !ok {
			if len(n.devices)+len(fresh) >= maxDevices {
				if !n.full {
					n.full = true
					n.log.Warn("usersession: too many devices, ignoring the rest", "max", maxDevices)
				}
				continue
			}
			fresh = append(fresh, k)
		}
		if l > n.listed[k] {
			n.listed[k] = l
			n.progress = now
		}
	}
	n.mu.Unlock()
	for _, k := range fresh {
		f, err := n.store.Get(feed.Key(k))
		if err != nil {
			n.log.Warn("usersession: cannot open a device feed", "device", k, "err", err)
			continue
		}
		n.follow(f)
		if _, err := n.attach(f); err != nil {
			return time.Time{} // the swarm closed: so is the node
		}
		n.log.Debug("usersession: new device", "device", k)
	}

	// follow marked the new devices for folding; take those marks, and
	// whatever else changed meanwhile, now rather than on the next turn.
	n.pendMu.Lock()
	for k := range n.pend.dirty {
		p.dirty[k] = true
	}
	clear(n.pend.dirty)
	n.pendMu.Unlock()

	n.mu.Lock()
	for k := range p.dirty {
		n.applyLocked(k, now)
	}
	n.refreshLocked(now)
	pubs := n.chunksLocked()
	dials := n.dialsLocked()
	wake := n.wakeLocked(now)
	n.mu.Unlock()

	for _, pub := range pubs {
		if err := n.dirRep.Publish(pub.name, pub.payload); err != nil {
			n.log.Warn("usersession: cannot publish the device list", "err", err)
		}
	}
	for _, a := range dials {
		if err := n.sw.Dial(a); err != nil {
			n.log.Debug("usersession: cannot connect", "addr", a, "err", err)
		}
	}
	return wake
}

func compareKeys(a, b DeviceKey) int { return bytes.Compare(a[:], b[:]) }

// parseAddrPort parses an IP:port address as the swarm reports peers'.
func parseAddrPort(s string) (netip.AddrPort, bool) {
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return netip.AddrPort{}, false
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), true
}

// applyLocked folds the blocks of dev's feed that the directory has not
// taken yet, as far as the feed holds them without a gap. A feed that
// moved to another fork is folded again from the start.
func (n *Node) applyLocked(dev DeviceKey, now time.Time) {
	d := n.devices[dev]
	if d == nil {
		return
	}
	if fork := d.f.Fork(); fork != d.fork {
		n.dir.Reset(dev)
		delete(n.addrs, dev)
		d.fork = fork
		n.touched, n.listChanged = true, true
	}
	for i := n.dir.Next(dev); d.f.Has(i); i++ {
		b, err := d.f.Get(doneContext, i)
		if err != nil {
			n.log.Debug("usersession: cannot read a device block", "device", dev, "index", i, "err", err)
			return
		}
		n.progress = now
		n.touched, n.listChanged = true, true
		if err := n.dir.Apply(dev, i, b); err != nil {
			n.log.Debug("usersession: device block skipped", "device", dev, "index", i, "err", err)
			continue
		}
		// The directory keeps no swarm address; the node does, to dial.
		switch e, _ := DecodeEntry(b); e := e.(type) {
		case *Login:
			n.addrs[dev] = e.Swarm
		case *Logout:
			delete(n.addrs, dev)
		}
	}
}

// doneContext makes feed.Get read only what a feed holds, never wait.
var doneContext = func() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}()

// refreshLocked brings the presence up to date, computes the events since
// the last refresh and hands them out, and wakes whoever waits on a
// change.
func (n *Node) refreshLocked(now time.Time) {
	for dev := range n.devices {
		p := n.presenceOfLocked(dev, now)
		if old, ok := n.presence[dev]; !ok || old != p {
			n.presence[dev] = p
			n.dir.SetPresence(dev, p.online, p.seen)
			n.touched = true
		}
	}
	if n.touched {
		n.touched = false
		n.compareLocked(now)
	}
	close(n.changed)
	n.changed = make(chan struct{})
}

// compareLocked hands out the events since the listing was last compared,
// and notices this node's own session going over the limit or losing its
// alias.
func (n *Node) compareLocked(now time.Time) {
	cur := n.dir.Users()
	events := diffUsers(n.users, cur)
	n.users = cur
	for i := range events {
		events[i].Session = n.displayLocked(events[i].Session, now)
	}
	if n.loggedIn {
		verr := n.dir.SessionValid(n.ownKey)
		if n.selfOK && verr != nil {
			n.log.Warn("usersession: this session is no longer valid", "err", verr)
			if errors.Is(verr, ErrSessionLimit) {
				self, _ := n.dir.Session(n.ownKey)
				events = append(events, Event{EventSessionLimit, n.displayLocked(self, now)})
			}
		}
		n.selfOK = verr == nil
		if self, err := n.dir.Session(n.ownKey); err == nil && self.Alias != n.selfName {
			if self.Alias != n.alias {
				n.log.Warn("usersession: this identity lost its alias to an earlier claim", "alias", n.alias, "listed", self.Alias)
			}
			n.selfName = self.Alias
		}
	}
	n.emitLocked(events)
}

// presenceOfLocked tells whether dev is reachable: this node's own device
// while it runs; another while this node has a session with the peer its
// certificate names, and for Config.grace after it ended.
func (n *Node) presenceOfLocked(dev DeviceKey, now time.Time) reach {
	if dev == n.ownKey && n.own != nil {
		return reach{online: !n.closed, live: !n.closed, seen: n.started}
	}
	cert, err := n.dir.Certificate(dev)
	if err != nil {
		return reach{}
	}
	p := n.peers[swarm.PeerKey(cert.Peer)]
	switch {
	case p == nil || p.since.IsZero():
		return reach{}
	case p.up && !n.closed:
		return reach{online: true, live: true, seen: p.since}
	case !n.closed && now.Before(p.since.Add(n.cfg.grace())):
		return reach{online: true, seen: p.since}
	}
	return reach{seen: p.since}
}

// wakeLocked returns when a device in its grace period goes offline.
func (n *Node) wakeLocked(now time.Time) time.Time {
	var wake time.Time
	grace := n.cfg.grace()
	if grace <= 0 {
		return wake
	}
	for _, p := range n.peers {
		if end := p.since.Add(grace); !p.up && !p.since.IsZero() && end.After(now) && (wake.IsZero() || end.Before(wake)) {
			wake = end
		}
	}
	return wake
}

// listChunk is a device list chunk to publish.
type listChunk struct {
	name    string
	payload []byte
}

// chunksLocked returns the chunks of the device list that changed since
// they were last published, chunk 0 last (see devicesExtension).
func (n *Node) chunksLocked() []listChunk {
	if !n.listChanged {
		return nil
	}
	n.listChanged = false
	var list []listedDevice
	for _, k := range slices.SortedFunc(maps.Keys(n.devices), compareKeys) {
		if _, err := n.dir.Certificate(k); err == nil {
			list = append(list, listedDevice{Key: bytes.Clone(k[:]), Length: n.dir.Next(k)})
		}
	}
	var pubs []listChunk
	for i := deviceChunks - 1; i >= 0; i-- {
		chunk := []listedDevice{} // an empty array, not nil
		if lo := i * devicesPerChunk; lo < len(list) {
			chunk = list[lo:min(lo+devicesPerChunk, len(list))]
		} else if i > 0 && n.published[i] == nil {
			continue // never needed
		}
		b := encodeDeviceList(chunk)
		if !bytes.Equal(b, n.published[i]) {
			n.published[i] = b
			pubs = append(pubs, listChunk{devicesExtension + strconv.Itoa(i), b})
		}
	}
	return pubs
}

// dialsLocked returns the swarm addresses of the logged-in devices whose
// peer is not connected and that were not dialled since the last loss (all
// of them, after one). They are dialled with swarm.Dial, which gives up on
// an address that does not answer: a device that logged out, or moved, is
// not dialled for ever. The static peers (Config.Peers) are the swarm's to
// keep connected (swarm.Connect).
//
// Whether the peer is connected is the swarm's to say, not n.peers: the
// loop learns of a session from an event that can come after the blocks
// that session carried, among them the peer's login. swarm.Dial does not
// know who listens at an address it never dialled, so a dial then would
// reach a peer connected at another address (a static peer's, or the port
// it dialled from), and the new session would replace the working one or
// be refused by it: a needless reconnection either way.
func (n *Node) dialsLocked() []string {
	var out []string
	for dev, addr := range n.addrs {
		if dev == n.ownKey || addr == "" || addr == n.swarmAddr || n.dialed[addr] {
			continue
		}
		cert, err := n.dir.Certificate(dev)
		if err != nil {
			continue
		}
		peer := swarm.PeerKey(cert.Peer)
		if peer == n.sw.Key() {
			continue // an older address of this node
		}
		// Connected or dialled first: Session copies the session, and in a
		// full mesh every step would copy every one.
		if p := n.peers[peer]; p != nil && p.up || n.sw.Connected(peer) {
			continue
		}
		if s, err := n.dir.Session(dev); err != nil || s.Started.IsZero() {
			continue // unregistered, or not logged in
		}
		n.dialed[addr] = true
		out = append(out, addr)
	}
	return out
}

// settle waits, on a device's first start, until the node knows what its
// peers know: every connected peer has sent its device list (or has had
// OfflineAfter to do so), and every device listed has come in to the
// length listed (or nothing has come in for OfflineAfter). With no peer
// for a HeartbeatInterval, there is nothing to wait for.
func (n *Node) settle(ctx context.Context) error {
	start := time.Now()
	for {
		n.mu.Lock()
		changed := n.changed
		wait := n.unsettledLocked(start, time.Now())
		n.mu.Unlock()
		if wait <= 0 {
			return nil
		}
		t := time.NewTimer(wait)
		select {
		case <-changed:
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		}
		t.Stop()
	}
}

// unsettledLocked returns how long to wait at most before settle looks
// again, or 0 if it is done.
func (n *Node) unsettledLocked(start, now time.Time) time.Duration {
	var up []*peerState
	for _, p := range n.peers {
		if p.up {
			up = append(up, p)
		}
	}
	if len(up) == 0 {
		return start.Add(n.cfg.HeartbeatInterval).Sub(now)
	}
	var wait time.Duration
	for _, p := range up {
		if left := p.since.Add(n.cfg.OfflineAfter).Sub(now); !p.heard && left > 0 && (wait == 0 || left < wait) {
			wait = left
		}
	}
	if wait > 0 {
		return wait
	}
	for dev, l := range n.listed {
		if n.dir.Next(dev) < l {
			return max(n.progress.Add(n.cfg.OfflineAfter).Sub(now), 0)
		}
	}
	return 0
}

// checkLimit fails with ErrSessionLimit if this identity has as many
// sessions online on other devices as the limit allows. When as many
// other devices are logged in as the limit allows, it first gives those
// not connected yet a HeartbeatInterval to connect, since presence is
// known only from connections.
func (n *Node) checkLimit(ctx context.Context) error {
	start := time.Now()
	for {
		n.mu.Lock()
		changed := n.changed
		loggedIn, online := n.otherSessionsLocked()
		n.mu.Unlock()
		if online >= n.cfg.MaxSessions {
			return fmt.Errorf("%w: alias %q already has %d sessions online (the limit)", ErrSessionLimit, n.alias, online)
		}
		wait := start.Add(n.cfg.HeartbeatInterval).Sub(time.Now())
		if loggedIn < n.cfg.MaxSessions || loggedIn == online || wait <= 0 {
			return nil
		}
		t := time.NewTimer(wait)
		select {
		case <-changed:
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("waiting for the user's other devices: %w", ctx.Err())
		}
		t.Stop()
	}
}

// otherSessionsLocked counts this identity's other devices that are
// logged in, and those of them that are reachable.
func (n *Node) otherSessionsLocked() (loggedIn, online int) {
	for dev := range n.devices {
		if dev == n.ownKey {
			continue
		}
		cert, err := n.dir.Certificate(dev)
		if err != nil || cert.Identity != n.id.Key() {
			continue
		}
		s, err := n.dir.Session(dev)
		if err != nil || s.Started.IsZero() {
			continue
		}
		loggedIn++
		if n.presence[dev].online {
			online++
		}
	}
	return loggedIn, online
}

// claimLocked returns when this identity first claimed the node's alias,
// if the directory holds a standing certificate of its for the alias.
func (n *Node) claimLocked() (int64, bool) {
	var claimed int64
	found := false
	for dev := range n.devices {
		cert, err := n.dir.Certificate(dev)
		if err != nil || cert.Identity != n.id.Key() || cert.Alias != n.alias {
			continue
		}
		if _, err := n.dir.Session(dev); err != nil {
			continue // unregistered
		}
		if !found || cert.Claimed < claimed {
			claimed, found = cert.Claimed, true
		}
	}
	return claimed, found
}

// append writes e to this device's feed and folds it into the directory at
// once, so that the node's own answers reflect it when append returns. It
// returns the entry's index.
func (n *Node) append(e Entry) (uint64, error) {
	b, err := EncodeEntry(e)
	if err != nil {
		return 0, err
	}
	n.appendMu.Lock()
	defer n.appendMu.Unlock()
	n.mu.Lock()
	closed := n.closed
	n.mu.Unlock()
	if closed {
		return 0, ErrNoSession
	}
	length, err := n.own.Append(b)
	if err != nil {
		return 0, err
	}
	now := time.Now()
	n.mu.Lock()
	defer n.mu.Unlock()
	n.applyLocked(n.ownKey, now)
	switch e.(type) {
	case *Login:
		n.loggedIn, n.login, n.selfOK = true, length-1, true
	case *Logout:
		n.loggedIn = false
	}
	n.touched = true
	n.refreshLocked(now)
	n.poke() // for the loop to publish the new length
	return length - 1, nil
}

// GetUsers returns every user listed, by name, each with their primary
// session (see the package documentation): online users, and users whose
// devices are offline or logged out. It answers from what the node holds,
// without waiting for the network.
func (n *Node) GetUsers() map[string]UserSession {
	n.mu.Lock()
	defer n.mu.Unlock()
	now := time.Now()
	users := n.dir.Users()
	for name, s := range users {
		users[name] = n.displayLocked(s, now)
	}
	return users
}

// FindUserSession returns the primary session of the user listed under
// name (an alias, or alias~hex), or an error wrapping ErrUserNotFound.
// Check Online: a user found may be offline.
func (n *Node) FindUserSession(name string) (UserSession, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	s, err := n.dir.Find(name)
	if err != nil {
		return UserSession{}, err
	}
	return n.displayLocked(s, time.Now()), nil
}

// Devices returns every device of the user listed under name, primary
// first; nil for a name not listed.
func (n *Node) Devices(name string) []UserSession {
	n.mu.Lock()
	defer n.mu.Unlock()
	now := time.Now()
	list := n.dir.Devices(name)
	for i, s := range list {
		list[i] = n.displayLocked(s, now)
	}
	return list
}

// Self returns this device's session as the directory shows it. Alias is
// the name it is listed under: alias~hex if another identity claimed the
// alias first. Online is false once the node closed, or while the session
// is over the identity's session limit.
func (n *Node) Self() UserSession {
	n.mu.Lock()
	defer n.mu.Unlock()
	s, err := n.dir.Session(n.ownKey)
	if err != nil {
		// Unregistered: the device is listed nowhere, but it is still this.
		cert, _ := n.dir.Certificate(n.ownKey)
		return UserSession{Alias: n.alias, Identity: n.id.Key(), Device: n.ownKey, DeviceName: cert.DeviceName}
	}
	return n.displayLocked(s, time.Now())
}

// IssueToken returns a token, valid for ttl, that proves this session to
// whoever holds the directory (Node.VerifyToken, Directory.VerifyToken).
// The session's end (Logout) revokes it.
func (n *Node) IssueToken(ttl time.Duration) (string, error) {
	if ttl < time.Millisecond {
		return "", fmt.Errorf("usersession: issue token: ttl %v, want 1 ms or more", ttl)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	switch {
	case n.closed:
		return "", fmt.Errorf("usersession: issue token: %w", ErrNoSession)
	case !n.loggedIn:
		return "", fmt.Errorf("usersession: issue token: %w", ErrNotLoggedIn)
	}
	if err := n.dir.SessionValid(n.ownKey); err != nil {
		return "", fmt.Errorf("usersession: issue token: %w", err)
	}
	now := time.Now()
	return IssueToken(n.ownSecret, TokenClaims{
		Identity: n.id.Key(), Device: n.ownKey, Alias: n.alias, Login: n.login,
		Issued: now.UnixMilli(), Expires: now.Add(ttl).UnixMilli(),
	})
}

// VerifyToken checks a token against the directory as this node holds it,
// now: see Directory.VerifyToken for the checks and their errors. A token
// from a device whose feed has not reached this node yet is
// ErrTokenUnknown: ask again later.
func (n *Node) VerifyToken(token string) (*Token, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.dir.VerifyToken(token, time.Now())
}

// ExportIdentity returns the user's identity in the export format,
// encrypted with passphrase if it is not empty, for AddDevice on another
// device. Whoever holds it (and the passphrase) is the user.
func (n *Node) ExportIdentity(passphrase []byte) ([]byte, error) {
	return n.id.Export(passphrase)
}

// AddDevice prepares the data directory dir for another device of the user
// whose identity was exported (Node.ExportIdentity, with passphrase): it
// saves the identity there, encrypted with the same passphrase, so that
// StartUserSession with Config{Dir: dir, Passphrase: passphrase} starts the
// same user on that device, under the same alias.
func AddDevice(dir string, exported, passphrase []byte) error {
	id, err := ImportIdentity(exported, passphrase)
	if err != nil {
		return fmt.Errorf("usersession: add device: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("usersession: add device: %w", err)
	}
	if err := SaveIdentity(filepath.Join(dir, identityFile), id, passphrase); err != nil {
		return fmt.Errorf("usersession: add device: %w", err)
	}
	return nil
}

// Logout ends the session: it appends a Logout, which revokes the
// session's tokens and shows the device offline everywhere at once, waits
// (within ctx, and 2 s at most) until the connected peers hold it, and
// closes the node. Peers not reached get it when they next meet a peer
// that has it; so if after 2 s no peer holds it, Logout waits on, up to
// OfflineAfter, until one does. It fails only if the logout could not be
// written.
func (n *Node) Logout(ctx context.Context) error {
	i, err := n.append(&Logout{At: time.Now().UnixMilli()})
	if err != nil {
		return fmt.Errorf("usersession: logout: %w", err)
	}
	n.deliver(ctx, i+1)
	return n.Close()
}

// Unregister gives the alias up for this identity: it appends the
// identity's signed tombstone, which removes the user from every
// directory, revokes the tokens of all its devices under the alias and
// frees the alias for others; then, like Logout, it waits for the
// connected peers to hold it and closes the node. The identity may claim
// the alias again later: a new start certifies a new device feed.
func (n *Node) Unregister(ctx context.Context) error {
	u, err := NewUnregister(n.id, n.alias, time.Now())
	if err != nil {
		return err
	}
	i, err := n.append(u)
	if err != nil {
		return fmt.Errorf("usersession: unregister: %w", err)
	}
	n.log.Info("usersession: unregistered", "alias", n.alias)
	n.deliver(ctx, i+1)
	return n.Close()
}

// deliver waits until every peer with this device's feed open holds its
// first length blocks, within ctx and deliverTimeout. If by then no peer
// lists them in its device list, it waits on, within ctx and OfflineAfter,
// until one does: an entry that no peer took before this node closed is
// lost to every node, and a logout's revocation with it, until this
// device comes back, whereas one peer passes it on to the others. A busy
// peer can be that slow: every session carries every device feed, so each
// entry costs each node work for each of its own peers.
func (n *Node) deliver(ctx context.Context, length uint64) {
	if n.ownRep == nil {
		return
	}
	dctx, cancel := context.WithTimeout(ctx, deliverTimeout)
	err := n.ownRep.Delivered(dctx, length)
	cancel()
	if err == nil {
		return
	}
	ctx, cancel = context.WithTimeout(ctx, n.cfg.OfflineAfter)
	defer cancel()
	for {
		n.mu.Lock()
		changed, held := n.changed, n.listed[n.ownKey] >= length
		n.mu.Unlock()
		if held || len(n.sw.Peers()) == 0 {
			n.log.Info("usersession: not every peer took the last entry before closing", "err", err, "taken", held)
			return
		}
		select {
		case <-changed:
		case <-ctx.Done():
			n.log.Warn("usersession: no peer took the last entry before closing", "err", ctx.Err())
			return
		}
	}
}

// Close stops the node without logging out, as if the device went away:
// peers show it offline once they notice (at once if the connection
// closes, within OfflineAfter if it just goes silent), and its session
// stays valid for when it comes back. Every goroutine the node started has
// ended and every file is closed when Close returns. The node still
// answers GetUsers and the like from the directory as it was, with every
// device offline.
func (n *Node) Close() error {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return nil
	}
	n.closed = true
	n.mu.Unlock()
	current.CompareAndSwap(n, nil)
	n.cancel()
	var errs []error
	if n.sw != nil {
		errs = append(errs, n.sw.Close())
	}
	n.wg.Wait()
	n.mu.Lock()
	for _, d := range n.devices {
		d.unsubscribe()
	}
	clear(n.watchers)
	now := time.Now()
	for dev, p := range n.presence {
		if p.online {
			n.presence[dev] = reach{seen: now}
			n.dir.SetPresence(dev, false, now)
		}
	}
	n.mu.Unlock()
	if n.store != nil {
		errs = append(errs, n.store.Close())
	}
	return errors.Join(errs...)
}
