// Command hyperfeed creates, fills, reads, checks and replicates feeds: the
// signed append-only logs of package feed, copied between machines by
// package swarm.
//
// Usage:
//
//	hyperfeed [global flags] COMMAND [flags] OPERANDS
//	hyperfeed help [COMMAND]
//
// Flags and operands may come in any order after the command name; an
// operand "--" ends the flags. Flags take one or two dashes. "hyperfeed help
// COMMAND" and "hyperfeed COMMAND -h" list a command's flags.
//
// A feed lives in a directory. The directory that created it holds its
// secret key and is the only one that can append; copies made by clone are
// read-only replicas that verify everything they receive. A feed is open in
// one process at a time: while share or clone runs on a directory, the
// other commands refuse it.
//
// # Commands
//
//	hyperfeed create DIR
//
// Create a new writable feed in DIR, which must be missing or empty, and
// print its key: 64 hex digits, which whoever should read the feed needs.
//
//	hyperfeed append [--chunk SIZE | --whole] [--sync] DIR
//
// Append blocks read from stdin and print the feed's new length. By default
// each line is a block, without its "\n" (a last line without one counts);
// --chunk SIZE cuts the input into blocks of SIZE bytes (K, KiB, M, MiB are
// binary units), the last one shorter; --whole makes the whole input one
// block. A block is at most 16 MiB. Blocks go in batches of up to 8 MiB,
// each signed once, so a large file is fast; a slow input (a pipe from a
// running program) has each block appended as soon as it is complete.
// Appended blocks survive the process being killed; with --sync, they
// survive a power loss too. Empty input appends nothing.
//
//	hyperfeed cat [--start N] [--end N] [--raw] [--live] DIR
//
// Write blocks N (default 0) up to but not including --end (default: the
// length) to stdout, each followed by a newline, which gives back the input
// of a line-mode append; --raw writes them back to back, which gives back
// the input of --chunk or --whole. Without --live, cat reads only what DIR
// holds and fails at the first block a partial replica lacks. With --live,
// on a replica, cat goes on the network like clone, fetches missing blocks
// and waits for new ones, writing each as it arrives, until --end or until
// interrupted (which ends it with status 0).
//
//	hyperfeed info [--json] DIR
//
// Show the key, discovery key, whether DIR is the writable feed or a
// replica, the length in blocks and bytes, the fork, how many blocks are
// held, the signed head (tree hash and signature, in hex; no signature
// before the first append) and the space the directory takes on disk. With
// --json, one object with the fields key, discovery_key, writable, length,
// bytes, fork, downloaded, tree_hash, signature and disk_bytes.
//
//	hyperfeed verify DIR
//
// Check the signed head and every stored node and block against it (on a
// replica: those it holds). Prints "ok: ..." and exits 0, or names the
// first damage, "DIR is corrupt: block 3 does not match its hash", and exits 1.
//
//	hyperfeed share [--append [--chunk SIZE | --whole]] DIR
//
// Serve the feed to peers until SIGINT or SIGTERM, then disconnect cleanly
// and exit 0. It prints the key to give to others and the address it
// listens on. Peers find it by mDNS on the local network, or dial the
// address; it dials the --peer addresses itself. A replica can be shared
// too. With --append, share also appends blocks read from stdin, as append
// does, and keeps sharing after the input ends: "tail -f log | hyperfeed
// share --append DIR" publishes a log as it grows.
//
//	hyperfeed clone [--live] KEY DIR
//
// Download the feed with KEY into DIR from peers, verify it, print a
// summary line and exit 0. DIR is created if missing; if it holds an
// earlier, interrupted clone, clone continues where that stopped. Progress
// (blocks, bytes, rate and time left) is redrawn on one line when stderr is
// a terminal, else printed as a plain line at most once a second and at the
// end. Clone is done once a connected peer has told it the feed's head and
// it holds every block of that head, or of a newer one it has received
// meanwhile (a feed nothing was appended to yet is cloned too, with 0
// blocks). So a clone run again on a complete replica first hears whether
// the feed has grown. With --live, clone then keeps fetching new blocks
// until interrupted, which ends it with status 0. An interrupted clone exits
// 130 (SIGINT) or 143 (SIGTERM) and says how far it got.
//
//	hyperfeed users [--watch] [--json] [--wait DURATION] [--topic NAME] [--dir DIR]
//	                [--heartbeat DURATION] [--offline-after DURATION] [--max-sessions N]
//
// Show the directory of users and sessions of package usersession, a line
// per device of every user listed: the name it is listed under, the device
// (its name and the first 8 hex digits of its key), the address its session
// publishes (ip:port, "-" once logged out), whether it is online, and when
// users last saw it ("now" while connected to it, "-" if never). Users
// observes the directory without joining it: it has no identity and appends
// nothing, so nobody lists it. It finds peers by mDNS or --peer and waits
// until each has told it the devices it knows, those devices' feeds have
// come in, and the devices logged in have connected to it (or had a
// heartbeat to), at most --wait (default 10s), then prints the table; if
// the wait runs out, it prints what it has and warns. Presence comes from
// its own connections, as a node's does, so a device it cannot reach shows
// offline. --topic names the directory (default "hyperfeed-users");
// --heartbeat, --offline-after and --max-sessions must be what its nodes use
// (usersession.Config), or users may disagree with them on who is online.
//
// With --json, users prints a JSON array, an object per device with the
// fields alias, identity, device, device_name, primary (the device a lookup
// of the name answers with), address, online, last_seen and started (RFC
// 3339, or null), and metadata.
//
// With --watch, users goes on until SIGINT or SIGTERM, which end it with
// status 0. On a terminal it redraws the table as the directory changes;
// otherwise it prints the table, then a line per change, "TIME KIND NAME
// ADDRESS DEVICE", KIND being joined, left, updated or unregistered, for
// the name's primary device; with --json, the whole array again on one line
// after each change. Without --watch, an interrupted users exits 130 or 143.
//
// Users keeps the feeds it replicates, and its peer key, in --dir; by
// default in hyperfeed/usersession/observer/ under the user's cache
// directory ($XDG_CACHE_HOME or ~/.cache on Linux), in a directory per
// topic. --key-file does not apply. A second users running meanwhile takes
// a temporary directory.
//
// # Global flags
//
// These go before or after the command name. The network flags matter to
// share, clone, cat --live and users only.
//
//	--iface NAME        announce and browse by mDNS on interface NAME only
//	                    (repeatable; default: every multicast interface)
//	--no-mdns           no mDNS: find peers only through --peer, or let them
//	                    dial in
//	--peer ADDR         keep connected to the peer at host:port, redialling
//	                    with backoff (repeatable)
//	--listen ADDR       accept peers on ADDR (default ":0": every interface,
//	                    a free port)
//	--secret-file PATH  the network secret: peers without the same one cannot
//	                    connect
//	--key-file PATH     this peer's identity (default: the file below)
//	-v                  log to stderr: -v for the network's progress (peers
//	                    coming and going), -v -v for debugging
//
// # Files and environment
//
// The network secret is 32 bytes: a file holding 64 hex digits ("openssl
// rand -hex 32 > secret") or the raw bytes, named by --secret-file or
// $HYPERFEED_SECRET_FILE, or 64 hex digits in $HYPERFEED_SECRET. It is never
// taken from a flag's value, which other users can see in the process list.
// Without one, any peer that knows a feed's key can read it.
//
// A peer's identity is a Noise key pair kept in $XDG_CONFIG_HOME/hyperfeed/
// peer.key (on Linux; os.UserConfigDir elsewhere), mode 0600, created on
// first use. A second hyperfeed process running meanwhile gets a temporary
// identity instead, since mDNS ignores announcements of its own identity.
//
// # Exit status
//
//	0      done
//	1      verification failed: the feed's data is damaged
//	2      usage: a bad flag, operand or key
//	3      any other failure: no feed in DIR, DIR in use, I/O, network
//	128+N  ended early by signal N: 130 for SIGINT, 143 for SIGTERM
//
// Errors are one line on stderr: "hyperfeed: COMMAND: what went wrong".
package main
