package main

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"

	"github.com/hyperfeed/hyperfeed/swarm"
)

// network is the swarm of share, clone and cat --live, set up from the
// global flags.
type network struct {
	sw      *swarm.Swarm
	release func()      // the identity's lock
	met     atomic.Bool // a peer has connected
	stop    context.CancelFunc
	wg      sync.WaitGroup
	once    sync.Once
	err     error
}

func (e *env) startNetwork() (*network, error) {
	secret, err := e.secret()
	if err != nil {
		return nil, err
	}
	kp, release, err := e.identity()
	if err != nil {
		return nil, err
	}
	var disc []swarm.Discovery
	if !e.g.noMDNS {
		m, err := swarm.NewMDNS(swarm.MDNSConfig{Interfaces: e.g.ifaces, Self: kp.Public, Logger: e.log})
		if err != nil {
			release()
			return nil, usageErrorf("--iface: %v", tidy(err.Error()))
		}
		disc = append(disc, m)
	}
	sw, err := swarm.New(nil, swarm.Config{
		KeyPair:    kp,
		Secret:     secret,
		ListenAddr: e.g.listen,
		Discovery:  disc,
		Logger:     e.log,
	})
	if err != nil {
		for _, d := range disc {
			d.Close()
		}
		release()
		return nil, err
	}
	ctx, stop := context.WithCancel(context.Background())
	n := &network{sw: sw, release: release, stop: stop}
	// Watch tells of the peers connected already, then of each change.
	events := sw.Watch(ctx)
	n.wg.Go(func() { n.watchPeers(e, events) })
	for _, p := range e.g.peers {
		// Connect, not Static discovery: its dial loop never gives up, so a
		// peer started later than this process is still found.
		if err := sw.Connect(p); err != nil {
			n.close()
			return nil, err
		}
	}
	e.log.Info("listening", "addr", sw.Addr(), "self", sw.Key())
	return n, nil
}

// warnIfAlone warns a command that needs a peer when it has no way to find
// one: sharers find it, or nobody does.
func (n *network) warnIfAlone(e *env) {
	if e.g.noMDNS && len(e.g.peers) == 0 {
		e.log.Warn("no mDNS and no --peer: waiting for a peer to connect to this one", "addr", n.sw.Addr())
	}
}

// watchPeers logs peers coming and going, and notes the first.
func (n *network) watchPeers(e *env, events <-chan swarm.PeerEvent) {
	for ev := range events {
		if ev.Up {
			n.met.Store(true)
			e.log.Info("peer connected", "peer", ev.Key, "addr", ev.Addr)
		} else {
			e.log.Info("peer gone", "peer", ev.Key, "addr", ev.Addr)
		}
	}
}

// metPeer reports whether a peer has connected since the network started.
func (n *network) metPeer() bool { return n.met.Load() }

// close disconnects from every peer; the feeds stay open. Calls after the
// first return its result.
func (n *network) close() error {
	n.once.Do(func() {
		n.stop()
		n.wg.Wait()
		n.err = n.sw.Close()
		n.release()
		if errors.Is(n.err, swarm.ErrClosed) {
			n.err = nil
		}
	})
	return n.err
}
