// Package swarm replicates feeds between peers: Noise-encrypted connections,
// discovery of peers on the local network (mDNS) or from a list, and the
// replication protocol. It is the only package of hyperfeed that owns
// goroutines and sockets.
//
// A Swarm listens, dials the peers that discovery finds under the topics it
// joins (a feed's discovery key, or any 32 bytes), keeps one Session per
// peer, and replicates over every session the feeds given to Replicate
// (which joins the feed's topic) or Attach (which does not), and any feed of
// its feed.Store that a peer asks for. A Session also runs on any net.Conn a
// caller provides (NewSession), and a Swarm on any listener and dialler
// (Config.Listener, Config.Dial), which is how the protocol is tested
// without sockets.
//
// A feed's Replicator downloads (Download), waits until a peer has told its
// head and this side has caught up (Update, as a clone does before it calls
// itself done), and waits until every peer holds a prefix (Delivered, as a
// writer does before it leaves).
//
// # Connections
//
// TCP, then a Noise XX handshake (25519, ChaChaPoly, BLAKE2b) with the
// prologue "hyperfeed/1" (see internal/noiseconn). With a network secret the
// pattern is XXpsk0: a peer without the secret cannot complete the
// handshake. The encrypted stream is framed as u24le(length) ‖ ciphertext,
// at most 65,519 bytes of plaintext per frame; a longer frame is refused
// before decryption, and any decryption failure or nonce exhaustion ends the
// connection.
//
// A peer's identity is its static Noise key (PeerKey), kept by the caller
// (LoadOrCreateKeyPair). When two peers dial each other at once, both keep
// the connection dialled by the peer with the smaller key. A Swarm redials a
// lost peer with jittered exponential backoff (Config.ReconnectMin to
// ReconnectMax), never while a session with that peer is up, whichever side
// dialled it; it gives up on an address from Dial or discovery after five
// failed dials in a row, never on one from Connect or a Static, until
// Forget. At most Config.MaxHandshakes inbound handshakes run at once; the
// rest wait in the listen backlog. A session that hears nothing for three keep-alive intervals (pinging in
// between) ends with ErrTimeout, as does one whose writes the peer does not
// take: every 64 KiB written must go through within three keep-alive
// intervals. Config.Firewall can refuse a peer by key. Swarm.Watch reports
// peers as their sessions start (after the choice between two connections)
// and end, every event queued for a slow reader, none dropped.
//
// # Messages
//
// On the stream, each message is u32le(n) ‖ type ‖ msgpack body (n-1
// bytes), n at most wire.MaxMessage (16 MiB + 64 KiB); bodies are msgpack
// arrays of the fields below, in order. Every message but Ping and Pong
// names a channel by the number its sender gave it in Open.
//
//	1  Open     channel, discovery key (32), capability (32)
//	2  Close    channel
//	3  Sync     channel, fork, length            the sender's signed head
//	4  Range    channel, drop, start, length     the sender holds (or dropped) these blocks
//	5  Bitfield channel, page, bits (≤ 4096)     one page of the sender's bitfield
//	6  Request  channel, id, fork, length, block {index, nodes} | nil, upgrade
//	7  Data     channel, id, fork, block {index, value, nodes} | nil,
//	            upgrade {start, length, nodes, signature (64)} | nil
//	8  NoData   channel, id                      the request cannot be served
//	9  Cancel   channel, id
//	10 Ping     nonce
//	11 Pong     nonce
//	12 Extension channel, name (1 to 64 bytes), payload (≤ 64 KiB)
//
// In a Request, nodes counts the proof nodes the requester lacks; in Data,
// nodes is one byte string of 48-byte nodes, u64le(index) ‖ u64le(size) ‖
// hash (32), since a download carries a dozen per block and one string
// decodes with one allocation where an array of arrays takes two per node.
// Hashes and signatures cover merkle's canonical byte layouts, never
// msgpack. A message that breaks a limit
// above ends the session (ErrProtocol); an Extension whose name this side
// has no handler for is ignored, with a debug log, so that peers can add
// extensions without breaking older ones.
//
// # Channels and capabilities
//
// A feed is replicated on a channel that both peers open with Open. The
// capability proves that the sender knows the feed key, without revealing it
// and without being replayable on another connection:
//
//	capability = BLAKE2b-256(key = handshake hash, "hyperfeed/capability/v1\x00" ‖ role ‖ feed key)
//
// where role is 1 from the peer that dialled and 2 from the other. A wrong
// capability ends the session (ErrProtocol): a peer that knows only the
// discovery key gets nothing. A peer may keep at most 1,024 channels open
// for feeds this side does not replicate.
//
// An Open for a feed this side does not replicate yet is parked until it
// does. What the peer says on the parked channel is kept for then: its
// latest Sync, and its Range and Bitfield messages (a Range continuing the
// one before merged into it) up to 16 KiB per channel and 1 MiB for all
// parked channels, past which they are dropped; a Sync of another fork
// voids those kept. Requests, answers and Extensions on a channel not open
// are dropped.
//
// # Replication
//
// On opening, each side sends Sync and what it holds (one Range for a
// complete feed, else its runs of blocks), and again whenever its head
// changes or it gains a block. What a peer says it holds is of the fork of
// its last Sync: a Sync of another fork voids it, and it is kept while this
// side is still on another fork, for when it moves. A side whose peer has a
// newer head (a longer length, or a later fork) asks for an upgrade; a side
// that wants blocks (a Get waiting on a replica, or a Download) asks for
// them, up to the window (512 requests in flight by default) on each
// channel, and never asks two peers for the same block. Each Request says the
// requester's fork and length and how many proof nodes it lacks; the answer
// is Data with a proof from feed.Prove, or NoData. Everything received is
// verified by feed.ApplyProof before it is stored; a proof that does not
// verify, or a block sent in answer to an upgrade request, ends the session
// with ErrProtocol, and nothing of it is kept. A peer on an older
// fork gets an upgrade from the prefix both histories share, and drops the
// rest. A replica that lacks the roots of that prefix (it holds few of its
// blocks) asks again from the longest length within it that is made of the
// roots of its own head, which it always holds, and drops the blocks past
// that length, shared or not.
//
// A peer that cannot prove the head it announced (it answers NoData, or a
// proof that does not bring this side to a newer head, while this side's
// head has not moved since it asked) is not asked for an upgrade again
// until it announces another head; three such heads in a row, with no
// upgrade from it between them and this side never catching up with what
// it claimed, end the session with ErrUnproven. One is not enough: a sparse
// replica cannot prove its head from every length. A writable feed never
// asks for an upgrade: it takes no proofs, and a peer that claims a newer
// head of it
// either lies, or holds a head signed with a copy of the key, or one this
// writer signed and lost (without feed.Options.Sync, a power loss takes the
// latest appends). The writer cannot tell which, so it logs a warning,
// once per channel, and keeps the peer.
//
// A peer that answers NoData for a block it announced may have failed to
// read it: it is asked again. Meanwhile the block is asked of other peers,
// and not of this one for 500 ms; the channel's window halves and it asks
// the peer for no block for a pause, 20 ms after the peer last served one
// and twice as long after each pause that ends in NoData again, up to
// 500 ms. A peer that cannot read costs a request or two per 500 ms, and is
// back in use within as long once it reads again.
//
// A peer answers requests in the order they came, on all channels alike. A
// request times out when it has waited RequestTimeout (by default four
// keep-alive intervals, 20 s) while the peer answered nothing for as long,
// or answered a request made after it: a slow peer working through a full window is
// not timed out, one that skips requests or sits on them is. A request that
// times out is cancelled (Cancel), its block is asked of other peers and
// never again of this one on this session (nor an upgrade to the same
// head), the channel's window halves, and each answer grows it back by
// one. Three rounds of timeouts with no answer between them, or more than
// 4,096 requests timed out on a session, end it with ErrTimeout. A late
// answer to a cancelled request is dropped.
//
// Messages to the peer wait in a queue until written. Once it holds 4 MiB
// (overshot by one run of answers at most, sized to the room left), the
// peer's Requests and Pings wait unanswered, in order, until it drains;
// past 16,384 of them waiting, the session stops reading from the peer. So a peer that does not read its answers fills its own
// buffers, not this side's memory. Everything else the peer sends is
// handled meanwhile, so that two peers uploading to each other do not wait
// on each other. Cancel is not acted on: requests are answered soon, in
// order.
//
// # Extensions
//
// An application can carry its own values on a feed's channel: each side
// sets its value of an extension, by name, with Replicator.Publish, and
// the peer gets it once the channel is open, and again each time it
// changes. The values a peer gets come in the order they were published,
// and only the latest of a name is sent: one replaced before it could be
// sent is not. Replicator.HandleExtension
// names a function to call, on the session's goroutine, with each value a
// peer sends.
//
// # Discovery
//
// Discovery is an interface; Static reports a fixed list of addresses, MDNS
// announces "_hyperfeed._tcp" services on the local network whose TXT record
// holds only a hash of the topic and the peer key, and browses for them on
// the chosen interfaces (all multicast interfaces by default).
package swarm
