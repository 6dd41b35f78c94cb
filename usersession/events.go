package usersession

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/hyperfeed/hyperfeed/internal/watch"
)

// EventKind says what changed in the directory, for Node.Watch.
type EventKind int

// The kinds of Event.
const (
	// EventJoined: a name came online: newly listed and online, or listed
	// before and offline.
	EventJoined EventKind = iota + 1
	// EventLeft: a listed name went offline (logged out, went away, or
	// over its session limit); it stays listed.
	EventLeft
	// EventUpdated: anything else changed for a listed name: its address,
	// metadata, primary device, identity, or a name newly listed offline.
	EventUpdated
	// EventUnregistered: a name is no longer listed: its identity
	// unregistered it, or the alias rule lists the identity under another
	// name now. Session is the last known.
	EventUnregistered
	// EventSessionLimit: this node's own session went over its identity's
	// session limit (another device of the user started before it, and
	// the limit was reached without this node knowing): it shows offline
	// and its tokens are refused until a session ahead of it ends. Session
	// is this node's own.
	EventSessionLimit
)

// String names k.
func (k EventKind) String() string {
	switch k {
	case EventJoined:
		return "joined"
	case EventLeft:
		return "left"
	case EventUpdated:
		return "updated"
	case EventUnregistered:
		return "unregistered"
	case EventSessionLimit:
		return "session limit"
	}
	return fmt.Sprintf("EventKind(%d)", int(k))
}

// Event is a change in the directory as a node sees it.
type Event struct {
	Kind EventKind
	// Session is the name's primary session after the change (before it,
	// for EventUnregistered); Session.Alias is the name.
	Session UserSession
}

// diffUsers returns the events that lead from the listing old to cur, by
// name. LastSeen alone changing is no event: it moves all the time.
func diffUsers(old, cur map[string]UserSession) []Event {
	var events []Event
	for _, name := range slices.Sorted(maps.Keys(cur)) {
		s := cur[name]
		o, listed := old[name]
		switch {
		case s.Online && (!listed || !o.Online):
			events = append(events, Event{EventJoined, s})
		case !s.Online && listed && o.Online:
			events = append(events, Event{EventLeft, s})
		case !listed || !sameSession(o, s):
			events = append(events, Event{EventUpdated, s})
		}
	}
	for _, name := range slices.Sorted(maps.Keys(old)) {
		if _, ok := cur[name]; !ok {
			s := old[name]
			s.Online = false
			events = append(events, Event{EventUnregistered, s})
		}
	}
	return events
}

// sameSession compares a and b but for LastSeen.
func sameSession(a, b UserSession) bool {
	return a.Alias == b.Alias && a.IP == b.IP && a.Port == b.Port &&
		a.Identity == b.Identity && a.Device == b.Device && a.DeviceName == b.DeviceName &&
		a.Started.Equal(b.Started) && a.Online == b.Online && maps.Equal(a.Metadata, b.Metadata)
}

// watcher is one Watch: the events its caller has not read yet.
type watcher = watch.Queue[Event]

// Watch reports changes to the directory as this node sees it: names
// coming online, going offline, changing, and no longer listed, each found
// by comparing the listing (GetUsers) before and after every change the
// node takes in. Events are queued for a slow reader, never dropped; what
// is still queued when ctx ends or the node closes is discarded, and the
// channel is closed. To follow the directory, call Watch first and then
// GetUsers, so that no change falls between them.
func (n *Node) Watch(ctx context.Context) <-chan Event {
	out := make(chan Event)
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		close(out)
		return out
	}
	w := watch.NewQueue[Event]()
	n.watchers[w] = true
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		defer close(out)
		w.Run(ctx, n.ctx, out)
		n.mu.Lock()
		delete(n.watchers, w)
		n.mu.Unlock()
	}()
	return out
}

// emitLocked hands events to every watcher. The caller holds n.mu, so that
// every watcher gets events in the order the changes happened.
func (n *Node) emitLocked(events []Event) {
	if len(events) == 0 {
		return
	}
	for w := range n.watchers {
		own := make([]Event, len(events))
		for i, e := range events {
			e.Session = e.Session.clone() // each reader owns what it gets
			own[i] = e
		}
		w.Add(own...)
	}
}

// display is s as the node shows it: LastSeen is now while this node is
// connected to the device (or is the device).
func (n *Node) displayLocked(s UserSession, now time.Time) UserSession {
	if n.presence[s.Device].live {
		s.LastSeen = now
	}
	return s
}
