package merkle_test

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/hyperfeed/hyperfeed/merkle"
	"github.com/stretchr/testify/require"
)

func TestBlockPathKnown(t *testing.T) {
	require.Empty(t, merkle.BlockPath(7, 0))
	require.Equal(t, []uint64{2, 5, 11}, merkle.BlockPath(0, 3))
	require.Equal(t, []uint64{8, 13}, merkle.BlockPath(5, 2))
	require.Equal(t, []uint64{12, 9, 3}, merkle.BlockPath(7, 3))
}

func TestUpgradeNodesKnown(t *testing.T) {
	for _, c := range []struct {
		start, length uint64
		want          []uint64
	}{
		{0, 0, nil}, {3, 3, nil}, {0, 4, []uint64{3}}, {0, 7, []uint64{3, 9, 12}},
		{1, 4, []uint64{2, 5}}, {3, 8, []uint64{6, 11}}, {4, 8, []uint64{11}},
		{5, 7, []uint64{10, 12}}, {6, 8, []uint64{13}}, {8, 12, []uint64{19}},
		{4, 5, []uint64{8}},
	} {
		require.Equal(t, c.want, merkle.UpgradeNodes(c.start, c.length), "UpgradeNodes(%d, %d)", c.start, c.length)
	}
}

// checkUpgradeNodes asserts that the nodes of an upgrade tile exactly the new
// blocks [start, length), left to right: a peer can serve an upgrade without
// anything the verifier already has, and nothing in it is redundant.
func checkUpgradeNodes(t testing.TB, start, length uint64) {
	idx := merkle.UpgradeNodes(start, length)
	if start == 0 && !slices.Equal(merkle.Roots(length), idx) {
		t.Fatalf("UpgradeNodes(0, %d) = %v, want the roots", length, idx)
	}
	next := start
	for _, i := range idx {
		first, end := merkle.Blocks(i)
		if first != next || end > length {
			t.Fatalf("UpgradeNodes(%d, %d) = %v: node %d over blocks [%d, %d) where block %d belongs", start, length, idx, i, first, end, next)
		}
		next = end
	}
	expect(t, next == length, "UpgradeNodes(%d, %d) = %v ends at block %d", start, length, idx, next)
}

func TestUpgradeNodesRange(t *testing.T) {
	for length := range uint64(130) {
		for start := range length + 1 {
			checkUpgradeNodes(t, start, length)
		}
	}
	rng := rand.New(rand.NewPCG(3, 4))
	for range 2000 {
		length := rng.Uint64N(merkle.MaxLength + 1)
		checkUpgradeNodes(t, rng.Uint64N(length+1), length)
	}
	checkUpgradeNodes(t, 0, merkle.MaxLength)
	checkUpgradeNodes(t, 1, merkle.MaxLength)
	checkUpgradeNodes(t, merkle.MaxLength-1, merkle.MaxLength)
}

// verifyBlock checks that a real proof verifies, establishes only real nodes,
// and leaves the proof as it was.
func (tr *testTree) verifyBlock(t testing.TB, p *merkle.BlockProof, trusted func(uint64) (merkle.Node, bool)) []merkle.Node {
	t.Helper()
	// This runs for every block of every length, so it checks by hand and
	// leaves testify for reporting.
	before := slices.Clone(p.Nodes)
	data := tr.blocks[p.Index]
	nodes, err := p.Verify(data, trusted)
	if err != nil {
		require.NoError(t, err, "block %d", p.Index)
	}
	if !slices.Equal(before, p.Nodes) {
		require.Equal(t, before, p.Nodes, "Verify changed the proof")
	}
	if len(nodes) != 1+2*len(p.Nodes) || nodes[0] != merkle.Leaf(p.Index, data) {
		t.Fatalf("block %d: Verify returned %v for %d siblings", p.Index, nodes, len(p.Nodes))
	}
	for _, n := range nodes {
		if real, ok := tr.nodes[n.Index]; !ok || real != n {
			require.Equal(t, real, n, "block %d: node %d is not the tree's", p.Index, n.Index)
		}
	}
	return nodes
}

