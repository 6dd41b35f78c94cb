package usersession

import "github.com/hyperfeed/hyperfeed/swarm"

// Swarm returns the swarm the node replicates the directory on, for the
// application's own feeds: they then travel on the node's connections,
// authenticated with the same network secret (Config.Secret), to the same
// peers (every node of the directory this one reaches), with no second
// listener.
//
// The application keeps its feeds in a store of its own, opened with
// feed.OpenStore in a directory of its own, not in the node's store under
// Config.Dir: the node takes every feed in its store for a device feed, so
// it would follow one of the application's, download it whole, and count
// it towards the devices it follows. A writable feed can be opened there
// before StartUserSession, so that the session's Metadata can announce its
// key.
//
// The caller may Attach, Replicate and Download its feeds, Publish and
// HandleExtension on their replicators, Watch peers, and Connect or Dial
// further peers of the network. Attach is enough for a feed whose readers
// are the directory's peers; Replicate also joins the feed's own topic,
// which with mDNS announces it.
//
// A feed replicates with a peer only when both sides have given it to
// their swarm (Attach or Replicate): this swarm serves no feed it was not
// given, and holds a peer's request for one until it is given. A peer may
// hold open at most 1024 feeds that this side was not given (swarm's
// maxPendingOpens): one more ends the session with that peer, the
// directory's included, so an application should not give its swarm many
// feeds that its peers will not replicate. The node's connections are up
// already, so a feed's channel opens as soon as both sides have given it
// the feed: a peer's extension value that arrives before HandleExtension,
// called right after Attach, is dropped, and comes again only when the
// peer publishes it again.
//
// The caller must not Close the swarm (Node.Close does), Forget the
// addresses the node dials (Config.Peers, and the swarm addresses that its
// peers' logins publish), or Publish or HandleExtension on the replicators
// of the node's feeds: the directory's rendezvous feed carries the node's
// device lists, as extensions named "devices/0" to "devices/3". The
// application's store is its own to close, after Node.Close, which stops
// replicating its feeds.
//
// After Node.Close it returns the same swarm, closed: Attach, Replicate,
// Download, Join, Connect and Dial fail with swarm.ErrClosed, Watch's
// channel is closed at once, and downloads still waiting have failed.
func (n *Node) Swarm() *swarm.Swarm { return n.sw }
