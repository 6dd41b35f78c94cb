package merkle

import "math/bits"

// MaxLength is the largest number of blocks a tree may hold. It keeps every
// flat-tree index, span and byte count inside uint64 arithmetic; functions in
// this package are defined for indices below 2*MaxLength-1, the nodes of a
// tree of MaxLength blocks.
const MaxLength = 1 << 62

// Depth returns the height of node i above the leaves: the number of trailing
// one bits of i. Leaves have depth 0.
func Depth(i uint64) uint64 { return uint64(bits.TrailingZeros64(^i)) }

// Offset returns the position of node i among the nodes of its depth, counted
// from the left.
func Offset(i uint64) uint64 { return i >> (Depth(i) + 1) }

// Index returns the flat-tree index of the node at the given depth and offset.
func Index(depth, offset uint64) uint64 {
	return offset<<(depth+1) | (1<<depth - 1)
}

// Parent returns the index of the parent of node i.
func Parent(i uint64) uint64 {
	d := Depth(i)
	return Index(d+1, Offset(i)>>1)
}

// Sibling returns the index of the other child of i's parent.
func Sibling(i uint64) uint64 {
	d := Depth(i)
	return Index(d, Offset(i)^1)
}

// IsLeft reports whether node i is the left child of its parent.
func IsLeft(i uint64) bool { return Offset(i)&1 == 0 }

// Children returns the left and right children of node i; ok is false for a
// leaf.
func Children(i uint64) (left, right uint64, ok bool) {
	d := Depth(i)
	if d == 0 {
		return 0, 0, false
	}
	half := uint64(1) << (d - 1)
	return i - half, i + half, true
}

// Spans returns the leftmost and rightmost leaf indices (flat-tree indices,
// not block numbers) under node i.
func Spans(i uint64) (left, right uint64) {
	w := uint64(1)<<Depth(i) - 1
	return i - w, i + w
}

// Blocks returns the range of block numbers [first, end) under node i.
func Blocks(i uint64) (first, end uint64) {
	l, r := Spans(i)
	return l / 2, r/2 + 1
}

// LeafIndex returns the flat-tree index of block b.
func LeafIndex(b uint64) uint64 { return 2 * b }

// Roots returns the indices of the full roots of a tree of length blocks, left
// to right, largest first. Their subtrees cover blocks [0, length) exactly.
func Roots(length uint64) []uint64 {
	roots := make([]uint64, 0, bits.OnesCount64(length))
	var start uint64 // first block not yet covered
	for length > 0 {
		w := uint64(1) << (63 - bits.LeadingZeros64(length)) // largest power of two ≤ length
		roots = append(roots, 2*start+w-1)
		start += w
		length -= w
	}
	return roots
}

// Covered reports whether every block under node i lies below length.
func Covered(i, length uint64) bool {
	_, end := Blocks(i)
	return end <= length
}
