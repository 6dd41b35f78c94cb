package merkle_test

import (
	"math/rand/v2"
	"testing"

	"github.com/hyperfeed/hyperfeed/merkle"
	"github.com/stretchr/testify/require"
)

// The expected values below are the ones Hypercore's flat-tree module gives;
// matching them is what lets node indices cross the wire unchanged.

func TestDepthOffset(t *testing.T) {
	for _, c := range []struct{ i, depth, offset uint64 }{
		{0, 0, 0}, {1, 1, 0}, {2, 0, 1}, {3, 2, 0}, {4, 0, 2}, {5, 1, 1},
		{6, 0, 3}, {7, 3, 0}, {9, 1, 2}, {11, 2, 1}, {15, 4, 0}, {19, 2, 2},
		{23, 3, 1}, {27, 2, 3}, {31, 5, 0}, {1 << 62, 0, 1 << 61},
		{1<<62 - 1, 62, 0}, {1<<63 - 2, 0, 1<<62 - 1},
	} {
		require.Equal(t, c.depth, merkle.Depth(c.i), "Depth(%d)", c.i)
		require.Equal(t, c.offset, merkle.Offset(c.i), "Offset(%d)", c.i)
		require.Equal(t, c.i, merkle.Index(c.depth, c.offset), "Index(%d, %d)", c.depth, c.offset)
	}
}

func TestParentSibling(t *testing.T) {
	for _, c := range []struct {
		i, parent, sibling uint64
		left               bool
	}{
		{0, 1, 2, true}, {2, 1, 0, false}, {4, 5, 6, true}, {6, 5, 4, false},
		{1, 3, 5, true}, {5, 3, 1, false}, {3, 7, 11, true}, {11, 7, 3, false},
		{7, 15, 23, true}, {23, 15, 7, false}, {8, 9, 10, true}, {9, 11, 13, true},
		{13, 11, 9, false}, {19, 23, 27, true}, {27, 23, 19, false},
	} {
		require.Equal(t, c.parent, merkle.Parent(c.i), "Parent(%d)", c.i)
		require.Equal(t, c.sibling, merkle.Sibling(c.i), "Sibling(%d)", c.i)
		require.Equal(t, c.left, merkle.IsLeft(c.i), "IsLeft(%d)", c.i)
	}
}

func TestChildren(t *testing.T) {
	for _, c := range []struct{ i, left, right uint64 }{
		{1, 0, 2}, {3, 1, 5}, {5, 4, 6}, {7, 3, 11}, {11, 9, 13}, {23, 19, 27},
		{1<<62 - 1, 1<<61 - 1, 1<<62 + 1<<61 - 1},
	} {
		l, r, ok := merkle.Children(c.i)
		require.True(t, ok, "Children(%d)", c.i)
		require.Equal(t, [2]uint64{c.left, c.right}, [2]uint64{l, r}, "Children(%d)", c.i)
	}
	for _, leaf := range []uint64{0, 2, 4, 100, 1<<63 - 2} {
		_, _, ok := merkle.Children(leaf)
		require.False(t, ok, "Children(%d) of a leaf", leaf)
	}
}

func TestSpansBlocks(t *testing.T) {
	for _, c := range []struct{ i, lo, hi, first, end uint64 }{
		{0, 0, 0, 0, 1}, {2, 2, 2, 1, 2}, {1, 0, 2, 0, 2}, {3, 0, 6, 0, 4},
		{5, 4, 6, 2, 4}, {7, 0, 14, 0, 8}, {23, 16, 30, 8, 16}, {27, 24, 30, 12, 16},
		{1<<62 - 1, 0, 1<<63 - 2, 0, merkle.MaxLength},
	} {
		lo, hi := merkle.Spans(c.i)
		require.Equal(t, [2]uint64{c.lo, c.hi}, [2]uint64{lo, hi}, "Spans(%d)", c.i)
		first, end := merkle.Blocks(c.i)
		require.Equal(t, [2]uint64{c.first, c.end}, [2]uint64{first, end}, "Blocks(%d)", c.i)
	}
}

