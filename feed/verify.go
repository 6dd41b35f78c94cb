package feed

import (
	"context"
	"errors"
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
// stored block against its leaf and its path to a root. It reads the whole
// feed and holds off writers meanwhile. A failure is ErrCorrupt, naming
// the first bad block or node, or the error of a read that failed.
//
// On a replica, stored nodes that no block it holds depends on may be left
// over from a write that did not finish: whole, as the proof that brings
// them again has them, or torn, failing their checksums. Verify passes
// those, but no node that contradicts its children or the roots.
//
// A feed that failed (see ErrFailed) is not verified: until it is
// reopened, what its files hold is not known to match the head it shows.
func (f *Feed) Verify(ctx context.Context) error {
	f.mu.RLock()
	defer f.mu.RUnlock()
	switch {
	case f.closed:
		return fmt.Errorf("feed: verify: %w", ErrClosed)
	case f.failed != nil:
		return fmt.Errorf("feed: verify: %w: %v", ErrFailed, f.failed)
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
	// holds reports whether the feed holds a block under node i, whose
	// path then runs through i.
	holds := func(i uint64) bool {
		if complete {
			return true
		}
		first, end := merkle.Blocks(i)
		return f.bits.anySet(first, min(end, h.Length))
	}
	roots := merkle.Roots(h.Length)
	end := 2 * h.Length // nodes [0, end) may belong to the head's tree
	buf := make([]byte, verifyChunk*nodeSize)
	for base := uint64(0); base < end; base += verifyChunk {
		if err := ctx.Err(); err != nil {
			return err
		}
		count := min(uint64(verifyChunk), end-base)
		chunk := buf[:count*nodeSize]
		n, err := f.files.tree.ReadAt(chunk, int64(base)*nodeSize)
		if err != nil && err != io.EOF {
			return err
		}
		clear(chunk[n:]) // past the end of the file: absent
		// node returns node i; a record that fails its checksum is
		// errDamagedNode.
		node := func(i uint64) (merkle.Node, error) {
			if i >= base && i < base+count {
				return decodeNode(i, chunk[(i-base)*nodeSize:])
			}
			return f.readNodeDisk(i)
		}
		// whole returns node i and whether it is stored whole.
		whole := func(i uint64) (merkle.Node, bool, error) {
			nd, err := node(i)
			if errors.Is(err, errDamagedNode) {
				return nd, false, nil
			}
			return nd, err == nil && !nd.IsZero(), err
		}
		for i := base; i < base+count; i++ {
			nd, err := node(i)
			damaged := errors.Is(err, errDamagedNode)
			if err != nil && !damaged {
				return err
			}
			if !merkle.Covered(i, h.Length) {
				// Parents that reach past the head are never stored (trim
				// and the writes keep them zero), so anything here is damage.
				if damaged || !nd.IsZero() {
					return fmt.Errorf("%w: node %d is past the head but not empty", ErrCorrupt, i)
				}
				continue
			}
			if merkle.Depth(i) == 0 {
				if b := i / 2; f.has(b) {
					if _, _, err := f.readBlock(b); err != nil {
						return err
					}
				} else if complete {
					return fmt.Errorf("%w: bitfield lacks block %d", ErrCorrupt, b)
				}
			}
			if damaged || nd.IsZero() {
				// A node is needed if it is a root, or if a held block lies
				// under its parent: it is on that block's path, or beside it.
				// Any other may be missing, or left torn by a write that did
				// not finish.
				if complete || slices.Contains(roots, i) || holds(merkle.Parent(i)) {
					if damaged {
						return fmt.Errorf("%w: node %d fails its checksum", ErrCorrupt, i)
					}
					return fmt.Errorf("%w: node %d missing", ErrCorrupt, i)
				}
				continue
			}
			if merkle.Depth(i) == 0 {
				continue
			}
			l, r, _ := merkle.Children(i)
			ln, lok, err := whole(l)
			if err != nil {
				return err
			}
			rn, rok, err := whole(r)
			if err != nil {
				return err
			}
			if !lok || !rok {
				// A replica stores a node without its children when the node
				// came as a sibling in a proof, or in an upgrade.
				if holds(i) {
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
