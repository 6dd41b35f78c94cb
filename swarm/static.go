package swarm

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"time"
)

// ErrDiscoveryClosed is returned by Join and Add after Close.
var ErrDiscoveryClosed = errors.New("swarm: discovery closed")

// staticResolveTimeout bounds the lookup of one host name, since NewStatic
// and Add take no context.
const staticResolveTimeout = 10 * time.Second

// Static is a Discovery over a fixed list of addresses, such as peers named
// in a configuration file. It announces nothing: it reports every address
// under every topic joined, with an unknown key, and leaves it to the
// handshake to tell who answers there. Since it reports each address only
// once, a Swarm dials a Static's addresses as it does those given to
// Connect, until it closes or forgets them (Swarm.Forget), rather than
// giving up after a few failed dials as it does on peers other discovery
// reports.
//
// found is called synchronously, from Join for the addresses known then and
// from Add for the one added, while the Static is locked: a found that calls
// the Static's methods deadlocks. After Leave or Close returns, found is not
// called again. Static starts no goroutines.
type Static struct {
	resolver *net.Resolver

	mu     sync.Mutex
	addrs  []netip.AddrPort
	topics map[Topic]func(Candidate)
	closed bool
}

var _ Discovery = (*Static)(nil)

// NewStatic returns a Static over addrs, each "host:port". A host is an IP
// literal, or a name resolved now with net.DefaultResolver, standing for
// every address it resolves to; a name that resolves to none is an error.
// Names are not resolved again later: a peer that moves must be added anew.
func NewStatic(addrs ...string) (*Static, error) {
	return newStatic(net.DefaultResolver, addrs...)
}

// newStatic lets tests resolve names without sending a DNS query.
func newStatic(r *net.Resolver, addrs ...string) (*Static, error) {
	s := &Static{resolver: r, topics: make(map[Topic]func(Candidate))}
	for _, a := range addrs {
		aps, err := staticResolve(r, a)
		if err != nil {
			return nil, err
		}
		s.addrs = staticMerge(s.addrs, aps)
	}
	return s, nil
}

// Add adds addr, as NewStatic takes it, and reports its addresses under
// every topic joined. Adding an address already known does nothing.
func (s *Static) Add(addr string) error {
	// Resolved before locking, so a slow lookup holds up no other call.
	aps, err := staticResolve(s.resolver, addr)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrDiscoveryClosed
	}
	var added []netip.AddrPort
	for _, ap := range aps {
		if !slices.Contains(s.addrs, ap) {
			s.addrs = append(s.addrs, ap)
			added = append(added, ap)
		}
	}
	for _, found := range s.topics {
		for _, ap := range added {
			found(Candidate{Addr: ap})
		}
	}
	return nil
}

// Join reports every address to found before it returns, and those added
// later as they are added. port is unused: Static announces nothing.
func (s *Static) Join(topic Topic, port int, found func(Candidate)) error {
	if found == nil {
		return errors.New("swarm: static: Join with nil found")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrDiscoveryClosed
	}
	if _, ok := s.topics[topic]; ok {
		return nil
	}
	s.topics[topic] = found
	for _, ap := range s.addrs {
		found(Candidate{Addr: ap})
	}
	return nil
}

// Leave stops reporting under topic.
func (s *Static) Leave(topic Topic) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.topics, topic)
	return nil
}

// Close leaves every topic.
func (s *Static) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	clear(s.topics)
	return nil
}

// staticResolve parses "host:port" into the addresses it stands for.
func staticResolve(r *net.Resolver, addr string) ([]netip.AddrPort, error) {
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("swarm: static address %q: %w", addr, err)
	}
	if host == "" {
		return nil, fmt.Errorf("swarm: static address %q: missing host", addr)
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil || port == 0 {
		return nil, fmt.Errorf("swarm: static address %q: port must be a number from 1 to 65535", addr)
	}
	var ips []netip.Addr
	if ip, err := netip.ParseAddr(host); err == nil {
		ips = []netip.Addr{ip}
	} else {
		ctx, cancel := context.WithTimeout(context.Background(), staticResolveTimeout)
		defer cancel()
		ips, err = r.LookupNetIP(ctx, "ip", host)
		if err != nil {
			return nil, fmt.Errorf("swarm: static address %q: %w", addr, err)
		}
		if len(ips) == 0 {
			return nil, fmt.Errorf("swarm: static address %q: %s resolves to no address", addr, host)
		}
	}
	var aps []netip.AddrPort
	for _, ip := range ips {
		// A v4-mapped address would compare unequal to the same peer found
		// as plain IPv4 by another discovery.
		ip = ip.Unmap()
		if ip.IsUnspecified() || ip.IsMulticast() {
			return nil, fmt.Errorf("swarm: static address %q: %s is not a unicast address", addr, ip)
		}
		aps = staticMerge(aps, []netip.AddrPort{netip.AddrPortFrom(ip, uint16(port))})
	}
	return aps, nil
}

// staticMerge appends the addresses of add that dst lacks.
func staticMerge(dst, add []netip.AddrPort) []netip.AddrPort {
	for _, ap := range add {
		if !slices.Contains(dst, ap) {
			dst = append(dst, ap)
		}
	}
	return dst
}
