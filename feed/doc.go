// Package feed is a signed append-only log on disk: a Hypercore-style feed.
//
// A writer appends blocks; each Append call extends the Merkle tree of
// package merkle and signs the new head (tree hash, length, fork) once with
// the feed's Ed25519 key. A replica, opened with only the public key, takes
// blocks and heads from peers through proofs (Prove on one side, ApplyProof
// on the other) and stores nothing that does not verify. Replication over a
// network is package swarm's job; this package is synchronous and starts no
// goroutines of its own.
//
// # Files
//
// A feed is a directory:
//
//	header    two 512-byte slots, each: "HYPRFEED", version (3), flags,
//	          sequence number, key, fork, length, byte length, tree hash,
//	          signature, the last 8 fork points, CRC-32C of the slot
//	tree      node i at byte 48·i: u64le(size) ‖ hash ‖ u32le(CRC-32C of
//	          the 40 bytes before) ‖ 4 zero bytes; 48 zero bytes = absent
//	data      block bytes at their byte offset in the feed (holes on replicas)
//	index     entry of block i at byte 16·i: u64le(byte offset) ‖
//	          u32le(CRC-32C of the block) ‖ 4 zero bytes
//	bitfield  which blocks are held: 4096-byte pages of bits, each followed
//	          by its CRC-32C and 4 zero bytes
//	secret    the Ed25519 seed, mode 0600, only when Open generated the key
//
// Version 3 added the checksum of each tree record. Open refuses a feed of
// another version with ErrVersion: a version 2 tree cannot tell a node
// that a failed write tore from a whole one, and converting it in place
// could not survive a crash.
//
// # Invariants
//
// The header is the truth. Anything the files hold for blocks at or past the
// header's length is left over from a write that did not finish and is
// trimmed on open: the tree file is cut at node 2·length, the index and
// data files at the length, and the parents below node 2·length that reach
// past the length (one at most per level, joining kept blocks to removed
// ones) are zeroed, so that tree slots of nodes that reach past the length
// are zero. Open reads the header, the roots and the bitfield, and checks
// roots against tree hash and tree hash against signature, but reads no
// block (unless it rebuilds a bitfield page, see Damage): it takes the same
// time for any length.
//
// Every node a finished write stores is anchored: its sibling and its
// parent are stored too, and theirs, up to a root that the header's tree
// hash covers, since a proof always stores a node's sibling and parent with
// it. A block is held (its bit is set) only once its data, its index entry
// and its anchored leaf are stored. A write that did not finish, on a
// replica, can leave nodes under the length that are not anchored, or
// records torn half new and half old. A whole record is a node of the tree
// all the same (a proof verified it, and trimming keeps nodes of another
// fork out), but the feed builds only on anchored nodes, whose siblings
// give the byte offsets of the blocks under them and the proofs it will
// serve for them; a torn record fails its checksum and is an absent node.
// The proof that brings such a block again stores them again.
//
// A commit writes the data and the index, then the tree nodes, then the
// bitfield, and only then the header: slot 0, then slot 1. A commit
// interrupted before the header leaves the old head whole; one interrupted
// inside it leaves one whole slot, and after a finished commit both slots
// agree, so a slot damaged later is repaired from its twin. Truncation
// writes the new header first and then trims.
//
// # Durability
//
// By default every write goes to the operating system before Append returns,
// so an acknowledged append survives the process being killed (kill -9) but
// not the machine losing power. With Options.Sync, Append returns only after
// the data files and then the header are fsynced, so it survives power loss
// too. Writers running at once share fsyncs (group commit): one of them syncs
// everything written so far while the others wait for it. In sync mode a head
// becomes visible to readers and to Prove only once it is durable, so a peer
// never sees a head the writer could lose.
//
// # Damage
//
// Damage is reported as ErrCorrupt and never returned as good data: Open
// checks the header's checksums, the roots and the signature; Get checks
// each block against its checksum and its leaf hash; Prove checks each
// block against its checksum only (hashing it again would double the cost
// of serving, and the requester hashes it anyway) and the nodes it sends
// against the stored node above them; Verify checks everything the feed
// holds: every stored node against its children, every held block against
// its leaf and its path to a root. A tree record that fails its checksum
// is damage wherever the feed depends on the node (a root, the path of a
// held block, any node of a writer); elsewhere on a replica it is a
// leftover of a write that did not finish, an absent node. A bitfield page
// that fails its checksum is rebuilt on open from the blocks it covers: a
// page's record spans two 4 KiB pages of the file, which a failed write or
// a power loss may tear, and what it records the blocks show for
// themselves. A read the disk fails is returned as that error, not as
// ErrCorrupt.
//
// A failed write leaves the feed as it was: an append or a proof that fails
// removes what it wrote past the tip, a block that fails leaves its bit
// clear, and a truncation that fails before it cuts the files puts back the
// nodes it cleared and the old header. Where the undoing fails too, where
// a truncation fails while cutting the files (it is then done), or where an
// fsync fails, the state on disk is uncertain, and the feed fails
// (ErrFailed) until it is reopened, whose trim puts it right.
//
// # Forks
//
// Truncate cuts a writable feed back and moves it to the next fork, as
// Hypercore does. The header remembers the last 8 fork points, so Prove can
// answer a replica still on an older fork with an upgrade from the prefix
// both histories share; ApplyProof on that replica drops what lies past it.
package feed