func TestBlockProofs(t *testing.T) {
	t.Parallel()
	tr := buildTree(t, 2, 300)
	rng := rand.New(rand.NewPCG(5, 6))
	for length := uint64(1); length <= tr.length(); length++ {
		roots := tr.rootsAt(t, length)
		trusted := trustedRoots(roots)
		for b := range length {
			p := tr.blockProof(t, b, length)
			tr.verifyBlock(t, p, trusted)
			switch {
			case length <= 32:
				checkBlockRejections(t, tr, p, roots, allBytes, rng)
			case b == 0 || b == length-1 || rng.IntN(64) == 0:
				checkBlockRejections(t, tr, p, roots, someBytes, rng)
			}
		}
	}
}

func TestBlockProofsLong(t *testing.T) {
	t.Parallel()
	tr := bigTree(t)
	rng := rand.New(rand.NewPCG(7, 8))
	lengths := []uint64{1 << 10, 1<<12 - 1, 1 << 16, 1<<16 + 1, tr.length()}
	for range 4 {
		lengths = append(lengths, 301+rng.Uint64N(tr.length()-301))
	}
	for _, length := range lengths {
		roots := tr.rootsAt(t, length)
		trusted := trustedRoots(roots)
		blocks := []uint64{0, length - 1, length / 2}
		for range 40 {
			blocks = append(blocks, rng.Uint64N(length))
		}
		for k, b := range blocks {
			p := tr.blockProof(t, b, length)
			tr.verifyBlock(t, p, trusted)
			mode := someBytes
			if k == 0 {
				mode = allBytes
			}
			checkBlockRejections(t, tr, p, roots, mode, rng)
		}
	}
}

// TestBlockProofShortened covers a verifier that trusts more than its roots,
// such as nodes stored from an earlier proof: the proof may stop at the first
// of them.
func TestBlockProofShortened(t *testing.T) {
	tr := buildTree(t, 3, 70)
	for length := uint64(1); length <= tr.length(); length++ {
		roots := tr.rootsAt(t, length)
		for b := range length {
			// Trust one interior node on b's path, as if stored earlier.
			full := pathLen(b, length)
			for stop := 0; stop <= full; stop++ {
				at := merkle.LeafIndex(b)
				for range stop {
					at = merkle.Parent(at)
				}
				trusted := func(i uint64) (merkle.Node, bool) {
					if i == at {
						return tr.nodes[i], true
					}
					return trustedRoots(roots)(i)
				}
				p := &merkle.BlockProof{Index: b, Nodes: tr.nodesAt(t, merkle.BlockPath(b, stop))}
				tr.verifyBlock(t, p, trusted)
				if stop > 0 {
					// One node short of the trusted one lands on nothing trusted.
					q := &merkle.BlockProof{Index: b, Nodes: p.Nodes[:stop-1]}
					requireRejected(t, "short path", func() error { _, err := q.Verify(tr.blocks[b], trusted); return err })
				}
			}
		}
	}
}

func TestBlockProofEdges(t *testing.T) {
	tr := buildTree(t, 4, 5)
	trusted := trustedRoots(tr.rootsAt(t, 5))
	for _, c := range []struct {
		name string
		p    merkle.BlockProof
	}{
		{"beyond MaxLength", merkle.BlockProof{Index: merkle.MaxLength}},
		{"max index", merkle.BlockProof{Index: math.MaxUint64}},
		{"beyond length", merkle.BlockProof{Index: 5, Nodes: tr.nodesAt(t, []uint64{8})}},
		{"too many nodes", merkle.BlockProof{Index: 0, Nodes: make([]merkle.Node, 63)}},
		{"zero nodes", merkle.BlockProof{Index: 0, Nodes: make([]merkle.Node, 3)}},
	} {
		requireRejected(t, c.name, func() error { _, err := c.p.Verify(tr.blocks[0], trusted); return err })
	}

	// A proof that reaches outside every tree of at most MaxLength blocks is
	// refused before trusted sees the index: trusted may be a storage lookup
	// that is not ready for such indices.
	var above []merkle.Node
	for _, i := range merkle.BlockPath(0, 63) {
		above = append(above, merkle.Node{Index: i, Size: 1})
	}
	for _, c := range []struct {
		name string
		p    merkle.BlockProof
	}{
		{"block MaxLength", merkle.BlockProof{Index: merkle.MaxLength}},
		{"block MaxLength with its sibling", merkle.BlockProof{Index: merkle.MaxLength, Nodes: []merkle.Node{{Index: 2*merkle.MaxLength + 2}}}},
		{"last block", merkle.BlockProof{Index: math.MaxUint64}},
		{"63 levels", merkle.BlockProof{Index: 0, Nodes: above}},
	} {
		requireRejected(t, c.name, func() error {
			_, err := c.p.Verify([]byte{1}, func(i uint64) (merkle.Node, bool) {
				t.Errorf("%s: trusted asked for node %d", c.name, i)
				return merkle.Node{}, true
			})
			return err
		})
	}
	// The deepest possible path: the last block of a full tree of MaxLength
	// blocks, with siblings whose sizes exercise the overflow checks.
	var path []merkle.Node
	for k, i := range merkle.BlockPath(merkle.MaxLength-1, 62) {
		path = append(path, merkle.Node{Index: i, Size: math.MaxUint64 - uint64(k)})
	}
	p := merkle.BlockProof{Index: merkle.MaxLength - 1, Nodes: path}
	requireRejected(t, "size overflow", func() error { _, err := p.Verify([]byte{1}, trusted); return err })
	p.Nodes = slices.Clone(path)
	for k := range p.Nodes {
		p.Nodes[k].Size = 1
	}
	requireRejected(t, "full depth", func() error {
		_, err := p.Verify(nil, func(uint64) (merkle.Node, bool) { return merkle.Node{}, true })
		return err
	})
}

