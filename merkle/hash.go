package merkle

import (
	"crypto/ed25519"
	"encoding/binary"
	"hash"
	"sync"

	"golang.org/x/crypto/blake2b"
)

// Type bytes that separate the three kinds of hashed input, so that a leaf can
// never be passed off as a parent or a tree hash.
const (
	leafType   = 0x00
	parentType = 0x01
	rootType   = 0x02
)

// SignableSize is the length of the byte string a feed's key signs.
const SignableSize = 32 + 32 + 8 + 8

// treeNamespace prefixes every signable: BLAKE2b-256(BLAKE2b-256("hypercore") ‖ 0x00),
// Hypercore's namespace for tree signatures.
var treeNamespace = func() [32]byte {
	ns := blake2b.Sum256([]byte("hypercore"))
	return blake2b.Sum256(append(ns[:], 0))
}()

var hashers = sync.Pool{New: func() any {
	h, _ := blake2b.New256(nil) // cannot fail without a key
	return h
}}

func getHasher() hash.Hash {
	h := hashers.Get().(hash.Hash)
	h.Reset()
	return h
}

func sum(h hash.Hash) (out [32]byte) {
	h.Sum(out[:0])
	hashers.Put(h)
	return out
}

// smallLeaf is the largest block LeafHash hashes from a stack buffer; larger
// ones go through a pooled hasher, whose allocation no longer matters.
const smallLeaf = 4096

// LeafHash returns the hash of a block: BLAKE2b-256(0x00 ‖ u64le(len(data)) ‖ data).
func LeafHash(data []byte) [32]byte {
	if len(data) <= smallLeaf {
		var buf [9 + smallLeaf]byte
		buf[0] = leafType
		binary.LittleEndian.PutUint64(buf[1:], uint64(len(data)))
		n := copy(buf[9:], data)
		return blake2b.Sum256(buf[:9+n])
	}
	var hdr [9]byte
	hdr[0] = leafType
	binary.LittleEndian.PutUint64(hdr[1:], uint64(len(data)))
	h := getHasher()
	h.Write(hdr[:])
	h.Write(data)
	return sum(h)
}

// Leaf returns the tree node of block b holding data.
func Leaf(b uint64, data []byte) Node {
	return Node{Index: LeafIndex(b), Size: uint64(len(data)), Hash: LeafHash(data)}
}

// ParentHash returns the hash of the parent of two sibling nodes:
// BLAKE2b-256(0x01 ‖ u64le(left.Size+right.Size) ‖ left.Hash ‖ right.Hash).
func ParentHash(left, right Node) [32]byte {
	var buf [1 + 8 + 32 + 32]byte
	buf[0] = parentType
	binary.LittleEndian.PutUint64(buf[1:], left.Size+right.Size)
	copy(buf[9:], left.Hash[:])
	copy(buf[41:], right.Hash[:])
	return blake2b.Sum256(buf[:])
}

// ParentOf returns the parent node of two siblings, left first. The caller
// must pass real siblings; see Sibling.
func ParentOf(left, right Node) Node {
	return Node{Index: Parent(left.Index), Size: left.Size + right.Size, Hash: ParentHash(left, right)}
}

// TreeHash returns the hash that a signature covers: BLAKE2b-256 of 0x02
// followed by hash ‖ u64le(index) ‖ u64le(size) for each root, left to right.
func TreeHash(roots []Node) [32]byte {
	// A valid tree has at most one root per bit of its length: such a list
	// is hashed from a stack buffer, a longer one through a pooled hasher.
	if len(roots) <= 64 {
		return treeHashSmall(roots)
	}
	h := getHasher()
	h.Write([]byte{rootType})
	var buf [48]byte
	for _, r := range roots {
		h.Write(appendRoot(buf[:0], r))
	}
	return sum(h)
}

func treeHashSmall(roots []Node) [32]byte {
	var buf [1 + 64*48]byte
	b := append(buf[:0], rootType)
	for _, r := range roots {
		b = appendRoot(b, r)
	}
	return blake2b.Sum256(b)
}

func appendRoot(b []byte, r Node) []byte {
	b = append(b, r.Hash[:]...)
	b = binary.LittleEndian.AppendUint64(b, r.Index)
	return binary.LittleEndian.AppendUint64(b, r.Size)
}

// Signable returns the bytes a feed's key signs for a tree of the given length
// and fork: the tree namespace ‖ treeHash ‖ u64le(length) ‖ u64le(fork). This is
// Hypercore's compat-mode layout, where the feed key is the Ed25519 public key.
func Signable(treeHash [32]byte, length, fork uint64) [SignableSize]byte {
	var b [SignableSize]byte
	copy(b[:32], treeNamespace[:])
	copy(b[32:64], treeHash[:])
	binary.LittleEndian.PutUint64(b[64:], length)
	binary.LittleEndian.PutUint64(b[72:], fork)
	return b
}

// Sign signs the head of a tree with a feed's secret key.
func Sign(sk ed25519.PrivateKey, treeHash [32]byte, length, fork uint64) []byte {
	s := Signable(treeHash, length, fork)
	return ed25519.Sign(sk, s[:])
}

// VerifySignature reports whether sig is the feed key's signature of the head
// (treeHash, length, fork).
func VerifySignature(key [32]byte, treeHash [32]byte, length, fork uint64, sig []byte) bool {
	if len(sig) != ed25519.SignatureSize {
		return false
	}
	s := Signable(treeHash, length, fork)
	return ed25519.Verify(key[:], s[:], sig)
}

// DiscoveryKey returns the public name of a feed: BLAKE2b-256 keyed with the
// feed key over the bytes "hypercore". Peers look feeds up by it without
// learning the key, which is what lets them read the feed.
func DiscoveryKey(key [32]byte) [32]byte {
	h, _ := blake2b.New256(key[:]) // a 32-byte key is always valid
	h.Write([]byte("hypercore"))
	var out [32]byte
	h.Sum(out[:0])
	return out
}