func TestLeafIndex(t *testing.T) {
	for b, want := range map[uint64]uint64{0: 0, 1: 2, 2: 4, 7: 14, merkle.MaxLength - 1: 1<<63 - 2} {
		require.Equal(t, want, merkle.LeafIndex(b), "LeafIndex(%d)", b)
		require.Zero(t, merkle.Depth(want))
		first, end := merkle.Blocks(want)
		require.Equal(t, [2]uint64{b, b + 1}, [2]uint64{first, end})
	}
}

func TestRootsKnown(t *testing.T) {
	for _, c := range []struct {
		length uint64
		roots  []uint64
	}{
		{0, []uint64{}}, {1, []uint64{0}}, {2, []uint64{1}}, {3, []uint64{1, 4}},
		{4, []uint64{3}}, {5, []uint64{3, 8}}, {6, []uint64{3, 9}}, {7, []uint64{3, 9, 12}},
		{8, []uint64{7}}, {9, []uint64{7, 16}}, {10, []uint64{7, 17}},
		{11, []uint64{7, 17, 20}}, {15, []uint64{7, 19, 25, 28}},
		{merkle.MaxLength, []uint64{1<<62 - 1}},
	} {
		require.Equal(t, c.roots, merkle.Roots(c.length), "Roots(%d)", c.length)
	}
}

func TestCovered(t *testing.T) {
	for _, c := range []struct {
		i, length uint64
		want      bool
	}{
		{0, 0, false}, {0, 1, true}, {1, 1, false}, {1, 2, true}, {3, 3, false},
		{3, 4, true}, {8, 5, true}, {9, 5, false}, {9, 6, true}, {7, 100, true},
		{1<<62 - 1, merkle.MaxLength - 1, false}, {1<<62 - 1, merkle.MaxLength, true},
	} {
		require.Equal(t, c.want, merkle.Covered(c.i, c.length), "Covered(%d, %d)", c.i, c.length)
	}
}

// expect is require.True without testify's reflection, for the checks below,
// which the fuzzer runs millions of times. Loops test by hand instead, since
// even boxing expect's arguments would dominate them.
func expect(t testing.TB, ok bool, format string, args ...any) {
	if !ok {
		t.Helper()
		t.Fatalf(format, args...)
	}
}

// checkIndex asserts the relations between a node and its neighbours that the
// proof code relies on. i must be a node of some tree of at most MaxLength
// blocks, i.e. below 2*MaxLength-1; see TestTopIndex for the one index left.
func checkIndex(t testing.TB, i uint64) {
	t.Helper()
	d, o := merkle.Depth(i), merkle.Offset(i)
	expect(t, merkle.Index(d, o) == i, "Index(Depth(%d), Offset(%d)) = %d", i, i, merkle.Index(d, o))

	p, s := merkle.Parent(i), merkle.Sibling(i)
	expect(t, s != i && merkle.Sibling(s) == i, "Sibling(%d) = %d, whose sibling is %d", i, s, merkle.Sibling(s))
	expect(t, merkle.Parent(s) == p, "Parent(%d) = %d but Parent(Sibling) = %d", i, p, merkle.Parent(s))
	expect(t, merkle.Depth(s) == d && merkle.Depth(p) == d+1, "depths of %d, its sibling %d and parent %d", i, s, p)
	left := merkle.IsLeft(i)
	expect(t, left != merkle.IsLeft(s) && left == (i < s), "IsLeft(%d) = %v with sibling %d", i, left, s)

	l, r, ok := merkle.Children(p)
	if left {
		expect(t, ok && l == i && r == s, "Children(%d) = %d, %d; want %d, %d", p, l, r, i, s)
	} else {
		expect(t, ok && l == s && r == i, "Children(%d) = %d, %d; want %d, %d", p, l, r, s, i)
	}

	// A parent spans exactly its two children, which is what lets a verifier
	// trust that a parent's size is the sum of its children's.
	lo, hi := merkle.Spans(i)
	slo, shi := merkle.Spans(s)
	plo, phi := merkle.Spans(p)
	if left {
		expect(t, plo == lo && hi+2 == slo && shi == phi, "Spans of %d, sibling %d and parent %d do not tile", i, s, p)
	} else {
		expect(t, plo == slo && shi+2 == lo && hi == phi, "Spans of %d, sibling %d and parent %d do not tile", i, s, p)
	}
	expect(t, merkle.Depth(lo) == 0 && merkle.Depth(hi) == 0, "Spans(%d) = %d, %d are not leaves", i, lo, hi)
	first, end := merkle.Blocks(i)
	expect(t, first == lo/2 && end == hi/2+1, "Blocks(%d) = %d, %d with Spans %d, %d", i, first, end, lo, hi)
	expect(t, end-first == 1<<d && first == o<<d, "Blocks(%d) = %d, %d at depth %d, offset %d", i, first, end, d, o)
	expect(t, merkle.Covered(i, end) && !merkle.Covered(i, end-1), "Covered(%d) at its end %d", i, end)

	cl, cr, ok := merkle.Children(i)
	if d == 0 {
		expect(t, !ok && merkle.LeafIndex(first) == i, "leaf %d: Children ok, or LeafIndex(%d) = %d", i, first, merkle.LeafIndex(first))
	} else {
		expect(t, ok && merkle.Parent(cl) == i && merkle.Parent(cr) == i && merkle.Sibling(cl) == cr && merkle.IsLeft(cl),
			"Children(%d) = %d, %d", i, cl, cr)
	}
}