type byteMode int

const (
	allBytes  byteMode = iota // flip every byte of every hash and signature
	someBytes                 // flip the ends and one random byte: the same code paths, cheaper
)

func (m byteMode) positions(n int, rng *rand.Rand) []int {
	if m == allBytes || n <= 3 {
		out := make([]int, n)
		for i := range out {
			out[i] = i
		}
		return out
	}
	return []int{0, n - 1, 1 + rng.IntN(n-2)}
}

// requireRejected fails unless verify returns an error that wraps
// ErrInvalidProof. A panic is reported with the mutation that caused it.
// what names the mutation, so it does not call t.Helper, whose stack walk
// would cost more than most verifications.
func requireRejected(t testing.TB, what string, verify func() error) {
	var err error
	func() {
		defer func() {
			if r := recover(); r != nil {
				t.Fatalf("%s: Verify panicked: %v", what, r)
			}
		}()
		err = verify()
	}()
	if err == nil {
		t.Fatalf("%s: Verify accepted a bad proof", what)
	}
	if !errors.Is(err, merkle.ErrInvalidProof) {
		t.Fatalf("%s: error %q does not wrap ErrInvalidProof", what, err)
	}
}

// otherIndices are indices that a node at i could wrongly claim.
func otherIndices(i uint64) []uint64 {
	out := []uint64{i + 1, i - 1, i + 2, i ^ 1<<40, merkle.Parent(i), merkle.Sibling(i), math.MaxUint64, 2*merkle.MaxLength - 1}
	return slices.DeleteFunc(out, func(j uint64) bool { return j == i })
}

func otherSizes(s uint64) []uint64 {
	out := []uint64{s + 1, s - 1, math.MaxUint64}
	return slices.DeleteFunc(out, func(x uint64) bool { return x == s })
}

