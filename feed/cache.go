package feed

import (
	"sync"

	"github.com/hyperfeed/hyperfeed/merkle"
)

// cacheSlots is the most slots a feed's node cache has: direct-mapped by
// index, it keeps the upper tree and the recent edge in memory, which most
// proofs and offsets read again and again. It starts at minCacheSlots and
// doubles whenever half its slots are taken, up to this, so that a process
// holding thousands of small feeds (a Store of replicas) spends memory by
// the nodes each has read, not about a megabyte each, and opening a large
// feed, which reads only its roots, costs a few kilobytes.
const (
	cacheSlots    = 1 << 14
	minCacheSlots = 1 << 6
)

// nodeCache holds tree nodes as they are on disk (absent ones as zero
// nodes), each with whether it is known to be anchored (see
// Feed.anchored). Every write to the tree file goes through put or
// anchor, and whatever rewrites the file wholesale or removes nodes calls
// reset, so a hit is what a read would return.
type nodeCache struct {
	mu    sync.Mutex
	slots []cacheSlot
	used  int // slots taken
}

type cacheSlot struct {
	// tag is index+1 (0: empty), with tagAnchored set for a node known to
	// be anchored: a flag of its own would make every slot a word longer.
	tag  uint64
	node merkle.Node
}

// tagAnchored is a bit that no index+1 has: indices are below 2^63.
const tagAnchored = 1 << 63

func (c *nodeCache) get(i uint64) (merkle.Node, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.slots == nil {
		return merkle.Node{}, false
	}
	s := &c.slots[i&uint64(len(c.slots)-1)]
	if s.tag&^tagAnchored != i+1 {
		return merkle.Node{}, false
	}
	return s.node, true
}

// anchored reports whether the cache holds n and knows it to be anchored.
func (c *nodeCache) anchored(n merkle.Node) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.slots == nil {
		return false
	}
	s := &c.slots[n.Index&uint64(len(c.slots)-1)]
	return s.tag == (n.Index+1)|tagAnchored && s.node == n
}

func (c *nodeCache) put(ns ...merkle.Node) { c.store(0, ns) }

// anchor is put for nodes known to be anchored.
func (c *nodeCache) anchor(ns ...merkle.Node) { c.store(tagAnchored, ns) }

func (c *nodeCache) store(flags uint64, ns []merkle.Node) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, n := range ns {
		if c.slots == nil || 2*c.used >= len(c.slots) && len(c.slots) < cacheSlots {
			c.grow()
		}
		s := &c.slots[n.Index&uint64(len(c.slots)-1)]
		if s.tag == 0 {
			c.used++
		}
		*s = cacheSlot{tag: (n.Index + 1) | flags, node: n}
	}
}

// grow doubles the slots (or makes the first ones), keeping what the cache
// holds: two nodes in distinct slots stay in distinct slots.
func (c *nodeCache) grow() {
	size := max(2*len(c.slots), minCacheSlots)
	old := c.slots
	c.slots = make([]cacheSlot, size)
	for _, s := range old {
		if s.tag != 0 {
			c.slots[(s.tag&^tagAnchored-1)&uint64(size-1)] = s
		}
	}
}

func (c *nodeCache) reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	clear(c.slots)
	c.used = 0
}