// checkRoots asserts that the roots of length are the maximal full subtrees
// tiling [0, length), largest first.
func checkRoots(t testing.TB, length uint64) {
	t.Helper()
	roots := merkle.Roots(length)
	var next uint64 // first block not yet covered
	for k, r := range roots {
		first, end := merkle.Blocks(r)
		// Maximal: the parent would reach past length, so no larger root exists.
		if first != next || !merkle.Covered(r, length) || merkle.Covered(merkle.Parent(r), length) ||
			k > 0 && merkle.Depth(roots[k-1]) <= merkle.Depth(r) {
			t.Fatalf("Roots(%d) = %v: root %d over blocks [%d, %d) is wrong", length, roots, r, first, end)
		}
		next = end
	}
	expect(t, next == length, "Roots(%d) = %v ends at block %d", length, roots, next)
}

func TestFlatTreeExhaustive(t *testing.T) {
	for i := range uint64(1 << 14) {
		checkIndex(t, i)
	}
	for length := range uint64(1 << 12) {
		checkRoots(t, length)
	}
}

func TestFlatTreeRandom(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for range 4000 {
		// Uniform indices are nearly all shallow; a random depth reaches the
		// top levels too.
		d := rng.Uint64N(63)
		o := rng.Uint64N(uint64(1) << (62 - d))
		checkIndex(t, merkle.Index(d, o))
		checkIndex(t, rng.Uint64N(2*merkle.MaxLength-1))
		checkRoots(t, rng.Uint64N(merkle.MaxLength+1))
	}
	for _, i := range []uint64{2*merkle.MaxLength - 2, 1<<62 - 1, 1<<62 - 2, 1 << 62} {
		checkIndex(t, i)
	}
	for _, length := range []uint64{merkle.MaxLength, merkle.MaxLength - 1, merkle.MaxLength/2 + 1} {
		checkRoots(t, length)
	}
}

// TestTopIndex pins down 2*MaxLength-1, the one index below 2*MaxLength that
// is in no tree of at most MaxLength blocks: it would be the root of 2^63
// blocks. Its parent has no index below 2^64, so the flat-tree arithmetic
// wraps and the node is its own sibling. Nothing in the package reaches it,
// because proofs reject blocks at or beyond MaxLength first.
func TestTopIndex(t *testing.T) {
	const top = 2*merkle.MaxLength - 1
	require.Equal(t, uint64(63), merkle.Depth(top))
	require.Equal(t, uint64(top), merkle.Index(63, 0))
	require.Equal(t, uint64(top), merkle.Sibling(top))
	require.Equal(t, uint64(top), merkle.Parent(1<<62-1))
}
