package usersession

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// DefaultTopic is the directory a node joins when Config.Topic is empty.
const DefaultTopic = "hyperfeed-users"

// DefaultHeartbeatInterval is Config.HeartbeatInterval's default.
const DefaultHeartbeatInterval = 5 * time.Second

// minHeartbeatInterval keeps a mistyped interval from turning keep-alives
// into a busy loop.
const minHeartbeatInterval = 10 * time.Millisecond

// Config configures a node (StartUserSession). The zero value works: data
// in the user's configuration directory, the default topic, an open
// network, peers found by mDNS on every multicast interface.
type Config struct {
	// Dir is the data directory: the identity, the node's swarm key and
	// the feeds. Default: hyperfeed/usersession/ALIAS in the user's
	// configuration directory (os.UserConfigDir). Two nodes cannot share
	// one: the second fails to open its feeds.
	Dir string
	// Topic names the directory: nodes under different topics never meet.
	// Default DefaultTopic.
	Topic string
	// Secret is the network secret, 32 bytes: peers without it cannot
	// connect (see swarm.Config.Secret). Nil means an open network.
	Secret []byte
	// Peers are addresses (host:port) of other nodes to connect to, and to
	// keep connecting to; with NoMDNS they are the only way in.
	Peers []string
	// Interfaces names the network interfaces to find peers on by mDNS,
	// and to take the published IP address from; nil means every
	// multicast interface.
	Interfaces []string
	// NoMDNS turns mDNS off: peers come from Peers, and from the swarm
	// addresses of the devices those peers know.
	NoMDNS bool
	// ListenAddr is where the node accepts peers; default ":0" (every
	// interface, a free port).
	ListenAddr string
	// MaxSessions is how many devices of one identity may be online at
	// once; default DefaultMaxSessions. Every node of a directory must
	// use the same value, or they will disagree on who is online.
	MaxSessions int
	// HeartbeatInterval is the keep-alive interval between peers (at most:
	// see OfflineAfter), and how long a first start waits for a peer
	// before it claims its alias alone. Default 5 s, at least 10 ms.
	HeartbeatInterval time.Duration
	// OfflineAfter is how long a peer that went silent (killed, cut off)
	// still shows online: by then it shows offline. Default three
	// heartbeats; not under HeartbeatInterval. The keep-alive interval is
	// the smaller of HeartbeatInterval and a quarter of OfflineAfter less
	// a short grace, since a session ends after three to four silent
	// intervals. A peer whose connection closes shows offline after that
	// grace (a twentieth of OfflineAfter, at most 250 ms): when two peers
	// dial each other at once, one connection closes just before the
	// other is up, and the peer did not leave.
	OfflineAfter time.Duration
	// Passphrase encrypts the identity file when the node creates it, and
	// opens it afterwards. Empty leaves the identity in the clear,
	// protected by the file's mode (0600) only.
	Passphrase []byte
	// Logger receives what the node does: debug for routine events, info
	// and warnings for what a user would want to know. Default: none.
	Logger *slog.Logger
}

// defaults fills in c's defaults for a node of alias (normalized) and
// checks every field. It copies the slices, so that the caller may reuse
// its own.
func (c *Config) defaults(alias string) error {
	if c.Dir == "" {
		base, err := os.UserConfigDir()
		if err != nil {
			return fmt.Errorf("%w: no Dir, and no user configuration directory: %v", ErrInvalidConfig, err)
		}
		c.Dir = filepath.Join(base, "hyperfeed", "usersession", alias)
	}
	if c.Topic == "" {
		c.Topic = DefaultTopic
	}
	if c.Secret != nil && len(c.Secret) != 32 {
		return fmt.Errorf("%w: Secret is %d bytes, want 32", ErrInvalidConfig, len(c.Secret))
	}
	c.Secret = slices.Clone(c.Secret)
	c.Peers = slices.Clone(c.Peers)
	for _, p := range c.Peers {
		if p == "" {
			return fmt.Errorf("%w: empty address in Peers", ErrInvalidConfig)
		}
	}
	c.Interfaces = slices.Clone(c.Interfaces)
	if c.ListenAddr == "" {
		c.ListenAddr = ":0"
	}
	switch {
	case c.MaxSessions < 0:
		return fmt.Errorf("%w: MaxSessions %d is negative", ErrInvalidConfig, c.MaxSessions)
	case c.MaxSessions == 0:
		c.MaxSessions = DefaultMaxSessions
	}
	switch {
	case c.HeartbeatInterval == 0:
		c.HeartbeatInterval = DefaultHeartbeatInterval
	case c.HeartbeatInterval < minHeartbeatInterval:
		return fmt.Errorf("%w: HeartbeatInterval %v is under %v", ErrInvalidConfig, c.HeartbeatInterval, minHeartbeatInterval)
	}
	switch {
	case c.OfflineAfter == 0:
		c.OfflineAfter = 3 * c.HeartbeatInterval
	case c.OfflineAfter < c.HeartbeatInterval:
		return fmt.Errorf("%w: OfflineAfter %v is under HeartbeatInterval %v", ErrInvalidConfig, c.OfflineAfter, c.HeartbeatInterval)
	}
	c.Passphrase = slices.Clone(c.Passphrase)
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

// keepAlive is the swarm's keep-alive interval. A session ends when it has
// heard nothing for more than three intervals, noticed at the next tick:
// after three to four intervals of silence. A quarter of OfflineAfter,
// less the least grace, makes that and the grace within OfflineAfter.
func (c *Config) keepAlive() time.Duration {
	return min(c.HeartbeatInterval, (c.OfflineAfter-c.leastGrace())/4)
}

// leastGrace is how long a device stays online at least after its session
// ended: two peers that dial each other at once each keep one of the two
// connections, and the other closes, at times just before the one kept is
// up on this side. Without it, the peer would show leaving and coming back.
func (c *Config) leastGrace() time.Duration {
	return min(250*time.Millisecond, c.OfflineAfter/20)
}

// grace is how long a device stays online after its session ended: at
// least leastGrace, and more when OfflineAfter is longer than the session
// needs to notice a silent peer, so that one shows offline only once
// OfflineAfter has passed.
func (c *Config) grace() time.Duration {
	return c.OfflineAfter - 4*c.keepAlive()
}

// reconnectMax bounds the backoff between dials to a lost peer: a few
// heartbeats, so that a peer that comes back is found soon, within the
// swarm's own bounds.
func (c *Config) reconnectMax() time.Duration {
	return min(max(10*c.HeartbeatInterval, time.Second), 30*time.Second)
}
