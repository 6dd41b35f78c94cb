// Package torture holds no code of its own: its tests put feeds and swarms
// through faults, fuzzing and load, and assert what must survive them.
//
// Run the whole suite, which takes minutes, with
//
//	go test -tags torture ./internal/torture/...
//
// Without the tag, the same tests run at a scale that fits in a normal
// go test ./... (a few dozen trials each instead of hundreds). The figures
// each test measures are logged (go test -v), and written one per line to
// the file named by TORTURE_FIGURES, if set.
//
// What is tested:
//
//   - Crashes: a child process appending, truncating, or replicating is
//     killed with SIGKILL at random points; the feed must open, verify and
//     hold every block it acknowledged. In process, feeds on a
//     faultfs.Mem lose power at every point of their I/O, keeping only what
//     was synced (and random parts of what was not): with Options.Sync the
//     same must hold.
//   - Disk faults: write, sync and read errors and a full disk, injected
//     at every write of an operation: the call fails with a clear error,
//     the feed stays consistent, and replication pauses rather than asking
//     again and again.
//   - Network faults: swarms over an in-memory network (internal/memnet)
//     with latency, re-chunked and reordered writes, flipped bits, resets
//     and partitions converge on the writer's signed head.
//   - Adversaries: peers that lie about their length, replay old heads,
//     send a forked history, flood requests or open thousands of channels.
//   - Fuzzing: targets for what the packages' own fuzzers do not reach
//     (damaged feed directories, the Noise handshake, a session's message
//     stream).
//   - Load: many feeds among many peers, and one writer serving many
//     readers at once, with throughput and peak memory.
package torture