// checkBlockRejections checks that every single change to a valid block proof
// p, or to its data, is rejected.
func checkBlockRejections(t testing.TB, tr *testTree, p *merkle.BlockProof, roots []merkle.Node, mode byteMode, rng *rand.Rand) {
	t.Helper()
	data := tr.blocks[p.Index]
	trusted := trustedRoots(roots)
	reject := func(what string, q *merkle.BlockProof, d []byte) {
		requireRejected(t, fmt.Sprintf("block %d: %s", p.Index, what), func() error {
			_, err := q.Verify(d, trusted)
			return err
		})
	}
	edit := func(f func(q *merkle.BlockProof)) *merkle.BlockProof {
		q := &merkle.BlockProof{Index: p.Index, Nodes: slices.Clone(p.Nodes)}
		f(q)
		return q
	}

	for k, n := range p.Nodes {
		for _, j := range mode.positions(32, rng) {
			reject(fmt.Sprintf("node %d hash byte %d", n.Index, j), edit(func(q *merkle.BlockProof) { q.Nodes[k].Hash[j] ^= 0xff }), data)
		}
		reject(fmt.Sprintf("node %d low bit", n.Index), edit(func(q *merkle.BlockProof) { q.Nodes[k].Hash[31] ^= 1 }), data)
		for _, s := range otherSizes(n.Size) {
			reject(fmt.Sprintf("node %d size %d", n.Index, s), edit(func(q *merkle.BlockProof) { q.Nodes[k].Size = s }), data)
		}
		for _, i := range otherIndices(n.Index) {
			reject(fmt.Sprintf("node %d as %d", n.Index, i), edit(func(q *merkle.BlockProof) { q.Nodes[k].Index = i }), data)
		}
		reject(fmt.Sprintf("node %d dropped", n.Index), edit(func(q *merkle.BlockProof) { q.Nodes = slices.Delete(q.Nodes, k, k+1) }), data)
		reject(fmt.Sprintf("node %d repeated", n.Index), edit(func(q *merkle.BlockProof) { q.Nodes = slices.Insert(q.Nodes, k, n) }), data)
		if k > 0 {
			reject(fmt.Sprintf("nodes %d and %d swapped", k-1, k), edit(func(q *merkle.BlockProof) { q.Nodes[k-1], q.Nodes[k] = q.Nodes[k], q.Nodes[k-1] }), data)
		}
	}

	// One more node past the root: the next sibling up, real when the tree
	// is longer than the proof's length.
	top := merkle.LeafIndex(p.Index)
	for range p.Nodes {
		top = merkle.Parent(top)
	}
	extra, ok := tr.nodes[merkle.Sibling(top)]
	if !ok {
		extra = merkle.Node{Index: merkle.Sibling(top), Size: 1, Hash: [32]byte{1}}
	}
	reject("extra node past the root", edit(func(q *merkle.BlockProof) { q.Nodes = append(q.Nodes, extra) }), data)
	reject("extra node before the leaf's sibling", edit(func(q *merkle.BlockProof) {
		q.Nodes = slices.Insert(q.Nodes, 0, merkle.Node{Index: merkle.Sibling(merkle.LeafIndex(p.Index))})
	}), data)
	if len(p.Nodes) > 0 {
		reject("all nodes dropped", edit(func(q *merkle.BlockProof) { q.Nodes = nil }), data)
	}

	for _, b := range []uint64{p.Index + 1, p.Index - 1, p.Index ^ 1, p.Index + 2, p.Index + 1<<20, merkle.MaxLength, merkle.MaxLength - 1, math.MaxUint64} {
		if b != p.Index {
			reject(fmt.Sprintf("index %d", b), edit(func(q *merkle.BlockProof) { q.Index = b }), data)
		}
	}
	reject("one more byte", p, append(slices.Clone(data), 0))
	if len(data) > 0 {
		reject("one byte less", p, data[:len(data)-1])
		for _, j := range mode.positions(len(data), rng) {
			d := slices.Clone(data)
			d[j] ^= 0x01
			reject(fmt.Sprintf("data byte %d", j), p, d)
		}
	}
	// A leaf's hash does not cover its index, so a neighbour's data is only a
	// change when its bytes differ.
	for _, o := range []uint64{p.Index - 1, p.Index + 1} {
		if o < uint64(len(tr.blocks)) && string(tr.blocks[o]) != string(data) {
			reject(fmt.Sprintf("data of block %d", o), p, tr.blocks[o])
		}
	}

	// Roots of another tree of the same shape: the verifier's head is what the
	// proof must match, not just its indices.
	other := slices.Clone(roots)
	for k := range other {
		other[k].Hash[0] ^= 0x80
	}
	requireRejected(t, fmt.Sprintf("block %d: other roots", p.Index), func() error {
		_, err := p.Verify(data, trustedRoots(other))
		return err
	})
	requireRejected(t, fmt.Sprintf("block %d: nothing trusted", p.Index), func() error {
		_, err := p.Verify(data, trustedRoots(nil))
		return err
	})
}

