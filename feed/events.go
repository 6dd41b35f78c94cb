package feed

import "sync"

// EventKind says what changed in a feed.
type EventKind int

// The kinds of Event.
const (
	// EventAppend: the signed head grew to Length at Fork, by an Append on the
	// writer or a verified upgrade on a replica.
	EventAppend EventKind = iota + 1
	// EventTruncate: the feed moved to a new Fork, keeping Length blocks of
	// the old history (and possibly more of the new, see Len).
	EventTruncate
	// EventBlock: a replica stored block Index.
	EventBlock
	// EventWant: a Get on a replica is waiting for block Index.
	EventWant
)

// Event is a change in a feed, delivered to subscribers.
type Event struct {
	Kind   EventKind
	Index  uint64
	Length uint64
	Fork   uint64
}

// Subscribe calls fn for every event from now on, until cancel is called.
// fn runs on the goroutine that made the change, after the change, with no
// lock of the feed held; it must not block (hand the event to a channel
// or a queue). Events from concurrent writers may arrive out of order, so
// an event is a hint to look at the feed, whose state is the truth.
func (f *Feed) Subscribe(fn func(Event)) (cancel func()) {
	n := &f.notify
	n.mu.Lock()
	defer n.mu.Unlock()
	id := n.next
	n.next++
	n.subs[id] = fn
	return func() {
		n.mu.Lock()
		defer n.mu.Unlock()
		delete(n.subs, id)
	}
}

// notifier holds a feed's subscribers and the Gets waiting for blocks.
type notifier struct {
	mu      sync.Mutex
	subs    map[uint64]func(Event)
	next    uint64
	waiters map[uint64]chan struct{}
	closed  bool
}

func (n *notifier) init() {
	n.subs = map[uint64]func(Event){}
	n.waiters = map[uint64]chan struct{}{}
}

func (n *notifier) emit(e Event) {
	n.mu.Lock()
	fns := make([]func(Event), 0, len(n.subs))
	for _, fn := range n.subs {
		fns = append(fns, fn)
	}
	n.mu.Unlock()
	for _, fn := range fns {
		fn(e)
	}
}

// waitFor returns a channel that is closed when block i arrives or the feed
// closes.
func (n *notifier) waitFor(i uint64) <-chan struct{} {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		ch := make(chan struct{})
		close(ch)
		return ch
	}
	ch, ok := n.waiters[i]
	if !ok {
		ch = make(chan struct{})
		n.waiters[i] = ch
	}
	return ch
}

func (n *notifier) wake(i uint64) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if ch, ok := n.waiters[i]; ok {
		close(ch)
		delete(n.waiters, i)
	}
}

func (n *notifier) close() {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.closed = true
	for i, ch := range n.waiters {
		close(ch)
		delete(n.waiters, i)
	}
}
