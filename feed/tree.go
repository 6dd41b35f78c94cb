package feed

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"

	"github.com/hyperfeed/hyperfeed/merkle"
)

// nodeSize is the size of a node's record in the tree file: merkle's record
// (u64le(size) ‖ hash), the CRC-32C of those 40 bytes, and 4 zero bytes.
// A write that fails part way, or a power loss before its fsync, can leave
// a record half new and half old; the checksum tells such a record from a
// whole one, so that no reader takes it for a node (see doc.go).
const nodeSize = merkle.NodeSize + 8

// errDamagedNode marks a tree record that is neither absent nor whole. Where
// the feed depends on the node (a root, the path of a block it holds, any
// node of a writer's tree) that is damage, and the error wraps ErrCorrupt;
// elsewhere a replica takes the record for an absent node, since a write
// that did not finish leaves such records.
var errDamagedNode = fmt.Errorf("%w: tree node fails its checksum", ErrCorrupt)

// putNode lays out n's record in b, which holds nodeSize bytes.
func putNode(b []byte, n merkle.Node) {
	n.Put(b)
	binary.LittleEndian.PutUint32(b[merkle.NodeSize:], crc32.Checksum(b[:merkle.NodeSize], castagnoli))
	clear(b[merkle.NodeSize+4 : nodeSize])
}

// decodeNode reads the record of node i from b: the node, the zero node
// (Index i) for an absent one, or errDamagedNode.
func decodeNode(i uint64, b []byte) (merkle.Node, error) {
	b = b[:nodeSize]
	if binary.LittleEndian.Uint32(b[merkle.NodeSize:]) == crc32.Checksum(b[:merkle.NodeSize], castagnoli) && isZero(b[merkle.NodeSize+4:]) {
		return merkle.ReadNode(i, b), nil
	}
	if isZero(b) {
		return merkle.Node{Index: i}, nil
	}
	return merkle.Node{Index: i}, fmt.Errorf("%w: node %d", errDamagedNode, i)
}

// readNode returns node i of the tree file, from the cache when it holds it.
func (f *Feed) readNode(i uint64) (merkle.Node, error) {
	if n, ok := f.cache.get(i); ok {
		return n, nil
	}
	n, err := f.readNodeDisk(i)
	if err == nil {
		f.cache.put(n)
	}
	return n, err
}

// readNodeDisk reads node i from the tree file itself.
func (f *Feed) readNodeDisk(i uint64) (merkle.Node, error) {
	var b [nodeSize]byte
	n, err := f.files.tree.ReadAt(b[:], int64(i)*nodeSize)
	if n < nodeSize {
		if err == io.EOF || err == nil {
			return merkle.Node{Index: i}, nil // past the end: absent
		}
		return merkle.Node{Index: i}, err
	}
	return decodeNode(i, b[:])
}

// storedNode is readNode for a use that can do without the node: it
// reports whether node i is stored whole. On a replica a damaged record is
// then an absent node (see errDamagedNode); a writer holds its whole tree,
// so for it that is damage still.
func (f *Feed) storedNode(i uint64) (merkle.Node, bool, error) {
	n, err := f.readNode(i)
	if errors.Is(err, errDamagedNode) && !f.tip.Complete {
		return n, false, nil
	}
	return n, err == nil && !n.IsZero(), err
}

// rootsOf reads the roots of the tree of length blocks.
func (f *Feed) rootsOf(length uint64) ([]merkle.Node, error) {
	idx := merkle.Roots(length)
	roots := make([]merkle.Node, len(idx))
	for k, i := range idx {
		n, err := f.readNode(i)
		if err != nil {
			return nil, err
		}
		if n.IsZero() {
			return nil, fmt.Errorf("%w: root %d of length %d missing", ErrCorrupt, i, length)
		}
		roots[k] = n
	}
	return roots, nil
}

// tipRoot returns root i of the tip, if i is one.
func (f *Feed) tipRoot(i uint64) (merkle.Node, bool) {
	for _, r := range f.tipRoots {
		if r.Index == i {
			return r, true
		}
	}
	return merkle.Node{}, false
}

// anchored reports whether stored node n, covered by the tip, has its
// sibling and its parent stored whole, and they theirs, up to a root of the
// tip. Only then can the feed build on n: the sizes of the left siblings
// give the byte offset of a block under it, and the siblings are what a
// proof of that block carries. Every node a finished write stores is
// anchored, since a proof always stores a node's sibling and parent with it;
// a node left by a write that did not finish may not be, and is then of no
// more use than an absent one: the proof that brings its block again
// brings it again, with the rest. What a climb finds anchored is kept in
// the cache, which makes most answers one lookup.
func (f *Feed) anchored(n merkle.Node) (bool, error) {
	if f.tip.Complete {
		return true, nil // a writer holds every node of its tree
	}
	var buf [32]merkle.Node
	chain := buf[:0] // the nodes found anchored, and their siblings
	for cur := n; ; {
		if r, ok := f.tipRoot(cur.Index); ok {
			if r != cur {
				return false, nil
			}
			break
		}
		if f.cache.anchored(cur) {
			break
		}
		sib, ok, err := f.storedNode(merkle.Sibling(cur.Index))
		if !ok || err != nil {
			return false, err
		}
		parent, ok, err := f.storedNode(merkle.Parent(cur.Index))
		if !ok || err != nil {
			return false, err
		}
		chain = append(chain, cur, sib)
		cur = parent
	}
	f.cache.anchor(chain...)
	return true, nil
}

// trustedLocked returns node i if it belongs to the tip's tree and the feed
// can build on it: a root of the tip, or a stored node that is anchored.
func (f *Feed) trustedLocked(i uint64) (merkle.Node, bool, error) {
	return f.trustedFrom(i, nil)
}

// trustedFrom is trustedLocked taking stored nodes from tree when it holds
// them.
func (f *Feed) trustedFrom(i uint64, tree *prefetch) (merkle.Node, bool, error) {
	if !merkle.Covered(i, f.tip.Length) {
		return merkle.Node{}, false, nil
	}
	if r, ok := f.tipRoot(i); ok {
		return r, true, nil
	}
	var n merkle.Node
	var ok bool
	var err error
	if tree.holds(i) {
		n, err = tree.node(i)
		ok = err == nil && !n.IsZero()
		err = nil // a damaged record is an absent node here
	} else {
		n, ok, err = f.storedNode(i)
	}
	if !ok || err != nil {
		return merkle.Node{}, false, err
	}
	if ok, err := f.anchored(n); !ok || err != nil {
		return merkle.Node{}, false, err
	}
	return n, true, nil
}

// trust answers merkle's callbacks, which ask for the nodes the verifier
// trusts and have no way to return an error: it keeps the first read
// error, which the caller returns in place of whatever merkle made of the
// node it did not get. A disk that fails a read is not a peer that sent a
// bad proof, nor a tree that lacks a root.
type trust struct {
	f   *Feed
	err error
}

// node is trustedLocked.
func (t *trust) node(i uint64) (merkle.Node, bool) {
	n, ok, err := t.f.trustedLocked(i)
	if err != nil {
		t.err = cmp.Or(t.err, err)
		return merkle.Node{}, false
	}
	return n, ok
}

// stored is storedNode, for a prover that checks a proof against its own
// tree: any node it stores whole will do, anchored or not.
func (t *trust) stored(i uint64) (merkle.Node, bool) {
	n, ok, err := t.f.storedNode(i)
	if err != nil {
		t.err = cmp.Or(t.err, err)
	}
	return n, ok && err == nil
}