// verifyUpgrade checks that a real upgrade verifies against the real roots of
// its start, yields the real roots of its length, and establishes only real
// nodes.
func (tr *testTree) verifyUpgrade(t testing.TB, p *merkle.UpgradeProof, key [32]byte, fork uint64) []merkle.Node {
	t.Helper()
	start := tr.rootsAt(t, p.Start)
	before := *p
	before.Nodes, before.Signature = slices.Clone(p.Nodes), slices.Clone(p.Signature)
	roots, nodes, err := p.Verify(key, fork, start)
	require.NoError(t, err, "upgrade %d to %d", p.Start, p.Length)
	require.Equal(t, before, *p, "Verify changed the proof")
	what := fmt.Sprintf("upgrade %d to %d", p.Start, p.Length)
	if want := tr.rootsAt(t, p.Length); !slices.Equal(want, roots) {
		require.Equal(t, want, roots, what)
	}
	tr.requireRealNodes(t, nodes, what)
	// Every carried node that is not a new root is handed back to be stored.
	for _, n := range p.Nodes {
		if !slices.Contains(roots, n) && !slices.Contains(nodes, n) {
			t.Fatalf("%s: node %d was carried but not returned", what, n.Index)
		}
	}
	return roots
}

func TestUpgradeProofs(t *testing.T) {
	t.Parallel()
	sk, key := testKey(1)
	tr := buildTree(t, 5, 300)
	rng := rand.New(rand.NewPCG(9, 10))
	for length := range uint64(65) {
		for start := range length + 1 {
			p := tr.upgradeProof(t, sk, start, length, testFork)
			roots := tr.verifyUpgrade(t, p, key, testFork)
			// Past the small lengths the same mutations take the same code
			// paths, and each costs a signature check, so sample them.
			switch {
			case length <= 8:
				checkUpgradeRejections(t, tr, p, sk, allBytes, rng)
			case length <= 20 || rng.IntN(16) == 0:
				checkUpgradeRejections(t, tr, p, sk, someBytes, rng)
			}

			// The new roots are what a verifier trusts blocks past start by.
			trusted := trustedRoots(roots)
			for b := start; b < length; b++ {
				tr.verifyBlock(t, tr.blockProof(t, b, length), trusted)
			}
		}
	}
	for range 300 {
		length := 65 + rng.Uint64N(tr.length()-64)
		start := rng.Uint64N(length + 1)
		p := tr.upgradeProof(t, sk, start, length, testFork)
		tr.verifyUpgrade(t, p, key, testFork)
		if rng.IntN(10) == 0 {
			checkUpgradeRejections(t, tr, p, sk, someBytes, rng)
		}
	}
}

func TestUpgradeProofsLong(t *testing.T) {
	t.Parallel()
	sk, key := testKey(2)
	tr := bigTree(t)
	rng := rand.New(rand.NewPCG(11, 12))
	n := tr.length()
	pairs := [][2]uint64{{0, n}, {1, n}, {n - 1, n}, {n, n}, {1 << 16, 1<<16 + 1}, {1<<16 - 1, 1 << 16}, {1<<15 + 3, n}}
	for range 60 {
		length := rng.Uint64N(n + 1)
		pairs = append(pairs, [2]uint64{rng.Uint64N(length + 1), length})
	}
	for k, pair := range pairs {
		start, length := pair[0], pair[1]
		p := tr.upgradeProof(t, sk, start, length, testFork)
		roots := tr.verifyUpgrade(t, p, key, testFork)
		if k < 10 {
			checkUpgradeRejections(t, tr, p, sk, someBytes, rng)
		}
		if start < length {
			trusted := trustedRoots(roots)
			for _, b := range []uint64{start, length - 1, start + rng.Uint64N(length-start)} {
				tr.verifyBlock(t, tr.blockProof(t, b, length), trusted)
			}
		}
	}
}

