package merkle_test

import (
	"crypto/ed25519"
	"fmt"
	"math/bits"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"

	"github.com/hyperfeed/hyperfeed/merkle"
	"github.com/stretchr/testify/require"
)

// testFork is not zero so that a proof checked under the default fork fails.
const testFork = 5

func testKey(seed byte) (ed25519.PrivateKey, [32]byte) {
	var s [ed25519.SeedSize]byte
	for i := range s {
		s[i] = seed + byte(i)
	}
	sk := ed25519.NewKeyFromSeed(s[:])
	var pk [32]byte
	copy(pk[:], sk.Public().(ed25519.PublicKey))
	return sk, pk
}

// testTree is a tree grown one block at a time that keeps every node it ever
// made. A node never changes once made, so the map also holds the nodes of
// every shorter tree and serves as the oracle for proofs at any length.
type testTree struct {
	blocks  [][]byte
	nodes   map[uint64]merkle.Node
	roots   []merkle.Node
	bytes   uint64
	created []merkle.Node
}

func newTestTree() *testTree {
	return &testTree{nodes: map[uint64]merkle.Node{}}
}

func (tr *testTree) length() uint64 { return uint64(len(tr.blocks)) }

func (tr *testTree) get(i uint64) (merkle.Node, bool) {
	n, ok := tr.nodes[i]
	return n, ok
}

