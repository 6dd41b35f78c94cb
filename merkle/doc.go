// Package merkle is the Merkle tree of a feed: flat-tree index math, the
// hashes, the bytes a feed key signs, and the proofs that let a replica
// verify any block it receives. It does no I/O and starts no goroutines.
//
// Everything here is byte-compatible with Hypercore (compat mode), and the
// tests replay test vectors produced by the real Hypercore.
//
// # Flat tree
//
// The nodes of a tree over blocks 0, 1, 2, … are numbered in order of an
// in-order walk: block b is node 2b (a leaf, depth 0), and a parent lies
// between its children. The depth of node i is the number of trailing one
// bits of i. A tree of length n has one full root per set bit of n, largest
// first (Roots); together they cover blocks [0, n) exactly.
//
//	   3
//	 1   5
//	0 2 4 6  8   ← Roots(5) = [3, 8]
//
// # Hashes
//
// All hashes are BLAKE2b-256 with a type byte in front, so a leaf can never
// pass for a parent:
//
//	leaf   = H(0x00 ‖ u64le(len(data)) ‖ data)
//	parent = H(0x01 ‖ u64le(left.Size + right.Size) ‖ left.Hash ‖ right.Hash)
//	tree   = H(0x02 ‖ for each root: root.Hash ‖ u64le(root.Index) ‖ u64le(root.Size))
//
// A feed's head is signed with Ed25519 over the 80 bytes
//
//	TREE ‖ tree ‖ u64le(length) ‖ u64le(fork)
//
// where TREE = H(H("hypercore") ‖ 0x00) is Hypercore's namespace for tree
// signatures. The discovery key of a feed is BLAKE2b-256 keyed with the feed
// key over the bytes "hypercore".
//
// # Proofs
//
// A BlockProof carries the siblings on the way up from a block's leaf until
// a node the verifier already trusts: one of its roots, or a node it stored
// from an earlier proof. An UpgradeProof moves a verifier from the signed
// head of length Start to one of length Length: the roots of Start plus the
// proof's nodes rebuild the new roots, whose tree hash the signature must
// sign. Since the new roots are rebuilt from the old ones, an upgrade also
// proves that the new tree extends the old one (or, across a fork, the prefix
// they share). A Proof may carry both, and then the block is verified against
// the upgraded roots.
//
// Verification rejects any proof whose nodes are not exactly the ones the
// flat tree calls for, in order; sizes and indices are bound by the hashes
// and the tree hash, so no altered byte, index, size or length verifies.
//
// # Invariants
//
// Lengths are at most MaxLength (2^62), so every index and byte count fits a
// uint64. The zero Node means "absent" in storage; no real node is zero.
package merkle
