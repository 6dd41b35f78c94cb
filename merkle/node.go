package merkle

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
)

// NodeSize is the size of a node's storage record: u64le(size) ‖ hash. The
// index is not stored; it is the record's position.
const NodeSize = 8 + 32

// Node is a node of the Merkle tree: a leaf (one block) or a parent (two
// children). Size is the number of data bytes under it.
type Node struct {
	Index uint64
	Size  uint64
	Hash  [32]byte
}

// IsZero reports whether n has no size and no hash, which storage uses for
// "absent" whatever the index. No real node is zero: its hash would have to
// be all zero bytes.
func (n Node) IsZero() bool { return n.Size == 0 && n.Hash == [32]byte{} }

// String returns the node in a form for logs and test failures.
func (n Node) String() string {
	return fmt.Sprintf("node{%d, size %d, %s}", n.Index, n.Size, hex.EncodeToString(n.Hash[:6]))
}

// Put writes n's storage record into b, which must hold NodeSize bytes.
func (n Node) Put(b []byte) {
	binary.LittleEndian.PutUint64(b, n.Size)
	copy(b[8:NodeSize], n.Hash[:])
}

// ReadNode decodes a storage record written by Node.Put at the given index.
func ReadNode(index uint64, b []byte) Node {
	n := Node{Index: index, Size: binary.LittleEndian.Uint64(b)}
	copy(n.Hash[:], b[8:NodeSize])
	return n
}

// AppendLeaf extends a tree whose full roots are roots by one leaf. It returns
// the new roots and appends to created every node it made: the leaf, then the
// parents that the leaf completes, lowest first. roots is reused.
func AppendLeaf(roots []Node, leaf Node, created []Node) ([]Node, []Node) {
	roots = append(roots, leaf)
	created = append(created, leaf)
	for n := len(roots); n >= 2 && Depth(roots[n-2].Index) == Depth(roots[n-1].Index); n = len(roots) {
		p := ParentOf(roots[n-2], roots[n-1])
		roots = append(roots[:n-2], p)
		created = append(created, p)
	}
	return roots, created
}
