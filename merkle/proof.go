package merkle

import (
	"errors"
	"fmt"
	"math"
	"slices"
)

// ErrInvalidProof is returned, wrapped with the reason, for every proof that
// does not verify.
var ErrInvalidProof = errors.New("merkle: invalid proof")

// maxPath is the most siblings a block proof can need: one per level of a tree
// of MaxLength blocks.
const maxPath = 62

// Proof is what a peer sends to prove a block, a new signed head, or both.
type Proof struct {
	Fork    uint64        // the fork of the tree the proof is taken from
	Block   *BlockProof   // nil when only an upgrade is proved
	Upgrade *UpgradeProof // nil when the verifier's head already covers the block
}

// BlockProof links a block to a node the verifier already trusts: a root of
// its signed head, a root of an upgrade in the same Proof, or a node stored
// from an earlier proof.
type BlockProof struct {
	Index uint64 // block number
	Nodes []Node // the siblings on the way up from the block's leaf, lowest first
}

// UpgradeProof moves a verifier from the signed head of length Start to a newer
// head of length Length: Nodes are what it needs, besides the roots of Start,
// to rebuild the new roots, whose tree hash Signature signs.
type UpgradeProof struct {
	Start     uint64
	Length    uint64
	Nodes     []Node // in the order UpgradeNodes lists them
	Signature []byte
}

// BlockPath returns the indices of the first n siblings on the way up from
// block b's leaf: the nodes a BlockProof of n nodes carries.
func BlockPath(b uint64, n int) []uint64 {
	n = max(0, min(n, 64)) // no tree is deeper
	path := make([]uint64, 0, n)
	for i := LeafIndex(b); len(path) < n; i = Parent(i) {
		path = append(path, Sibling(i))
	}
	return path
}

// Verify checks that data is block p.Index by climbing p.Nodes from its leaf
// to a node trusted reports, and comparing. trusted must report only nodes of
// the verifier's signed tree. On success Verify returns every node the proof
// established (the leaf, the siblings and the parents computed on the way),
// which the verifier may then trust and store.
func (p *BlockProof) Verify(data []byte, trusted func(index uint64) (Node, bool)) ([]Node, error) {
	if p.Index >= MaxLength {
		return nil, fmt.Errorf("%w: block %d out of range", ErrInvalidProof, p.Index)
	}
	return p.VerifyLeaf(Leaf(p.Index, data), trusted)
}

// VerifyLeaf is Verify given the leaf of the data (see Leaf) rather than the
// data, for a verifier that hashes blocks apart from verifying them.
func (p *BlockProof) VerifyLeaf(leaf Node, trusted func(index uint64) (Node, bool)) ([]Node, error) {
	if p.Index >= MaxLength || leaf.Index != LeafIndex(p.Index) {
		return nil, fmt.Errorf("%w: leaf %d for block %d", ErrInvalidProof, leaf.Index, p.Index)
	}
	if len(p.Nodes) > maxPath {
		return nil, fmt.Errorf("%w: %d nodes in a block path", ErrInvalidProof, len(p.Nodes))
	}
	cur := leaf
	nodes := make([]Node, 0, 1+2*len(p.Nodes))
	nodes = append(nodes, cur)
	for _, sib := range p.Nodes {
		if want := Sibling(cur.Index); sib.Index != want {
			return nil, fmt.Errorf("%w: node %d where sibling %d belongs", ErrInvalidProof, sib.Index, want)
		}
		if sib.Size > math.MaxUint64-cur.Size {
			return nil, fmt.Errorf("%w: size overflow at node %d", ErrInvalidProof, sib.Index)
		}
		if IsLeft(cur.Index) {
			cur = ParentOf(cur, sib)
		} else {
			cur = ParentOf(sib, cur)
		}
		nodes = append(nodes, sib, cur)
	}
	t, ok := trusted(cur.Index)
	if !ok {
		return nil, fmt.Errorf("%w: block %d: path ends at node %d, which is not trusted", ErrInvalidProof, p.Index, cur.Index)
	}
	if t != cur {
		return nil, fmt.Errorf("%w: block %d does not hash to trusted node %d", ErrInvalidProof, p.Index, cur.Index)
	}
	return nodes, nil
}

// UpgradeNodes returns the indices of the nodes an upgrade proof from length
// start to length carries, in the order the verifier consumes them: for each
// new root, either the root itself (when it covers no old root) or the right
// siblings on the way up from the last old root it covers.
func UpgradeNodes(start, length uint64) []uint64 {
	var out []uint64
	old := Roots(start)
	for _, r := range Roots(length) {
		if slices.Contains(old, r) {
			continue
		}
		last, ok := lastRootUnder(old, r)
		if !ok {
			out = append(out, r)
			continue
		}
		for cur := last; cur != r; cur = Parent(cur) {
			if s := Sibling(cur); s > cur {
				out = append(out, s)
			}
		}
	}
	return out
}

