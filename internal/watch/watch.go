// Package watch holds the queue behind a Watch method: the events an owner
// (a swarm, a user session node) produces under its own lock, handed to one
// caller's channel by a goroutine, so that a slow reader holds up nobody and
// loses nothing.
package watch

import (
	"context"
	"sync"
)

// Queue is the events one Watch caller has not read yet.
//
// Run sends them in the order Add took them and drops none while it runs:
// what is still queued when it returns is discarded with the Queue. Nothing
// bounds the queue: a reader that falls behind costs memory in proportion to
// what it has not read, until it reads or its Run ends. Both owners accept
// that, since their events are rare (sessions and directory changes) and a
// dropped one would leave the reader wrong about who is there.
//
// Make one with NewQueue.
type Queue[T any] struct {
	mu    sync.Mutex
	items []T
	kick  chan struct{} // items were added since Run last looked
}

// NewQueue returns an empty queue.
func NewQueue[T any]() *Queue[T] {
	return &Queue[T]{kick: make(chan struct{}, 1)}
}

// Add queues items for the reader and returns without waiting for it.
// Items from one call stay together and in order; an owner that adds from
// several goroutines keeps its order across calls by calling Add under its
// own lock.
func (q *Queue[T]) Add(items ...T) {
	q.mu.Lock()
	q.items = append(q.items, items...)
	q.mu.Unlock()
	select {
	case q.kick <- struct{}{}:
	default:
	}
}

// Run sends the queued items to out, oldest first, and waits for more,
// until ctx (the caller's) or owner (the owner's lifetime) ends. It does not
// close out: the owner does, once it no longer adds to q.
func (q *Queue[T]) Run(ctx, owner context.Context, out chan<- T) {
	for {
		q.mu.Lock()
		items := q.items
		q.items = nil
		q.mu.Unlock()
		for _, it := range items {
			select {
			case out <- it:
			case <-ctx.Done():
				return
			case <-owner.Done():
				return
			}
		}
		select {
		case <-q.kick:
		case <-ctx.Done():
			return
		case <-owner.Done():
			return
		}
	}
}
