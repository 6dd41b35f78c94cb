// Package swarm replicates feeds between peers: Noise-encrypted connections,
// discovery of peers on the local network (mDNS) or from a list, and the
// replication protocol. It is the only package of hyperfeed that owns
// goroutines and sockets.
//
// A Swarm listens, dials the peers that discovery finds under the topics it
// joins (a feed's discovery key, or any 32 bytes), keeps one Session per
// peer, and replicates over every session the feeds given to Replicate and
// any feed of its feed.Store that a peer asks for. A Session also runs on any
// net.Conn a caller provides (NewSession), which is how the protocol is
// tested without sockets.
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
// lost peer with exponential backoff (Config.ReconnectMin to ReconnectMax),
// and a session that hears nothing for three keep-alive intervals (pinging in
// between) ends with ErrTimeout. Config.Firewall can refuse a peer by key.
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
//	7  Data     channel, id, fork, block {index, value, nodes[]} | nil,
//	            upgrade {start, length, nodes[], signature (64)} | nil
//	8  NoData   channel, id                      the request cannot be served
//	9  Cancel   channel, id
//	10 Ping     nonce
//	11 Pong     nonce
//
// A node is {index, size, hash (32)}. Hashes and signatures cover merkle's
// canonical byte layouts, never msgpack.
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
// # Replication
//
// On opening, each side sends Sync and what it holds (one Range for a
// complete feed, else its runs of blocks), and again whenever its head
// changes or it gains a block. A side whose peer has a newer head (a longer
// length, or a later fork) asks for an upgrade; a side that wants blocks
// (a Get waiting on a replica, or a Download) asks for them, up to the window
// (512 requests in flight by default) on each channel, and never asks two
// peers for the same block. Each Request says the
// requester's fork and length and how many proof nodes it lacks; the answer
// is Data with a proof from feed.Prove, or NoData. Everything received is
// verified by feed.ApplyProof before it is stored; a proof that does not
// verify ends the session with ErrProtocol, and nothing of it is kept. A
// peer on an older fork gets an upgrade from the prefix both histories
// share, and drops the rest.
//
// # Discovery
//
// Discovery is an interface; Static reports a fixed list of addresses, MDNS
// announces "_hyperfeed._tcp" services on the local network whose TXT record
// holds only a hash of the topic and the peer key, and browses for them on
// the chosen interfaces (all multicast interfaces by default).
package swarm