// randomBlock is mostly small blocks, so that trees are cheap, with some empty
// ones (whose leaves differ only by index) and some large ones.
func randomBlock(rng *rand.Rand) []byte {
	var n int
	switch rng.IntN(8) {
	case 0:
		n = 0
	case 1:
		n = 1 + rng.IntN(1024)
	default:
		n = 1 + rng.IntN(48)
	}
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

// append adds a block with merkle.AppendLeaf and checks what it made against
// the definition of the tree: the leaf, then each parent it completes, each
// the ParentOf its two children.
func (tr *testTree) append(t testing.TB, data []byte) {
	b := tr.length()
	leaf := merkle.Leaf(b, data)
	tr.roots, tr.created = merkle.AppendLeaf(tr.roots, leaf, tr.created[:0])
	tr.blocks = append(tr.blocks, data)
	tr.bytes += uint64(len(data))

	if len(tr.created) == 0 || tr.created[0] != leaf {
		t.Fatalf("block %d: AppendLeaf did not create the leaf first: %v", b, tr.created)
	}
	for k, n := range tr.created {
		if _, dup := tr.nodes[n.Index]; dup {
			t.Fatalf("block %d: node %d created twice", b, n.Index)
		}
		if k > 0 {
			if n.Index != merkle.Parent(tr.created[k-1].Index) {
				t.Fatalf("block %d: created node %d does not follow %d", b, n.Index, tr.created[k-1].Index)
			}
			l, r, _ := merkle.Children(n.Index)
			ln, lok := tr.nodes[l]
			rn, rok := tr.nodes[r]
			if !lok || !rok || merkle.ParentOf(ln, rn) != n {
				t.Fatalf("block %d: node %v is not the parent of %d and %d", b, n, l, r)
			}
		}
		tr.nodes[n.Index] = n
	}
	idx := merkle.Roots(tr.length())
	var total uint64
	for k, r := range tr.roots {
		if k >= len(idx) || r.Index != idx[k] || tr.nodes[r.Index] != r {
			t.Fatalf("length %d: roots %v, want indices %v", tr.length(), tr.roots, idx)
		}
		total += r.Size
	}
	if len(tr.roots) != len(idx) || total != tr.bytes {
		t.Fatalf("length %d: roots %v hold %d bytes, want %d under %v", tr.length(), tr.roots, total, tr.bytes, idx)
	}
}

func buildTree(t testing.TB, seed uint64, length int) *testTree {
	rng := rand.New(rand.NewPCG(seed, 0x6d65726b6c65))
	tr := newTestTree()
	for range length {
		tr.append(t, randomBlock(rng))
	}
	return tr
}

func (tr *testTree) rootsAt(t testing.TB, length uint64) []merkle.Node {
	t.Helper()
	roots, err := merkle.RootsFrom(length, tr.get)
	require.NoError(t, err)
	return roots
}

// pathLen is how many siblings a proof of block b needs to climb to a root of
// a tree of length blocks.
func pathLen(b, length uint64) int {
	roots := merkle.Roots(length)
	n := 0
	for i := merkle.LeafIndex(b); !slices.Contains(roots, i); i = merkle.Parent(i) {
		n++
	}
	return n
}

func (tr *testTree) nodesAt(t testing.TB, idx []uint64) []merkle.Node {
	out := make([]merkle.Node, len(idx))
	for k, i := range idx {
		n, ok := tr.nodes[i]
		if !ok {
			t.Fatalf("node %d is not in the tree of length %d", i, tr.length())
		}
		out[k] = n
	}
	return out
}

func (tr *testTree) blockProof(t testing.TB, b, length uint64) *merkle.BlockProof {
	return &merkle.BlockProof{Index: b, Nodes: tr.nodesAt(t, merkle.BlockPath(b, pathLen(b, length)))}
}

func (tr *testTree) upgradeProof(t testing.TB, sk ed25519.PrivateKey, start, length, fork uint64) *merkle.UpgradeProof {
	return &merkle.UpgradeProof{
		Start:     start,
		Length:    length,
		Nodes:     tr.nodesAt(t, merkle.UpgradeNodes(start, length)),
		Signature: merkle.Sign(sk, merkle.TreeHash(tr.rootsAt(t, length)), length, fork),
	}
}

// trustedRoots stands for a verifier that holds only a signed head.
func trustedRoots(roots []merkle.Node) func(uint64) (merkle.Node, bool) {
	return func(i uint64) (merkle.Node, bool) {
		for _, r := range roots {
			if r.Index == i {
				return r, true
			}
		}
		return merkle.Node{}, false
	}
}

// requireRealNodes fails unless every node is the tree's node at its index.
// It compares by hand first because it runs for hundreds of thousands of
// nodes and testify's reflection would dominate the run time.
func (tr *testTree) requireRealNodes(t testing.TB, nodes []merkle.Node, what string) {
	t.Helper()
	for _, n := range nodes {
		if real, ok := tr.nodes[n.Index]; !ok || real != n {
			require.Equal(t, real, n, "%s: node %d is not the tree's", what, n.Index)
		}
	}
}

var bigTreeOnce = sync.OnceValue(func() *testTree {
	return buildTree(panicTB{}, 99, 1<<16+1000)
})

// bigTree is shared by the tests that sample long trees, so that it is built
// once per test binary.
func bigTree(t testing.TB) *testTree {
	t.Helper()
	tr := bigTreeOnce()
	require.Equal(t, uint64(1<<16+1000), tr.length())
	return tr
}

// panicTB lets tree building run outside a test; a failure there still
// surfaces as a test failure through the panic.
type panicTB struct{ testing.TB }

func (panicTB) Helper() {}
func (panicTB) Fatalf(format string, args ...any) {
	panic(fmt.Sprintf("tree building failed: "+format, args...))
}

func TestAppendLeafKeepsCreatedPrefix(t *testing.T) {
	sentinel := merkle.Node{Index: 1234, Size: 5, Hash: [32]byte{9}}
	var roots []merkle.Node
	var created []merkle.Node
	for b := range uint64(4) {
		roots, created = merkle.AppendLeaf(roots, merkle.Leaf(b, []byte{byte(b)}), []merkle.Node{sentinel})
		require.Equal(t, sentinel, created[0])
		require.Equal(t, merkle.LeafIndex(b), created[1].Index)
		// Block b completes one parent per trailing one bit of b.
		require.Len(t, created, 2+bits.TrailingZeros64(^b))
	}
	require.Len(t, roots, 1)
	require.Equal(t, uint64(3), roots[0].Index)
	require.Equal(t, uint64(4), roots[0].Size)
}

func TestAppendLeafLengths(t *testing.T) {
	tr := buildTree(t, 1, 300)
	for length := range uint64(301) {
		roots := tr.rootsAt(t, length)
		require.Len(t, roots, bits.OnesCount64(length))
		var total uint64
		for _, r := range roots {
			total += r.Size
		}
		var want uint64
		for _, b := range tr.blocks[:length] {
			want += uint64(len(b))
		}
		require.Equal(t, want, total, "byte length of %d blocks", length)
	}
	_, err := merkle.RootsFrom(301, tr.get)
	require.Error(t, err, "roots beyond the tree")
	big := bigTree(t)
	require.Len(t, big.roots, bits.OnesCount64(big.length()))
}

func TestNodeRecord(t *testing.T) {
	rng := rand.New(rand.NewPCG(15, 16))
	buf := make([]byte, merkle.NodeSize+3)
	for range 100 {
		n := merkle.Node{Index: rng.Uint64(), Size: rng.Uint64()}
		for k := range n.Hash {
			n.Hash[k] = byte(rng.Uint32())
		}
		n.Put(buf)
		// The record holds no index: whatever position it is read from is
		// the index it gets.
		require.Equal(t, n, merkle.ReadNode(n.Index, buf))
		other := merkle.ReadNode(n.Index+2, buf)
		require.Equal(t, n.Index+2, other.Index)
		require.Equal(t, n.Size, other.Size)
		require.Equal(t, n.Hash, other.Hash)
		require.False(t, n.IsZero())
		require.Contains(t, n.String(), fmt.Sprint(n.Index))
	}
	require.True(t, merkle.Node{}.IsZero())
	require.Equal(t, merkle.Node{}, merkle.ReadNode(0, make([]byte, merkle.NodeSize)))
	// Storage uses the zero record for "absent", so no real node may be zero,
	// not even the leaf of an empty block 0.
	require.False(t, merkle.Leaf(0, nil).IsZero())
	require.False(t, merkle.Leaf(0, []byte{}).IsZero())
}

// TestHashConcurrent runs the hashers, which share a pool, from several
// goroutines; under -race it also checks that the pool is used safely.
func TestHashConcurrent(t *testing.T) {
	tr := buildTree(t, 8, 64)
	want := make([][32]byte, len(tr.blocks))
	for b, data := range tr.blocks {
		want[b] = merkle.LeafHash(data)
	}
	roots := tr.rootsAt(t, tr.length())
	wantTree := merkle.TreeHash(roots)
	var wg sync.WaitGroup
	errs := make(chan string, 8)
	for g := range 8 {
		wg.Go(func() {
			for k := range 200 {
				b := (g*31 + k) % len(tr.blocks)
				if merkle.LeafHash(tr.blocks[b]) != want[b] {
					errs <- fmt.Sprintf("goroutine %d: leaf hash of block %d differs", g, b)
					return
				}
				if merkle.TreeHash(roots) != wantTree {
					errs <- fmt.Sprintf("goroutine %d: tree hash differs", g)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
}
