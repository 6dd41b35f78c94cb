package merkle_test

import (
	"math/rand/v2"
	"testing"

	"github.com/hyperfeed/hyperfeed/merkle"
)

var (
	sinkHash  [32]byte
	sinkNodes []merkle.Node
)

func BenchmarkLeafHash1KiB(b *testing.B) {
	data := make([]byte, 1024)
	for i := range data {
		data[i] = byte(i)
	}
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		sinkHash = merkle.LeafHash(data)
	}
}

func BenchmarkParentHash(b *testing.B) {
	l := merkle.Leaf(0, []byte("left"))
	r := merkle.Leaf(1, []byte("right"))
	for b.Loop() {
		sinkHash = merkle.ParentHash(l, r)
	}
}

// BenchmarkAppendLeaf is the tree's cost per appended block, without hashing
// the block itself: on average one parent per block.
func BenchmarkAppendLeaf(b *testing.B) {
	leaf := merkle.Leaf(0, make([]byte, 1024))
	var roots, created []merkle.Node
	var n uint64
	for b.Loop() {
		leaf.Index = merkle.LeafIndex(n)
		roots, created = merkle.AppendLeaf(roots, leaf, created[:0])
		n++
	}
	sinkNodes = created
}

// BenchmarkBlockProofVerify proves a 1 KiB block of a tree of 2^20 blocks:
// 20 siblings up to the single root. Only the shape matters to the cost, so
// the siblings are random rather than taken from a built tree.
func BenchmarkBlockProofVerify(b *testing.B) {
	const length = 1 << 20
	rng := rand.New(rand.NewPCG(13, 14))
	block := uint64(0x5a5a5)
	data := make([]byte, 1024)
	cur := merkle.Leaf(block, data)
	p := &merkle.BlockProof{Index: block, Nodes: make([]merkle.Node, 0, 20)}
	for _, i := range merkle.BlockPath(block, pathLen(block, length)) {
		sib := merkle.Node{Index: i, Size: 1024 << merkle.Depth(i)}
		for k := range sib.Hash {
			sib.Hash[k] = byte(rng.Uint32())
		}
		if merkle.IsLeft(cur.Index) {
			cur = merkle.ParentOf(cur, sib)
		} else {
			cur = merkle.ParentOf(sib, cur)
		}
		p.Nodes = append(p.Nodes, sib)
	}
	if len(p.Nodes) != 20 || cur.Index != merkle.Roots(length)[0] {
		b.Fatalf("path of %d nodes to %d", len(p.Nodes), cur.Index)
	}
	trusted := trustedRoots([]merkle.Node{cur})
	for b.Loop() {
		nodes, err := p.Verify(data, trusted)
		if err != nil {
			b.Fatal(err)
		}
		sinkNodes = nodes
	}
}

// BenchmarkUpgradeVerify moves a verifier across most of a tree of 66,536
// blocks; the signature check dominates.
func BenchmarkUpgradeVerify(b *testing.B) {
	tr := bigTree(b)
	sk, key := testKey(1)
	p := tr.upgradeProof(b, sk, 40001, tr.length(), testFork)
	start := tr.rootsAt(b, p.Start)
	for b.Loop() {
		roots, _, err := p.Verify(key, testFork, start)
		if err != nil {
			b.Fatal(err)
		}
		sinkNodes = roots
	}
}
