package feed

import (
	"testing"

	"github.com/hyperfeed/hyperfeed/merkle"
)

// The node cache grows with the nodes it holds, not with their indices: a
// feed of a million blocks opened holds its roots (high indices) in a few
// slots; a feed whose tree is read holds up to cacheSlots; and growing
// keeps every node it held.
func TestNodeCacheGrowsByUse(t *testing.T) {
	var c nodeCache
	roots := []uint64{1<<20 - 1, 1<<20 + 1<<19 - 1, 1<<21 + 5}
	for _, i := range roots {
		c.put(merkle.Node{Index: i, Size: i})
	}
	if len(c.slots) != minCacheSlots {
		t.Fatalf("%d slots for %d nodes", len(c.slots), len(roots))
	}
	for i := range uint64(3 * cacheSlots) {
		c.put(merkle.Node{Index: 2 * i, Size: i})
	}
	if len(c.slots) != cacheSlots {
		t.Fatalf("%d slots after %d nodes, want %d", len(c.slots), 3*cacheSlots, cacheSlots)
	}
	var c2 nodeCache
	for i := range uint64(1000) {
		c2.anchor(merkle.Node{Index: i, Size: i})
	}
	for i := range uint64(1000) {
		n, ok := c2.get(i)
		if !ok || n.Size != i || !c2.anchored(n) {
			t.Fatalf("node %d lost as the cache grew: %v %v", i, n, ok)
		}
	}
}