func TestUpgradeProofEdges(t *testing.T) {
	sk, key := testKey(3)
	empty := merkle.Sign(sk, merkle.TreeHash(nil), 0, testFork)

	// The empty head is signable, and upgrading from it to itself carries
	// nothing.
	p := &merkle.UpgradeProof{Signature: empty}
	roots, nodes, err := p.Verify(key, testFork, nil)
	require.NoError(t, err)
	require.Empty(t, roots)
	require.Empty(t, nodes)

	for _, c := range []struct {
		name string
		p    merkle.UpgradeProof
	}{
		{"length beyond MaxLength", merkle.UpgradeProof{Length: merkle.MaxLength + 1, Signature: empty}},
		{"max length", merkle.UpgradeProof{Start: 0, Length: math.MaxUint64, Signature: empty}},
		{"start after length", merkle.UpgradeProof{Start: 3, Length: 2, Signature: empty}},
		{"MaxLength with no nodes", merkle.UpgradeProof{Length: merkle.MaxLength, Signature: empty}},
		{"MaxLength root", merkle.UpgradeProof{Length: merkle.MaxLength, Nodes: []merkle.Node{{Index: 1<<62 - 1, Size: math.MaxUint64}}, Signature: empty}},
		{"too many nodes", merkle.UpgradeProof{Length: 1, Nodes: make([]merkle.Node, 63), Signature: empty}},
	} {
		requireRejected(t, c.name, func() error { _, _, err := c.p.Verify(key, testFork, nil); return err })
	}

	// Sizes that overflow: a right sibling too large for the old root it
	// joins, and new roots whose sum overflows.
	old := []merkle.Node{{Index: 0, Size: 10}}
	requireRejected(t, "sibling size overflow", func() error {
		q := merkle.UpgradeProof{Start: 1, Length: 2, Nodes: []merkle.Node{{Index: 2, Size: math.MaxUint64}}, Signature: empty}
		_, _, err := q.Verify(key, testFork, old)
		return err
	})
	requireRejected(t, "byte length overflow", func() error {
		q := merkle.UpgradeProof{Start: 0, Length: 3, Nodes: []merkle.Node{{Index: 1, Size: math.MaxUint64}, {Index: 4, Size: 1}}, Signature: empty}
		_, _, err := q.Verify(key, testFork, nil)
		return err
	})
}