// lastRootUnder returns the rightmost of roots that lies under node r.
func lastRootUnder(roots []uint64, r uint64) (uint64, bool) {
	lo, hi := Spans(r)
	for i := len(roots) - 1; i >= 0; i-- {
		if l, h := Spans(roots[i]); l >= lo && h <= hi {
			return roots[i], true
		}
	}
	return 0, false
}

// Verify checks an upgrade against startRoots, the trusted roots of length
// p.Start, and the feed key: it rebuilds the roots of p.Length and checks that
// Signature signs their tree hash with the given fork. It returns the new
// roots and every other node it established.
func (p *UpgradeProof) Verify(key [32]byte, fork uint64, startRoots []Node) (roots, nodes []Node, err error) {
	roots, nodes, err = p.Rebuild(startRoots)
	if err != nil {
		return nil, nil, err
	}
	if !VerifySignature(key, TreeHash(roots), p.Length, fork, p.Signature) {
		return nil, nil, fmt.Errorf("%w: signature does not match the head of length %d, fork %d", ErrInvalidProof, p.Length, fork)
	}
	return roots, nodes, nil
}

// Rebuild is Verify without the signature: it returns the roots of p.Length
// that the proof's nodes and startRoots make, and the other nodes on the way.
// A prover uses it to check a proof against its own roots before sending it.
func (p *UpgradeProof) Rebuild(startRoots []Node) (roots, nodes []Node, err error) {
	if p.Start > p.Length || p.Length > MaxLength {
		return nil, nil, fmt.Errorf("%w: upgrade from %d to %d", ErrInvalidProof, p.Start, p.Length)
	}
	oldIdx := Roots(p.Start)
	if len(startRoots) != len(oldIdx) {
		return nil, nil, fmt.Errorf("%w: %d start roots given for length %d", ErrInvalidProof, len(startRoots), p.Start)
	}
	for i, r := range startRoots {
		if r.Index != oldIdx[i] {
			return nil, nil, fmt.Errorf("%w: start root %d is node %d, want %d", ErrInvalidProof, i, r.Index, oldIdx[i])
		}
	}
	// Every proof node is either a new root or a right sibling on a root's
	// path, so a well-formed proof has fewer than maxPath per new root.
	if len(p.Nodes) > maxPath*len(Roots(p.Length)) {
		return nil, nil, fmt.Errorf("%w: %d upgrade nodes", ErrInvalidProof, len(p.Nodes))
	}
	old := func(i uint64) (Node, bool) {
		for _, r := range startRoots {
			if r.Index == i {
				return r, true
			}
		}
		return Node{}, false
	}
	next := 0
	take := func(want uint64) (Node, error) {
		if next >= len(p.Nodes) {
			return Node{}, fmt.Errorf("%w: upgrade ends before node %d", ErrInvalidProof, want)
		}
		n := p.Nodes[next]
		next++
		if n.Index != want {
			return Node{}, fmt.Errorf("%w: upgrade node %d where %d belongs", ErrInvalidProof, n.Index, want)
		}
		return n, nil
	}
	for _, r := range Roots(p.Length) {
		if n, ok := old(r); ok {
			roots = append(roots, n)
			continue
		}
		last, ok := lastRootUnder(oldIdx, r)
		if !ok {
			n, err := take(r)
			if err != nil {
				return nil, nil, err
			}
			roots = append(roots, n)
			continue
		}
		cur, _ := old(last)
		for cur.Index != r {
			var sib Node
			if s := Sibling(cur.Index); s > cur.Index {
				if sib, err = take(s); err != nil {
					return nil, nil, err
				}
				nodes = append(nodes, sib)
				if sib.Size > math.MaxUint64-cur.Size {
					return nil, nil, fmt.Errorf("%w: size overflow at node %d", ErrInvalidProof, s)
				}
				cur = ParentOf(cur, sib)
			} else {
				// A left sibling lies wholly before Start, so it must be an old root.
				if sib, ok = old(s); !ok {
					return nil, nil, fmt.Errorf("%w: node %d is not a root of length %d", ErrInvalidProof, s, p.Start)
				}
				cur = ParentOf(sib, cur)
			}
			if cur.Index != r {
				nodes = append(nodes, cur)
			}
		}
		roots = append(roots, cur)
	}
	if next != len(p.Nodes) {
		return nil, nil, fmt.Errorf("%w: %d unused upgrade nodes", ErrInvalidProof, len(p.Nodes)-next)
	}
	var total uint64
	for _, r := range roots {
		if r.Size > math.MaxUint64-total {
			return nil, nil, fmt.Errorf("%w: byte length overflows", ErrInvalidProof)
		}
		total += r.Size
	}
	return roots, nodes, nil
}

// RootsFrom returns the roots of a tree of length blocks, taking each from get.
// It fails if get lacks one.
func RootsFrom(length uint64, get func(index uint64) (Node, bool)) ([]Node, error) {
	idx := Roots(length)
	roots := make([]Node, len(idx))
	for i, r := range idx {
		n, ok := get(r)
		if !ok {
			return nil, fmt.Errorf("merkle: root %d of length %d missing", r, length)
		}
		roots[i] = n
	}
	return roots, nil
}
