package feed

import (
	"sync"

	"github.com/hyperfeed/hyperfeed/merkle"
)

// cacheSlots is the size of a feed's node cache: direct-mapped by index, it
// keeps the upper tree and the recent edge in memory, which most proofs and
// offsets read again and again.
const cacheSlots = 1 << 14

// nodeCache holds tree nodes as they are on disk (absent ones as zero
// nodes). Every write to the tree file goes through put, and whatever
// rewrites the file wholesale calls reset, so a hit is what a read would
// return.
type nodeCache struct {
	mu    sync.Mutex
	slots []cacheSlot
}

type cacheSlot struct {
	tag  uint64 // index+1; 0 is empty
	node merkle.Node
}

func (c *nodeCache) get(i uint64) (merkle.Node, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.slots == nil {
		return merkle.Node{}, false
	}
	s := &c.slots[i%cacheSlots]
	if s.tag != i+1 {
		return merkle.Node{}, false
	}
	return s.node, true
}

func (c *nodeCache) put(ns ...merkle.Node) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.slots == nil {
		c.slots = make([]cacheSlot, cacheSlots)
	}
	for _, n := range ns {
		c.slots[n.Index%cacheSlots] = cacheSlot{tag: n.Index + 1, node: n}
	}
}

func (c *nodeCache) reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	clear(c.slots)
}