// checkUpgradeRejections checks that every single change to a valid upgrade p,
// to the key, fork or start roots it is checked against, is rejected.
func checkUpgradeRejections(t testing.TB, tr *testTree, p *merkle.UpgradeProof, sk ed25519.PrivateKey, mode byteMode, rng *rand.Rand) {
	t.Helper()
	var key [32]byte
	copy(key[:], sk.Public().(ed25519.PublicKey))
	start := tr.rootsAt(t, p.Start)
	name := fmt.Sprintf("upgrade %d to %d", p.Start, p.Length)
	rejectWith := func(what string, q *merkle.UpgradeProof, key [32]byte, fork uint64, start []merkle.Node) {
		requireRejected(t, name+": "+what, func() error {
			_, _, err := q.Verify(key, fork, start)
			return err
		})
	}
	edit := func(f func(q *merkle.UpgradeProof)) *merkle.UpgradeProof {
		q := *p
		q.Nodes, q.Signature = slices.Clone(p.Nodes), slices.Clone(p.Signature)
		f(&q)
		return &q
	}
	reject := func(what string, f func(q *merkle.UpgradeProof)) {
		rejectWith(what, edit(f), key, testFork, start)
	}

	for k, n := range p.Nodes {
		for _, j := range mode.positions(32, rng) {
			reject(fmt.Sprintf("node %d hash byte %d", n.Index, j), func(q *merkle.UpgradeProof) { q.Nodes[k].Hash[j] ^= 0xff })
		}
		for _, s := range otherSizes(n.Size) {
			reject(fmt.Sprintf("node %d size %d", n.Index, s), func(q *merkle.UpgradeProof) { q.Nodes[k].Size = s })
		}
		for _, i := range otherIndices(n.Index) {
			reject(fmt.Sprintf("node %d as %d", n.Index, i), func(q *merkle.UpgradeProof) { q.Nodes[k].Index = i })
		}
		reject(fmt.Sprintf("node %d dropped", n.Index), func(q *merkle.UpgradeProof) { q.Nodes = slices.Delete(q.Nodes, k, k+1) })
		reject(fmt.Sprintf("node %d repeated", n.Index), func(q *merkle.UpgradeProof) { q.Nodes = slices.Insert(q.Nodes, k, n) })
		if k > 0 {
			reject(fmt.Sprintf("nodes %d and %d swapped", k-1, k), func(q *merkle.UpgradeProof) { q.Nodes[k-1], q.Nodes[k] = q.Nodes[k], q.Nodes[k-1] })
		}
	}
	// A real node appended, and the roots of the new length in place of the
	// upgrade (which equal it only when starting from nothing).
	reject("extra real node", func(q *merkle.UpgradeProof) { q.Nodes = append(q.Nodes, tr.nodes[0]) })
	reject("extra zero node", func(q *merkle.UpgradeProof) { q.Nodes = append(q.Nodes, merkle.Node{}) })
	if p.Start > 0 && p.Start < p.Length {
		reject("new roots instead of the upgrade", func(q *merkle.UpgradeProof) { q.Nodes = tr.rootsAt(t, p.Length) })
	}

	for _, s := range []uint64{p.Start + 1, p.Start - 1, 0, p.Length, p.Length + 1, math.MaxUint64} {
		if s != p.Start {
			reject(fmt.Sprintf("start %d", s), func(q *merkle.UpgradeProof) { q.Start = s })
		}
	}
	for _, l := range []uint64{p.Length + 1, p.Length - 1, 2*p.Length + 1, merkle.MaxLength, merkle.MaxLength + 1, math.MaxUint64} {
		if l != p.Length {
			reject(fmt.Sprintf("length %d", l), func(q *merkle.UpgradeProof) { q.Length = l })
		}
	}
	for _, f := range []uint64{testFork + 1, testFork - 1, 0, math.MaxUint64} {
		rejectWith(fmt.Sprintf("fork %d", f), p, key, f, start)
	}

	for _, j := range mode.positions(ed25519.SignatureSize, rng) {
		reject(fmt.Sprintf("signature byte %d", j), func(q *merkle.UpgradeProof) { q.Signature[j] ^= 0xff })
	}
	reject("signature low bit", func(q *merkle.UpgradeProof) { q.Signature[0] ^= 1 })
	reject("signature high bit", func(q *merkle.UpgradeProof) { q.Signature[63] ^= 0x80 })
	for _, n := range []int{63, 32, 1, 0} {
		reject(fmt.Sprintf("signature cut to %d bytes", n), func(q *merkle.UpgradeProof) { q.Signature = q.Signature[:n] })
	}
	reject("nil signature", func(q *merkle.UpgradeProof) { q.Signature = nil })
	reject("signature one byte longer", func(q *merkle.UpgradeProof) { q.Signature = append(q.Signature, 0) })
	reject("zero signature", func(q *merkle.UpgradeProof) { q.Signature = make([]byte, ed25519.SignatureSize) })
	// Real signatures of other heads by the right key.
	if p.Length > 0 {
		reject("signature of the empty head", func(q *merkle.UpgradeProof) {
			q.Signature = merkle.Sign(sk, merkle.TreeHash(nil), 0, testFork)
		})
	}
	if p.Length < tr.length() {
		next := merkle.TreeHash(tr.rootsAt(t, p.Length+1))
		reject("signature of the next head", func(q *merkle.UpgradeProof) {
			q.Signature = merkle.Sign(sk, next, p.Length+1, testFork)
		})
	}
	here := merkle.TreeHash(tr.rootsAt(t, p.Length))
	reject("signature of another fork", func(q *merkle.UpgradeProof) {
		q.Signature = merkle.Sign(sk, here, p.Length, testFork+1)
	})
	_, wrong := testKey(200)
	rejectWith("wrong key", p, wrong, testFork, start)
	rejectWith("zero key", p, [32]byte{}, testFork, start)

	for k := range start {
		bad := slices.Clone(start)
		bad[k].Hash[7] ^= 0x10
		rejectWith(fmt.Sprintf("start root %d hash", k), p, key, testFork, bad)
		bad = slices.Clone(start)
		bad[k].Size++
		rejectWith(fmt.Sprintf("start root %d size", k), p, key, testFork, bad)
		bad = slices.Clone(start)
		bad[k].Index++
		rejectWith(fmt.Sprintf("start root %d index", k), p, key, testFork, bad)
		rejectWith(fmt.Sprintf("start root %d dropped", k), p, key, testFork, slices.Delete(slices.Clone(start), k, k+1))
		if k > 0 {
			bad = slices.Clone(start)
			bad[k-1], bad[k] = bad[k], bad[k-1]
			rejectWith(fmt.Sprintf("start roots %d and %d swapped", k-1, k), p, key, testFork, bad)
		}
	}
	rejectWith("extra start root", p, key, testFork, append(slices.Clone(start), tr.nodes[merkle.LeafIndex(p.Start)]))
	if p.Start > 0 {
		rejectWith("roots of start-1", p, key, testFork, tr.rootsAt(t, p.Start-1))
	}
	if p.Start < tr.length() {
		rejectWith("roots of start+1", p, key, testFork, tr.rootsAt(t, p.Start+1))
	}
}
