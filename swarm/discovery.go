package swarm

import (
	"net/netip"
)

// Candidate is a peer that discovery found: where it listens and, when the
// discovery mechanism says so, who it claims to be. The claim is not trusted:
// the Noise handshake establishes who the peer is.
type Candidate struct {
	Addr netip.AddrPort
	Key  PeerKey // zero when unknown
}

// Discovery finds peers under topics. Implementations: MDNS (the local
// network) and Static (a fixed list of addresses).
type Discovery interface {
	// Join announces this node under topic, reachable on port, and reports
	// the peers it finds under that topic to found, from now until Leave or
	// Close. found must not block. Joining a topic twice is a no-op.
	Join(topic Topic, port int, found func(Candidate)) error
	// Leave stops announcing and looking under topic.
	Leave(topic Topic) error
	// Close leaves every topic and releases what Join started: no goroutine
	// of the implementation remains after it returns.
	Close() error
}
