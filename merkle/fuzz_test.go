package merkle_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"sync"
	"testing"

	"github.com/hyperfeed/hyperfeed/merkle"
)

// fuzzLength is the length of the real tree the proof fuzzers check against:
// small, so that mutated indices often land inside it, and with several roots
// (45 = 32+8+4+1), so that upgrades take every path through Verify.
const fuzzLength = 45

var fuzzTree = sync.OnceValue(func() *testTree { return buildTree(panicTB{}, 42, fuzzLength) })

// A node is encoded as u64le(index) ‖ u64le(size) ‖ hash; trailing bytes that
// do not make a whole node are ignored.
const encodedNodeSize = 8 + 8 + 32

func encodeNodes(nodes []merkle.Node) []byte {
	out := make([]byte, 0, len(nodes)*encodedNodeSize)
	for _, n := range nodes {
		out = binary.LittleEndian.AppendUint64(out, n.Index)
		out = binary.LittleEndian.AppendUint64(out, n.Size)
		out = append(out, n.Hash[:]...)
	}
	return out
}

func decodeNodes(b []byte) []merkle.Node {
	nodes := make([]merkle.Node, 0, len(b)/encodedNodeSize)
	for ; len(b) >= encodedNodeSize; b = b[encodedNodeSize:] {
		n := merkle.Node{Index: binary.LittleEndian.Uint64(b), Size: binary.LittleEndian.Uint64(b[8:])}
		copy(n.Hash[:], b[16:encodedNodeSize])
		nodes = append(nodes, n)
	}
	return nodes
}

// FuzzFlatTree checks the index arithmetic on arbitrary indices and lengths:
// i is taken as a node index and length as a tree length, each folded into the
// range the package is defined on.
func FuzzFlatTree(f *testing.F) {
	for _, i := range []uint64{0, 1, 2, 3, 5, 7, 1<<62 - 1, 1 << 62, 1<<63 - 2, 1<<63 - 1, math.MaxUint64, 0x5555555555555555} {
		f.Add(i, i/2)
	}
	f.Add(uint64(0), uint64(merkle.MaxLength))
	f.Add(uint64(12345), uint64(merkle.MaxLength-1))
	f.Fuzz(func(t *testing.T, i, length uint64) {
		i &= 2*merkle.MaxLength - 1
		if i != 2*merkle.MaxLength-1 { // see TestTopIndex
			checkIndex(t, i)
		}
		length %= merkle.MaxLength + 1
		checkRoots(t, length)
		start := i % (length + 1)
		checkUpgradeNodes(t, start, length)
		if start < length {
			// A block's path reaches exactly one root, the one over it.
			top := merkle.LeafIndex(start)
			for _, s := range merkle.BlockPath(start, pathLen(start, length)) {
				if s != merkle.Sibling(top) {
					t.Fatalf("BlockPath(%d) has %d where the sibling of %d belongs", start, s, top)
				}
				top = merkle.Parent(top)
			}
			if first, end := merkle.Blocks(top); start < first || start >= end || !merkle.Covered(top, length) {
				t.Fatalf("block %d of length %d climbs to %d over [%d, %d)", start, length, top, first, end)
			}
		}
	})
}

// FuzzBlockProofVerify feeds arbitrary block proofs to a verifier that trusts
// the roots of a real tree. Whatever it accepts must be the real block and
// real nodes: that is the whole of what a block proof promises.
func FuzzBlockProofVerify(f *testing.F) {
	tr := fuzzTree()
	roots := tr.rootsAt(f, fuzzLength)
	for b := range uint64(fuzzLength) {
		p := tr.blockProof(f, b, fuzzLength)
		f.Add(b, encodeNodes(p.Nodes), tr.blocks[b])
	}
	f.Add(uint64(0), []byte{}, []byte{})
	f.Add(uint64(fuzzLength), encodeNodes(tr.nodesAt(f, []uint64{88})), []byte{})
	f.Add(uint64(merkle.MaxLength-1), make([]byte, 62*encodedNodeSize), []byte("x"))
	f.Add(uint64(3), make([]byte, 63*encodedNodeSize), []byte("x"))
	trusted := trustedRoots(roots)
	f.Fuzz(func(t *testing.T, index uint64, nodes, data []byte) {
		p := &merkle.BlockProof{Index: index, Nodes: decodeNodes(nodes)}
		got, err := p.Verify(data, trusted)
		if err != nil {
			if !errors.Is(err, merkle.ErrInvalidProof) {
				t.Fatalf("error %q does not wrap ErrInvalidProof", err)
			}
			return
		}
		if index >= fuzzLength || !bytes.Equal(data, tr.blocks[index]) {
			t.Fatalf("accepted %x as block %d", data, index)
		}
		for _, n := range got {
			if real, ok := tr.nodes[n.Index]; !ok || real != n {
				t.Fatalf("block %d: accepted %v, the tree has %v", index, n, real)
			}
		}
	})
}

// FuzzUpgradeProofVerify feeds arbitrary upgrades to a verifier holding the
// real roots of Start (or made-up ones past the tree's end) and the feed key.
// Whatever it accepts must be a head the key signed, with real roots.
func FuzzUpgradeProofVerify(f *testing.F) {
	tr := fuzzTree()
	sk, key := testKey(7)
	for _, pair := range [][2]uint64{
		{0, 0}, {0, 1}, {0, fuzzLength}, {1, 2}, {1, fuzzLength}, {3, 8}, {5, 7},
		{7, 7}, {8, 12}, {13, 40}, {31, 33}, {32, fuzzLength}, {40, 44}, {44, fuzzLength},
	} {
		p := tr.upgradeProof(f, sk, pair[0], pair[1], testFork)
		f.Add(p.Start, p.Length, uint64(testFork), encodeNodes(p.Nodes), p.Signature)
	}
	f.Add(uint64(0), uint64(merkle.MaxLength), uint64(0), make([]byte, encodedNodeSize), make([]byte, 64))
	f.Add(uint64(3), uint64(1), uint64(testFork), []byte{}, []byte{})
	startRoots := make([][]merkle.Node, fuzzLength+1)
	for s := range startRoots {
		startRoots[s] = tr.rootsAt(f, uint64(s))
	}
	f.Fuzz(func(t *testing.T, start, length, fork uint64, nodes, sig []byte) {
		var old []merkle.Node
		if start <= fuzzLength {
			old = startRoots[start]
		} else if start <= merkle.MaxLength {
			for _, i := range merkle.Roots(start) {
				old = append(old, merkle.Node{Index: i, Size: 1})
			}
		}
		p := &merkle.UpgradeProof{Start: start, Length: length, Nodes: decodeNodes(nodes), Signature: sig}
		roots, got, err := p.Verify(key, fork, old)
		if err != nil {
			if !errors.Is(err, merkle.ErrInvalidProof) {
				t.Fatalf("error %q does not wrap ErrInvalidProof", err)
			}
			return
		}
		// Only the seeds' heads were signed.
		if length > fuzzLength || fork != testFork {
			t.Fatalf("accepted an upgrade to length %d, fork %d", length, fork)
		}
		want := startRoots[length]
		if len(roots) != len(want) {
			t.Fatalf("upgrade %d to %d: roots %v, want %v", start, length, roots, want)
		}
		for k := range want {
			if roots[k] != want[k] {
				t.Fatalf("upgrade %d to %d: roots %v, want %v", start, length, roots, want)
			}
		}
		for _, n := range got {
			if real, ok := tr.nodes[n.Index]; !ok || real != n {
				t.Fatalf("upgrade %d to %d: accepted %v, the tree has %v", start, length, n, real)
			}
		}
	})
}
