// Package usersession is a directory of users and their sessions, built on
// feeds: each device of a user writes its own signed append-only feed
// (package feed), the feeds replicate between peers (package swarm), and
// every node folds the device feeds it holds into the same directory —
// who is called what, on which devices, at which address, online or not.
// There is no server and no shared mutable record: a device only ever
// appends to its own feed, so devices never conflict, and the rules below
// make every node that holds the same feeds compute the same directory.
//
// This part of the package is pure: identities, entries, tokens and the
// Directory are synchronous and deterministic, start no goroutines, and take
// the time as an argument. The runtime (StartUserSession, GetUsers,
// FindUserSession, presence, the swarm wiring) lives in node.go, written
// separately on top of these types; an Observer (Observe, in observer.go)
// is that runtime without a device of its own, which follows a directory
// without appearing in it.
//
// # Keys
//
// A user is an identity: an Ed25519 key pair (Identity, public IdentityKey)
// that the user keeps (SaveIdentity, LoadIdentity) and carries to each of
// their devices. A device is a feed: its DeviceKey is the feed key, and the
// feed's secret key signs the feed and the device's tokens. The identity
// never signs blocks; it signs the one statement that ties a device to it,
// the certificate, and its tombstones.
//
// # Entries
//
// Each block of a device feed is one entry: a type byte, then a msgpack
// array of the entry's fields in order, at most MaxEntrySize (64 KiB) in
// all, with nothing after the array. Keys travel as 32-byte binary strings
// and signatures as 64-byte ones; times are Unix milliseconds, never
// negative. An array with fewer fields is refused; fields past the known
// ones, which a later version may add, are skipped.
//
//	1 Certificate  identity, device, peer, alias, device name, claimed,
//	               created, signature
//	2 Login        alias, ip, port, started, metadata, swarm
//	3 Logout       at
//	4 Unregister   identity, alias, at, signature
//
// A Certificate is entry 0 of every device feed and appears nowhere else.
// It says that the device (its feed key, and peer, its swarm Noise key)
// acts for the identity under the alias; claimed is when the identity
// first claimed the alias (all its devices carry the same value), created
// when this device was certified, and claimed ≤ created. The device name
// is at most 64 bytes of printable UTF-8.
//
// A Login starts a session: the alias (the certificate's), an IP address in
// canonical text form (no zone, not unspecified), a port from 1 to 65535,
// the start time, and up to 32 metadata pairs (keys of 1 to 64 bytes,
// values up to 1 KiB, all UTF-8), and the device's swarm address (ip:port
// in the same canonical form, or empty; a Login written before this field
// existed decodes with it empty), which other nodes dial to keep a full
// mesh, since presence comes from direct connections. A Logout ends it.
// Neither carries a signature of its own: the device feed is signed.
//
// An Unregister is the identity's signed tombstone for an alias. It counts
// only on a feed of a device certified for that identity.
//
// Aliases in entries are always stored normalized (see the alias rule).
// A Login or Logout whose fields break these rules, a Certificate past
// entry 0, a Login under another alias than the certificate's, and an
// Unregister by another identity are bad entries: the directory skips them.
//
// # Signatures
//
// Signatures cover canonical byte layouts, never msgpack. Each begins with
// a domain string that names its purpose, so that no signature can be
// replayed as another. Integers are little-endian; strings are prefixed
// with their length in one byte (every string signed is under 256 bytes).
//
//	certificate  "hyperfeed/usersession/certificate/v1\x00" ‖ identity (32) ‖
//	             device (32) ‖ peer (32) ‖ i64 claimed ‖ i64 created ‖
//	             u8 len ‖ alias ‖ u8 len ‖ device name          by the identity
//	unregister   "hyperfeed/usersession/unregister/v1\x00" ‖ identity (32) ‖
//	             i64 at ‖ u8 len ‖ alias                        by the identity
//	token        "hyperfeed/usersession/token/v1\x00" ‖ claims  by the device
//
// The certificate names the device, so it cannot be copied to another
// feed: the directory takes entry 0 of a feed only if it certifies that
// very feed.
//
// # Tokens
//
// A device proves to others that it holds a session with a token:
//
//	"hft1." ‖ base64url without padding (claims ‖ signature (64))
//	claims = identity (32) ‖ device (32) ‖ u64 login ‖ i64 issued ‖
//	         i64 expires ‖ u8 len ‖ alias
//
// where login is the index, in the device's feed, of the Login entry that
// began the session, and the signature is the device feed's key over the
// domain string and the claims. Base64 is decoded strictly, so a token has
// one spelling. ParseToken checks the format and the device's signature;
// Directory.VerifyToken checks the rest against the feeds: expiry, the
// certificate chain, the login, logouts, unregistering, the session limit,
// each with its own error. A token lives until it expires or its session
// ends: a Logout on the device revokes every token of the sessions before
// it, while a later Login without a Logout (a new address) leaves them be.
//
// # Identity files
//
// Export writes the identity as text: the line "hyperfeed-identity-v1",
// then one line of standard base64 of
//
//	0x00 ‖ identity key (32) ‖ seed (32)                         (no passphrase)
//	0x01 ‖ identity key (32) ‖ u32 time ‖ u32 memory (KiB) ‖ u8 threads ‖
//	       salt (16) ‖ nonce (24) ‖ sealed seed (48)              (passphrase)
//
// With a passphrase the seed is sealed with XChaCha20-Poly1305 under the key
// argon2id derives from the passphrase and the salt with the parameters
// written beside it (64 MiB, 3 passes, 4 lanes today; a file made with other
// parameters still opens, within limits that keep a hostile file from
// exhausting memory). The domain string "hyperfeed/usersession/identity/v1\x00"
// and everything before the nonce are the associated data, so no readable
// field can be changed unnoticed. The public key stays readable: it is
// public anyway, and it lets SaveIdentity refuse to replace a different
// identity without asking for a passphrase. SaveIdentity writes atomically
// with mode 0600; LoadIdentity refuses a file that its group or others can
// access.
//
// # The alias rule
//
// An alias is 1 to 32 bytes of a-z, 0-9, '.', '_' and '-', starting with a
// letter or a digit. It is case-insensitive: ASCII capitals are accepted and
// stored in lower case, and nothing else is mapped (no Unicode folding, so
// no look-alikes). '~' is reserved.
//
// Any identity may claim any alias. Among the identities whose standing
// certificates claim an alias, the one with the smallest (claimed, identity
// key) owns it and is listed under the alias; each other claimant is still
// listed, never dropped, under alias~ and the first 8 hex digits of its
// identity key (all 64 if a losing claimant ahead of it in that order
// already has those 8), so that nobody can pass as the owner. An identity's claim is the
// earliest claimed among its standing certificates for the alias.
//
// Claimed is the claimant's own word: the rule settles honest races the
// same way on every node, but a claimant who backdates wins. It is meant for
// a group whose members are admitted (a swarm with a network secret); the
// alias~hex listing makes a squatter visible rather than silent.
//
// An Unregister by identity I for alias A at time T retires every
// certificate of I for A whose claimed is at or before T: those devices are
// listed nowhere and their tokens are revoked, and A is free for others.
// I may claim A again with a claimed after T, on new device feeds (a
// device feed has one certificate for its whole life).
//
// # Sessions
//
// A device is logged in if its last Login comes later in its feed than its
// last Logout. The runtime tells the directory which devices are reachable
// (SetPresence); a device is online if it is logged in, reachable, and
// within its identity's session limit. A node counts a device reachable
// while it has a session with the device's peer, and for a grace after
// that session ends: at least a twentieth of Config.OfflineAfter (at most
// 250 ms), so that a connection replaced by another (two peers that dial
// each other at once keep one of the two; a silent one is redialled) does
// not show the user leaving and joining again; and longer when OfflineAfter
// is longer than a session needs to notice a silent peer.
//
// The session limit: each identity may have maxSessions sessions online
// (NewDirectory; 3 by default). Its logged-in, reachable devices are
// ordered by their Login's started time, then by device key, and the first
// maxSessions are within the limit. The rest are over it: they are listed
// as not online, and SessionValid and VerifyToken refuse them with
// ErrSessionLimit. So a session started earlier keeps its place, and a
// newcomer waits until one of them logs out or goes away.
//
// Every identity with a standing certificate is listed, also when none of
// its devices is logged in: such a user shows Online false and no address.
//
// The primary device of a listed name — the one Users and Find show — is
// the online session started most recently; if none is online, the
// logged-in session seen or started most recently (Online false); if the
// user has no session at all, the device seen most recently (Online false,
// no address). Ties go to the smaller device key. Devices lists all of the
// name's devices in that order.
//
// # Folding
//
// Directory.Apply takes each device's blocks in feed order. What the
// directory shows depends on which blocks of which devices it holds, never
// on the order in which devices were interleaved: it is rebuilt from
// per-device state, and every choice is a minimum, a maximum or a sort on a
// total order. A feed that was truncated is forgotten with Reset and
// applied again.
//
// # Limits
//
// The session limit belongs to the directory, not to a node: each node
// counts sessions against its own Config.MaxSessions, so nodes with
// different values disagree on who is online and on which tokens are
// valid. Every node of a directory must use the same value, as it uses the
// same Topic.
//
// A certificate may name any swarm peer key: nothing proves that the
// device holds the key it names. So a user can certify a device of theirs
// with the key of someone else's node, and that device shows online
// wherever that node is connected. This harms only the user's own listing
// (and their own session limit, which the device counts against), since
// presence always goes to the identity that signed the certificate, never
// to the node whose key it names.
//
// A member can make a node follow device feeds that nobody certified, by
// listing made-up keys in its device list: the node creates each in its
// store, replicates it on every connection, downloads whatever a peer
// serves of it, and keeps it across restarts; it never lists such a feed
// on. A node follows at most 4,096 device feeds in all (maxDevices), real
// ones included, and once it has that many it ignores new devices, real
// ones too. A node that follows more than 1,024 feeds that a peer does not
// replicate opens more channels than the peer keeps waiting (see package
// swarm), and the peer ends the session: a member who lists that many keys
// to some nodes only cuts those off from the others.
//
// A login names the swarm address its device listens on, and every node
// dials the swarm addresses of the devices logged in that it is not
// connected to. A member can name any host and port there: each node then
// makes a few TCP connections to it (swarm.Dial gives up after five failed
// dials in a row) each time it loses a peer, and sends nothing but the
// start of a Noise handshake. Run a directory with a Secret where members
// are not trusted that far.
package usersession
