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
//	header    two 512-byte slots, each: "HYPRFEED", version, flags, sequence
//	          number, key, fork, length, byte length, tree hash, signature,
//	          the last 8 fork points, CRC-32C of the slot
//	tree      node i at byte 40·i: u64le(size) ‖ hash; 40 zero bytes = absent
//	data      block bytes at their byte offset in the feed (holes on replicas)
//	index     entry of block i at byte 16·i: u64le(byte offset) ‖
//	          u32le(CRC-32C of the block) ‖ 4 zero bytes
//	bitfield  which blocks are held: 4096-byte pages of bits, each followed
//	          by its CRC-32C and 4 zero bytes
//	secret    the Ed25519 seed, mode 0600, only when Open generated the key
//
// # Invariants
//
// The header is the truth. Anything the files hold for blocks at or past the
// header's length is left over from a write that did not finish and is
// trimmed on open; tree slots of nodes that reach past the length are zero.
// Every stored node is vouched for: the header's tree hash covers the roots,
// and a proof always stores a node's parent with it. Open reads the header,
// the roots and the bitfield, and checks roots against tree hash and tree
// hash against signature, but reads no block: it takes the same time for
// any length.
//
// A commit writes the data and the index, then the tree nodes (those past
// the old length first), then the bitfield, and only then the header: slot
// 0, then slot 1. A commit interrupted before the header leaves the old head whole;
// one interrupted inside it leaves one whole slot, and after a finished
// commit both slots agree, so a slot damaged later is repaired from its twin.
// Truncation writes the new header first and then trims.
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
// checks the header's checksums, the roots, the signature and the bitfield's
// checksums; Get checks each block against its checksum and its leaf hash;
// Prove checks each block against its checksum only (hashing it again would
// double the cost of serving, and the requester hashes it anyway) and the
// nodes it sends against the stored node above them; Verify checks
// everything. A failed write leaves the feed as it was; a failed fsync fails
// the feed (ErrFailed) until it is reopened, since the state on disk is then
// uncertain.
//
// # Forks
//
// Truncate cuts a writable feed back and moves it to the next fork, as
// Hypercore does. The header remembers the last 8 fork points, so Prove can
// answer a replica still on an older fork with an upgrade from the prefix
// both histories share; ApplyProof on that replica drops what lies past it.
package feed
