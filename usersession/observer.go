package usersession

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/hyperfeed/hyperfeed/swarm"
)

// ErrClosed: the observer was closed.
var ErrClosed = errors.New("usersession: observer closed")

// Observer is a read-only view of a directory: it joins the directory's
// topic, replicates the device feeds its peers know, and folds them into
// the directory with presence, as a node does, but it has no identity and
// no device. It appends nothing, so nobody sees it in the directory. It does
// take part in replication, as every peer of a directory does: it serves the
// feeds it holds and tells its peers which ones (see Node).
//
// Presence comes from the observer's own connections: a device shows online
// once the observer has connected to it. A node's peers dial the address
// its login publishes, and so does an observer; a device it cannot reach
// shows offline to it, even if others reach it.
//
// Make one with Observe. Its methods are safe for concurrent use.
type Observer struct {
	n *Node
}

// Observe starts observing the directory that cfg names. Of cfg it takes
// Topic, Secret, Peers, Interfaces, NoMDNS, ListenAddr, Logger, and the
// settings that decide presence, which must match those of the directory's
// nodes: MaxSessions, HeartbeatInterval, OfflineAfter. It ignores
// Passphrase.
//
// Dir holds the observer's swarm key and the feeds it replicates. It
// defaults to hyperfeed/usersession/observer/TOPIC in the user's cache
// directory (os.UserCacheDir), TOPIC being the first 16 hex digits of the
// topic's discovery key: it holds only replicas, which peers give again if
// it is lost; and one per topic, since an observer shows every device feed
// it holds. Dir cannot be a node's data directory, nor shared by two
// observers at once (the second fails with feed.ErrLocked).
//
// Observe returns without waiting for the network: the observer answers
// from what Dir holds of earlier runs, every device offline, until it
// meets its peers. Settle waits for that.
func Observe(cfg Config) (*Observer, error) {
	if err := cfg.observerDefaults(); err != nil {
		return nil, fmt.Errorf("usersession: observe: %w", err)
	}
	n, err := observe(cfg)
	if err != nil {
		return nil, fmt.Errorf("usersession: observe %q: %w", cfg.Topic, err)
	}
	return &Observer{n: n}, nil
}

// observerDefaults is defaults, with an observer's data directory.
func (c *Config) observerDefaults() error {
	if c.Dir == "" {
		base, err := os.UserCacheDir()
		if err != nil {
			return fmt.Errorf("%w: no Dir, and no user cache directory: %v", ErrInvalidConfig, err)
		}
		dk := directoryKey(cmp.Or(c.Topic, DefaultTopic)).DiscoveryKey()
		c.Dir = filepath.Join(base, "hyperfeed", "usersession", "observer", dk.String()[:16])
	}
	return c.defaults("")
}

func observe(cfg Config) (_ *Node, err error) {
	if _, err := swarm.NewStatic(cfg.Peers...); err != nil {
		return nil, fmt.Errorf("%w: Peers: %w", ErrInvalidConfig, err)
	}
	// A node's own device feed there would be folded in as anyone's, and
	// its swarm key would be the observer's too: the node's peers would
	// take one for the other.
	if _, err := os.Lstat(filepath.Join(cfg.Dir, identityFile)); err == nil {
		return nil, fmt.Errorf("%w: %s is a node's data directory; an observer needs one of its own", ErrInvalidConfig, cfg.Dir)
	}
	n := newNode("", cfg)
	n.log = cfg.Logger.With("observer", cfg.Topic)
	defer func() {
		if err != nil {
			n.Close()
		}
	}()
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, err
	}
	kp, err := n.openFeeds()
	if err != nil {
		return nil, err
	}
	// No IP of its own to publish: its swarm address names no device, so it
	// never mistakes a device's for its own.
	if err := n.startSwarm(kp, ""); err != nil {
		return nil, err
	}
	n.log.Info("usersession: observing", "dir", cfg.Dir, "addr", n.sw.Addr(), "peer", n.sw.Key())
	return n, nil
}

// Settle waits until the observer knows what its peers know and has
// reached the devices they list: every connected peer has sent its device
// list (or has had OfflineAfter to do so), every device listed has come in
// to the length listed (or nothing has come in for OfflineAfter), and every
// device logged in is connected, or has had a HeartbeatInterval to connect
// since the observer learnt of its latest login: one that went away without
// logging out never will. With no peer for a HeartbeatInterval, there is
// nobody to wait for.
//
// It fails with ctx's error if ctx ends first, or with ErrClosed; either
// way the observer goes on, and GetUsers shows what it has so far.
func (o *Observer) Settle(ctx context.Context) error {
	n := o.n
	start := time.Now()
	for {
		n.mu.Lock()
		closed, changed := n.closed, n.changed
		now := time.Now()
		wait := n.unsettledLocked(start, now)
		if wait <= 0 && n.unreachedLocked() {
			learnt := start
			if n.progress.After(learnt) {
				learnt = n.progress
			}
			wait = learnt.Add(n.cfg.HeartbeatInterval).Sub(now)
		}
		n.mu.Unlock()
		switch {
		case closed:
			return fmt.Errorf("usersession: settle: %w", ErrClosed)
		case wait <= 0:
			return nil
		}
		t := time.NewTimer(wait)
		select {
		case <-changed:
		case <-t.C:
		case <-n.ctx.Done():
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("usersession: settle: %w", ctx.Err())
		}
		t.Stop()
	}
}

// unreachedLocked reports whether a device that is logged in is not
// connected.
func (n *Node) unreachedLocked() bool {
	for dev := range n.devices {
		if s, err := n.dir.Session(dev); err == nil && !s.Started.IsZero() && !n.presence[dev].online {
			return true
		}
	}
	return false
}

// GetUsers returns every user listed, by name, each with their primary
// session; see Node.GetUsers.
func (o *Observer) GetUsers() map[string]UserSession { return o.n.GetUsers() }

// FindUserSession returns the primary session of the user listed under
// name, or an error wrapping ErrUserNotFound; see Node.FindUserSession.
func (o *Observer) FindUserSession(name string) (UserSession, error) {
	return o.n.FindUserSession(name)
}

// Devices returns every device of the user listed under name, primary
// first; nil for a name not listed.
func (o *Observer) Devices(name string) []UserSession { return o.n.Devices(name) }

// Watch reports changes to the directory as the observer sees it; see
// Node.Watch. The channel is closed when ctx ends or the observer closes.
// It never carries EventSessionLimit, which is about a node's own session.
func (o *Observer) Watch(ctx context.Context) <-chan Event { return o.n.Watch(ctx) }

// Close stops the observer: every goroutine it started has ended and every
// file is closed when Close returns. It still answers GetUsers and the
// like from the directory as it was, with every device offline.
func (o *Observer) Close() error { return o.n.Close() }
