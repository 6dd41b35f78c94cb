package feed

import (
	"context"
	"fmt"
	"io"
	"slices"

	"github.com/hyperfeed/hyperfeed/merkle"
)

// verifyChunk is how many tree nodes Verify reads at a time. A power of two,
// so a chunk holds whole subtrees and most children are found inside it.
const verifyChunk = 1 << 16

// Verify checks everything the feed holds against its signed head: the
// signature, the roots, every stored node against its children, and every
// stored block against its leaf. It reads the whole feed and holds off
// writers meanwhile. A failure is ErrCorrupt, naming the first bad block or
// node.
func (f *Feed) Verify(ctx context.Context) error {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.closed {
		return fmt.Errorf("feed: verify: %w", ErrClosed)
	}
	if err := f.verifyLocked(ctx); err != nil {
		return fmt.Errorf("feed: verify: %w", err)
	}
	return nil
}

func (f *Feed) verifyLocked(ctx context.Context) error {
	h := &f.head
	if merkle.TreeHash(f.roots) != h.TreeHash {
		return fmt.Errorf("%w: roots do not match the tree hash", ErrCorrupt)
	}
	if len(h.Signature) > 0 && !merkle.VerifySignature(f.key, h.TreeHash, h.Length, h.Fork, h.Signature) {
		return fmt.Errorf("%w: head signature does not verify", ErrCorrupt)
	}
	for _, r := range f.roots {
		n, err := f.readNodeDisk(r.Index)
		if err != nil {
			return err
		}
		if n != r {
			return fmt.Errorf("%w: stored root %d differs from the head's", ErrCorrupt, r.Index)
		}
	}
	complete := f.head.Complete // then every node and block below the length must be there
	roots := merkle.Roots(h.Length)
	end := 2 * h.Length // nodes [0, end) may belong to the head's tree
	buf := make([]byte, verifyChunk*merkle.NodeSize)
	for base := uint64(0); base < end; base += verifyChunk {
		if err := ctx.Err(); err != nil {
			return err
		}
		count := min(uint64(verifyChunk), end-base)
		chunk := buf[:count*merkle.NodeSize]
		n, err := f.files.tree.ReadAt(chunk, int64(base)*merkle.NodeSize)
		if err != nil && err != io.EOF {
			return err
		}
		clear(chunk[n:]) // past the end of the file: absent
		node := func(i uint64) (merkle.Node, error) {
			if i >= base && i < base+count {
				return merkle.ReadNode(i, chunk[(i-base)*merkle.NodeSize:]), nil
			}
			return f.readNodeDisk(i)
		}
		for i := base; i < base+count; i++ {
			if !merkle.Covered(i, h.Length) {
				// Parents that reach past the head are never stored (trim
				// and the writes keep them zero), so anything here is damage.
				if nd, _ := node(i); !nd.IsZero() {
					return fmt.Errorf("%w: node %d is past the head but not empty", ErrCorrupt, i)
				}
				continue
			}
			nd, _ := node(i)
			if merkle.Depth(i) == 0 {
				if b := i / 2; f.has(b) {
					if _, _, err := f.readBlock(b); err != nil {
						return err
					}
				} else if complete {
					return fmt.Errorf("%w: bitfield lacks block %d", ErrCorrupt, b)
				}
			}
			if nd.IsZero() {
				if complete {
					return fmt.Errorf("%w: node %d missing", ErrCorrupt, i)
				}
				continue
			}
			// Every stored node is vouched for: a root by the tree hash, any
			// other by its parent, which every proof stores with it.
			if !slices.Contains(roots, i) {
				if p, err := node(merkle.Parent(i)); err != nil || p.IsZero() {
					return fmt.Errorf("%w: node %d is stored without its parent", ErrCorrupt, i)
				}
			}
			if merkle.Depth(i) == 0 {
				continue
			}
			l, r, _ := merkle.Children(i)
			ln, err := node(l)
			if err != nil {
				return err
			}
			rn, err := node(r)
			if err != nil {
				return err
			}
			if ln.IsZero() != rn.IsZero() {
				return fmt.Errorf("%w: node %d has one child stored", ErrCorrupt, i)
			}
			if ln.IsZero() {
				// A replica stores a node without its children when the node
				// came as a sibling in a proof; its parent vouches for it.
				if complete {
					return fmt.Errorf("%w: children of node %d missing", ErrCorrupt, i)
				}
				continue
			}
			if ln.Size+rn.Size != nd.Size || merkle.ParentHash(ln, rn) != nd.Hash {
				return fmt.Errorf("%w: node %d does not match its children", ErrCorrupt, i)
			}
		}
	}
	return nil
}
