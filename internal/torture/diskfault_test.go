package torture

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hyperfeed/hyperfeed/feed"
	"github.com/hyperfeed/hyperfeed/internal/faultfs"
	"github.com/hyperfeed/hyperfeed/internal/memnet"
	"github.com/hyperfeed/hyperfeed/swarm"
	"github.com/stretchr/testify/require"
)

// fingerprint sums up what a feed holds: its head, which blocks it has, and
// their bytes.
func fingerprint(t testing.TB, f *feed.Feed) string {
	t.Helper()
	h := sha256.New()
	head := f.Head()
	fmt.Fprintf(h, "%d %d %x %x;", head.Fork, head.Length, head.TreeHash, head.Signature)
	for i := range f.Len() {
		if !f.Has(i) {
			continue
		}
		b, err := f.Get(context.Background(), i)
		require.NoError(t, err, "block %d", i)
		fmt.Fprintf(h, "%d:%x;", i, sha256.Sum256(b))
	}
	return fmt.Sprintf("fork %d length %d blocks %d #%x", head.Fork, head.Length, f.Downloaded(), h.Sum(nil)[:6])
}

// faultOp is an operation on a feed to fail, and what follows it.
type faultOp struct {
	name    string
	replica bool
	// do is the operation; next is another write made after it, once the
	// fault is gone.
	do, next func(f *feed.Feed) error
}

// faultWorld is a writer and, on a Mem, either a copy of it or a replica
// of part of it, for operations to fail on.
type faultWorld struct {
	w    *feed.Feed
	base *faultfs.Mem
	key  feed.Key
	sk   []byte
}

func newFaultWorld(t *testing.T, sync, replica bool) *faultWorld {
	n := scale.faultBlocks
	w := openFeed(t, nil)
	_, err := w.Append(blocksFor(0, 0, n)...)
	require.NoError(t, err)
	base := faultfs.NewMem()
	if !replica {
		// The writer's own copy, on the Mem, with the secret Open makes.
		f, err := feed.Open("/feed", &feed.Options{FS: base, Sync: sync})
		require.NoError(t, err)
		_, err = f.Append(blocksFor(0, 0, n)...)
		require.NoError(t, err)
		require.NoError(t, f.Close())
		return &faultWorld{w: w, base: base}
	}
	r, err := feed.Open("/feed", &feed.Options{Key: w.Key(), FS: base, Sync: sync})
	require.NoError(t, err)
	for i := range uint64(n / 2) {
		p, d, err := w.Prove(r.BlockRequest(i))
		require.NoError(t, err)
		require.NoError(t, r.ApplyProof(p, d))
	}
	require.NoError(t, r.Close())
	return &faultWorld{w: w, base: base, key: w.Key()}
}

// open opens the Mem's feed on fsys.
func (fw *faultWorld) open(fsys feed.FS, sync bool) (*feed.Feed, error) {
	if fw.key.IsZero() {
		return feed.Open("/feed", &feed.Options{FS: fsys, Sync: sync, MustExist: true})
	}
	return feed.Open("/feed", &feed.Options{Key: fw.key, FS: fsys, Sync: sync, MustExist: true})
}

// applyBlocks stores the writer's proofs of blocks [from, to) as one batch,
// as a session does.
func (fw *faultWorld) applyBlocks(f *feed.Feed, from, to uint64) error {
	var batch []feed.ProofData
	for i := from; i < to; i++ {
		p, d, err := fw.w.Prove(f.BlockRequest(i))
		if err != nil {
			return err
		}
		batch = append(batch, feed.Prepare(p, d))
	}
	return errors.Join(f.ApplyProofs(batch)...)
}

func faultOps(fw *faultWorld) []faultOp {
	n := uint64(scale.faultBlocks)
	appendN := func(k int, big bool) func(f *feed.Feed) error {
		return func(f *feed.Feed) error {
			bs := blocksFor(f.Fork(), f.Len(), k)
			if big {
				// Enough bytes for Append to hash on every core and write
				// the data meanwhile.
				bs[0] = append(slices.Clone(bs[0]), make([]byte, 300<<10)...)
			}
			_, err := f.Append(bs...)
			return err
		}
	}
	if !fw.key.IsZero() {
		return []faultOp{
			{name: "store blocks", replica: true, do: func(f *feed.Feed) error { return fw.applyBlocks(f, n/2, n/2+5) },
				next: func(f *feed.Feed) error { return fw.applyBlocks(f, n/2+5, n/2+6) }},
			{name: "store one block", replica: true, do: func(f *feed.Feed) error { return fw.applyBlocks(f, n-1, n) },
				next: func(f *feed.Feed) error { return fw.applyBlocks(f, n-2, n-1) }},
		}
	}
	return []faultOp{
		{name: "append", do: appendN(3, false), next: appendN(1, false)},
		{name: "append large", do: appendN(2, true), next: appendN(1, false)},
		{name: "truncate", do: func(f *feed.Feed) error { return f.Truncate(f.Len() - 3) }, next: appendN(1, false)},
	}
}

// faultKind is a way of failing an operation at its k-th call.
type faultKind struct {
	name  string
	errno syscall.Errno
	// persistent faults fail every call from the k-th on, until removed.
	persistent bool
	rule       func(k int) faultfs.Rule // nil: the disk fills up instead
	op         faultfs.Op               // the calls counted
}

var faultKinds = []faultKind{
	{name: "EIO on write k", errno: syscall.EIO, op: faultfs.OpWrite,
		rule: func(k int) faultfs.Rule { return faultfs.Nth(faultfs.OpWrite, k, faultfs.Errno(syscall.EIO)) }},
	{name: "short write k", errno: syscall.EIO, op: faultfs.OpWrite,
		rule: func(k int) faultfs.Rule {
			seen := 0
			return func(c faultfs.Call) error {
				if c.Op != faultfs.OpWrite {
					return nil
				}
				if seen++; seen == k {
					return &faultfs.Short{N: c.Len / 2, Err: faultfs.Errno(syscall.EIO)}
				}
				return nil
			}
		}},
	{name: "EIO from write k on", errno: syscall.EIO, op: faultfs.OpWrite, persistent: true,
		rule: func(k int) faultfs.Rule { return faultfs.From(faultfs.OpWrite, k, faultfs.Errno(syscall.EIO)) }},
	{name: "EIO on sync k", errno: syscall.EIO, op: faultfs.OpSync,
		rule: func(k int) faultfs.Rule { return faultfs.Nth(faultfs.OpSync, k, faultfs.Errno(syscall.EIO)) }},
	{name: "disk full", errno: syscall.ENOSPC, op: faultfs.OpWrite, persistent: true},
}

// leftoverNodes reports whether a Verify error is about tree nodes left by a
// write that did not complete: a writer's node past its head, or a
// replica's node stored without its sibling or its parent.
func leftoverNodes(err error) bool {
	if err == nil {
		return false
	}
	for _, s := range []string{"past the head but not empty", "has one child stored", "is stored without its parent"} {
		if strings.Contains(err.Error(), s) {
			return true
		}
	}
	return false
}

// mismatchedNode reports whether a Verify error is about a stored node
// whose hash is not its children's: a node written in part, or left from
// another history.
func mismatchedNode(err error) bool {
	return err != nil && strings.Contains(err.Error(), "does not match its children")
}

// verifyTally counts the feeds that kept everything acknowledged but that
// Verify finds fault with, by kind, so that a test goes on through them
// and reports them once.
type verifyTally struct {
	leftover, mismatch int
	example            string
}

// add counts err (nil: nothing) and fails the test on a kind of fault
// that is not a known one.
func (v *verifyTally) add(t testing.TB, err error, context string) {
	t.Helper()
	switch {
	case err == nil:
		return
	case leftoverNodes(err):
		v.leftover++
	case mismatchedNode(err):
		v.mismatch++
	default:
		t.Fatalf("%s: %v", context, err)
	}
	if v.example == "" {
		v.example = context + ": " + err.Error()
	}
}

func (v *verifyTally) total() int { return v.leftover + v.mismatch }

func (v *verifyTally) String() string {
	return fmt.Sprintf("%d with nodes left over by an unfinished write, %d with a node that does not match its children (e.g. %s)",
		v.leftover, v.mismatch, v.example)
}

// TestWriteFaults fails every write (or sync) of an append, a truncation,
// and a replica's storing of proofs, one at a time, with EIO, a short write
// or a full disk, in sync mode and not. Each time the call must fail with
// an error that says what the disk said (errors.Is the errno, not
// ErrCorrupt), the feed must be as it was (a failed write changes
// nothing), a later write must work or refuse with ErrFailed (after a
// failed fsync), and the feed must reopen, verify, and hold everything
// acknowledged and nothing of the failed call.
func TestWriteFaults(t *testing.T) {
	total, corruptClaims, stale, tookEffect, poisoned, disagree, torn, stuck, unopenable := 0, 0, 0, 0, 0, 0, 0, 0, 0
	var misreported []string
	var staleExample, effectExample, poisonExample, disagreeExample, tornExample, stuckExample, openExample string
	for _, sync := range []bool{false, true} {
		for _, replica := range []bool{false, true} {
			fw := newFaultWorld(t, sync, replica)
			for _, fo := range faultOps(fw) {
				// The states the feed may end in, computed without faults:
				// as it was, after the call, after the next write alone,
				// and after both.
				states := func(ops ...func(*feed.Feed) error) string {
					m := fw.base.Snapshot()
					f, err := fw.open(m, sync)
					require.NoError(t, err)
					defer f.Close()
					for _, o := range ops {
						require.NoError(t, o(f))
					}
					return fingerprint(t, f)
				}
				before, after := states(), states(fo.do)
				beforeNext, afterNext := states(fo.next), states(fo.do, fo.next)
				// How many calls the operation makes: one fault for each.
				m := fw.base.Snapshot()
				counter := faultfs.Wrap(m)
				f, err := fw.open(counter, sync)
				require.NoError(t, err)
				w0, s0 := counter.Calls(faultfs.OpWrite), counter.Calls(faultfs.OpSync)
				bytes0 := m.Used()
				require.NoError(t, fo.do(f))
				calls := map[faultfs.Op]int{faultfs.OpWrite: counter.Calls(faultfs.OpWrite) - w0, faultfs.OpSync: counter.Calls(faultfs.OpSync) - s0}
				grown := m.Used() - bytes0
				require.NoError(t, f.Close())

				for _, fk := range faultKinds {
					points := calls[fk.op]
					if fk.rule == nil {
						points = 12 // capacities from none left to nearly enough
					}
					name := fmt.Sprintf("sync=%v/%s/%s", sync, fo.name, fk.name)
					for k := 1; k <= points; k++ {
						total++
						m := fw.base.Snapshot()
						fsys := faultfs.Wrap(m)
						f, err := fw.open(fsys, sync)
						require.NoError(t, err, name)
						if fk.rule != nil {
							fsys.SetRule(fk.rule(k))
						} else {
							m.SetCapacity(m.Used() + grown*int64(k-1)/int64(points))
						}
						callErr := fo.do(f)
						if callErr == nil {
							// A fault the call never reached (a capacity
							// it fits in, an fsync group-committed away).
							require.True(t, fk.rule == nil || fsys.Injected(0) == 0, "%s k=%d: the call succeeded despite the fault", name, k)
							f.Close()
							continue
						}
						if !errors.Is(callErr, fk.errno) {
							misreported = append(misreported, fmt.Sprintf("%s k=%d: %v", name, k, firstLine(callErr)))
						}
						if errors.Is(callErr, feed.ErrCorrupt) {
							corruptClaims++
						}
						done := false // the failed call took effect
						if fp := fingerprint(t, f); fp != before {
							require.Equal(t, after, fp, "%s k=%d: the failed call changed the feed", name, k)
							done = true
							if tookEffect++; effectExample == "" {
								effectExample = fmt.Sprintf("%s k=%d: %v", name, k, firstLine(callErr))
							}
						}
						fsys.SetRule(nil)
						m.SetCapacity(0)
						nextErr := fo.next(f)
						if errors.Is(nextErr, feed.ErrCorrupt) && !done {
							// Tallied: the failed call left the feed refusing
							// sound writes as corrupt.
							if poisoned++; poisonExample == "" {
								poisonExample = fmt.Sprintf("%s k=%d: the call failed with %v; the next write: %v", name, k, firstLine(callErr), firstLine(nextErr))
							}
						} else if nextErr != nil {
							require.ErrorIs(t, nextErr, feed.ErrFailed, "%s k=%d: the write after the fault", name, k)
						}
						f.Close()
						g, err := fw.open(m, sync)
						if err != nil && strings.Contains(err.Error(), "fails its checksum") {
							// Tallied (see TestPowerLossBitfield).
							if unopenable++; openExample == "" {
								openExample = fmt.Sprintf("%s k=%d (the call: %v): %v", name, k, firstLine(callErr), err)
							}
							continue
						}
						require.NoError(t, err, "%s k=%d: reopen", name, k)
						if verr := g.Verify(context.Background()); verr != nil {
							// Tallied, so that the other faults are tried.
							switch {
							case leftoverNodes(verr):
								if stale++; staleExample == "" {
									staleExample = fmt.Sprintf("%s k=%d (the call: %v; the next write: %v): %v", name, k, firstLine(callErr), firstLine(nextErr), verr)
								}
							case mismatchedNode(verr):
								if torn++; tornExample == "" {
									tornExample = fmt.Sprintf("%s k=%d (the call: %v): %v", name, k, firstLine(callErr), verr)
								}
							default:
								t.Fatalf("%s k=%d: %v", name, k, verr)
							}
						}
						got := fingerprint(t, g)
						want := []string{before}
						if nextErr == nil {
							want = []string{beforeNext}
						}
						if done {
							want = []string{after}
							if nextErr == nil {
								want = []string{afterNext}
							}
							if got == before || got == beforeNext {
								// What memory showed did not reach the disk.
								want = append(want, got)
								if disagree++; disagreeExample == "" {
									disagreeExample = fmt.Sprintf("%s k=%d: %v", name, k, firstLine(callErr))
								}
							}
						} else if fk.persistent || errors.Is(nextErr, feed.ErrFailed) {
							// A fault that outlived the call's own undoing, or
							// one that left the outcome unknown (the feed says
							// so with ErrFailed), may leave the call done: not
							// acknowledged, but there.
							want = append(want, after)
							if nextErr == nil {
								want = append(want, afterNext)
							}
						}
						require.Contains(t, want, got, "%s k=%d: reopened feed (failed with %v, next write: %v)", name, k, callErr, nextErr)
						if fo.replica {
							// The replica must still take every block from
							// the writer.
							for i := range uint64(scale.faultBlocks) {
								if g.Has(i) {
									continue
								}
								if aerr := fw.applyBlocks(g, i, i+1); aerr != nil {
									if stuck++; stuckExample == "" {
										stuckExample = fmt.Sprintf("%s k=%d (the call: %v): block %d: %v", name, k, firstLine(callErr), i, firstLine(aerr))
									}
									break
								}
							}
						}
						require.NoError(t, g.Close())
					}
				}
			}
		}
	}
	figure(t, "diskfaults.writes", "%d write, sync and disk-full faults injected, one per call of appends, truncations and replica stores (sync and not): no acknowledged write lost, no failed call half done on disk",
		total)
	var faults []string
	if len(misreported) > 0 {
		faults = append(faults, fmt.Sprintf("%d failed calls did not report the disk's error (errors.Is the injected errno "+
			"fails; %d claim ErrCorrupt), e.g. %s", len(misreported), corruptClaims, misreported[0]))
	}
	if unopenable > 0 {
		faults = append(faults, fmt.Sprintf("%d left a feed that does not open at all, e.g. %s", unopenable, openExample))
	}
	if torn > 0 || stuck > 0 {
		faults = append(faults, fmt.Sprintf("%d left a replica holding a node that does not match its children, e.g. %s; "+
			"%d reopened replicas then refused the writer's honest proof of a block they lacked, e.g. %s",
			torn, tornExample, stuck, stuckExample))
	}
	if poisoned > 0 {
		faults = append(faults, fmt.Sprintf("%d left the feed refusing the next, sound write with ErrCorrupt until "+
			"reopened, e.g. %s", poisoned, poisonExample))
	}
	if stale > 0 {
		faults = append(faults, fmt.Sprintf("%d left a feed that reopens with everything acknowledged but fails Verify, "+
			"e.g. %s", stale, staleExample))
	}
	if tookEffect > 0 {
		faults = append(faults, fmt.Sprintf("%d took effect in memory nonetheless (the feed is as after the call), "+
			"e.g. %s; in %d the effect did not reach the disk (reopened, the feed is as before), e.g. %s",
			tookEffect, effectExample, disagree, disagreeExample))
	}
	if len(faults) > 0 {
		t.Fatalf("of %d failed calls:\n- %s", total, strings.Join(faults, "\n- "))
	}
}

// firstLine is the first line of an error: errors.Join repeats what a
// batch of proofs failed with once per proof.
func firstLine(err error) string {
	if err == nil {
		return "<nil>"
	}
	line, _, _ := strings.Cut(err.Error(), "\n")
	return line
}

// TestReadFaults makes every read of one of a feed's files fail with EIO,
// at open and afterwards, and checks each read path: the call fails with
// EIO (not ErrCorrupt, which would have the caller discard a sound feed),
// returns no data, and the feed is sound once the disk is.
func TestReadFaults(t *testing.T) {
	type path struct {
		name    string
		replica bool
		do      func(fw *faultWorld, f *feed.Feed) error
	}
	n := uint64(scale.faultBlocks)
	paths := []path{
		{name: "Get", do: func(_ *faultWorld, f *feed.Feed) error {
			_, err := f.Get(context.Background(), 3)
			return err
		}},
		{name: "Verify", do: func(_ *faultWorld, f *feed.Feed) error { return f.Verify(context.Background()) }},
		{name: "Prove", do: func(_ *faultWorld, f *feed.Feed) error {
			_, _, err := f.Prove(feed.Request{Block: &feed.BlockRequest{Index: 3, Nodes: 64}, Upgrade: true})
			return err
		}},
		{name: "Truncate", do: func(_ *faultWorld, f *feed.Feed) error { return f.Truncate(f.Len() - 5) }},
		{name: "ApplyProof", replica: true, do: func(fw *faultWorld, f *feed.Feed) error { return fw.applyBlocks(f, n-3, n-2) }},
	}
	var misreported []string
	tried := 0
	for _, replica := range []bool{false, true} {
		fw := newFaultWorld(t, false, replica)
		for _, file := range []string{"header", "tree", "data", "index", "bitfield"} {
			failReads := faultfs.Match(func(c faultfs.Call) bool {
				return c.Op == faultfs.OpRead && strings.HasSuffix(c.Path, "/"+file)
			}, faultfs.Errno(syscall.EIO))
			// At open.
			fsys := faultfs.Wrap(fw.base.Snapshot())
			fsys.SetRule(failReads)
			f, err := fw.open(fsys, false)
			if fsys.Injected(0) > 0 {
				tried++
				if err == nil {
					f.Close()
				} else if !errors.Is(err, syscall.EIO) {
					misreported = append(misreported, fmt.Sprintf("replica=%v Open with %s unreadable: %v", replica, file, err))
				}
			} else if err == nil {
				f.Close()
			}
			// After open.
			for _, p := range paths {
				if p.replica != replica {
					continue
				}
				m := fw.base.Snapshot()
				fsys := faultfs.Wrap(m)
				f, err := fw.open(fsys, false)
				require.NoError(t, err)
				fsys.SetRule(failReads)
				err = p.do(fw, f)
				if fsys.Injected(0) > 0 {
					// A call may succeed without the file (its cache
					// serves); one that fails must say why.
					tried++
					if err != nil && !errors.Is(err, syscall.EIO) {
						misreported = append(misreported, fmt.Sprintf("replica=%v %s with %s unreadable: %v", replica, p.name, file, err))
					}
				}
				f.Close()
				// Sound again once the disk is.
				g, err := fw.open(m, false)
				require.NoError(t, err, "%s with %s unreadable, then reopened", p.name, file)
				require.NoError(t, g.Verify(context.Background()))
				require.NoError(t, g.Close())
			}
		}
	}
	figure(t, "diskfaults.reads", "%d read paths run with a file unreadable (EIO); every feed sound again once the disk was", tried)
	if len(misreported) > 0 {
		t.Fatalf("%d of %d calls with a file unreadable did not fail with its EIO:\n%s",
			len(misreported), tried, strings.Join(misreported, "\n"))
	}
}

// swarmOn starts a swarm for host on n, with fast reconnection.
func swarmOn(t testing.TB, n *memnet.Network, host string, store *feed.Store, cfg swarm.Config) *swarm.Swarm {
	t.Helper()
	ln, err := n.Listen(host + ":7000")
	require.NoError(t, err)
	cfg.Listener, cfg.Dial = ln, n.Dialer(host)
	if cfg.KeyPair.Public.IsZero() {
		cfg.KeyPair = mustKeyPair()
	}
	if cfg.ReconnectMin == 0 {
		cfg.ReconnectMin = 20 * time.Millisecond
	}
	if cfg.ReconnectMax == 0 {
		cfg.ReconnectMax = 500 * time.Millisecond
	}
	s, err := swarm.New(store, cfg)
	require.NoError(t, err)
	t.Cleanup(func() { s.Close() })
	return s
}

// TestReplicationPausesOnDiskFault downloads a feed to a replica whose disk
// fills up, or starts failing writes, part way: while it fails, the
// replica must not ask for blocks again and again (its sessions end, and
// the swarm redials with backoff); once the disk is healthy, it must
// complete the download.
func TestReplicationPausesOnDiskFault(t *testing.T) {
	const n = 3000
	for _, kind := range []string{"disk full", "EIO on every write"} {
		t.Run(kind, func(t *testing.T) {
			noLeaks(t)
			net := memnet.New(memnet.Config{})
			w := openFeed(t, nil)
			_, err := w.Append(blocksFor(0, 0, n)...)
			require.NoError(t, err)
			ws := swarmOn(t, net, "10.0.0.1", nil, swarm.Config{})
			_, err = ws.Replicate(w)
			require.NoError(t, err)

			m := faultfs.NewMem()
			fsys := faultfs.Wrap(m)
			r, err := feed.Open("/replica", &feed.Options{Key: w.Key(), FS: fsys})
			require.NoError(t, err)
			defer r.Close()
			failing := func() bool { return m.Stats().NoSpace > 0 || fsys.Injected(0) > 0 }
			var broken atomic.Bool // set once a third is stored; read under the FS's lock
			if kind == "disk full" {
				m.SetCapacity(m.Used() + int64(w.ByteLen()/3))
			} else {
				fsys.SetRule(func(c faultfs.Call) error {
					if c.Op == faultfs.OpWrite && broken.Load() {
						return faultfs.Errno(syscall.EIO)
					}
					return nil
				})
			}
			rs := swarmOn(t, net, "10.0.0.2", nil, swarm.Config{})
			d, err := rs.Download(r, 0, n)
			require.NoError(t, err)
			require.NoError(t, rs.Connect(ws.Addr().String()))
			if kind != "disk full" {
				waitUntil(t, 30*time.Second, "a third of the download", func() bool { return r.Downloaded() >= n/3 })
				broken.Store(true)
			}
			waitUntil(t, 30*time.Second, "the disk failing", failing)

			// Watch the replica while its disk fails.
			const window = 2 * time.Second
			dials, sent, held := net.Stats().Dials, net.Sent("10.0.0.2"), r.Downloaded()
			start := time.Now()
			var lastSecond int64
			waitUntil(t, 2*window, "the window", func() bool {
				if time.Since(start) >= window-time.Second && lastSecond == 0 {
					lastSecond = net.Sent("10.0.0.2")
				}
				return time.Since(start) >= window
			})
			dials, sent = net.Stats().Dials-dials, net.Sent("10.0.0.2")-sent
			lastSecond = net.Sent("10.0.0.2") - lastSecond
			figure(t, "diskfaults.pause."+strings.ReplaceAll(kind, " ", "-"), "with %d of %d blocks stored and the disk failing: %d connections and %d KB of requests in %v (%d KB in the last second)",
				held, n, dials, sent/1000, window, lastSecond/1000)
			require.LessOrEqual(t, r.Downloaded(), held+uint64(n/10), "blocks kept arriving on a failing disk")
			// Backoff from 20 ms to 500 ms allows about 7 dials in 2 s; a
			// session asks for at most a window (512 requests, ~20 KB).
			require.LessOrEqual(t, dials, 12, "the replica redialled without backing off")
			require.Less(t, lastSecond, int64(100_000), "the replica kept asking while its disk failed")

			// Heal the disk: the download completes.
			m.SetCapacity(0)
			fsys.SetRule(nil)
			healed := time.Now()
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			if err := d.Wait(ctx); err != nil {
				t.Fatalf("once the disk was healthy again the replica did not complete its download in 15 s "+
					"(%d of %d blocks)", r.Downloaded(), n)
			}
			figure(t, "diskfaults.resume."+strings.ReplaceAll(kind, " ", "-"), "download completed %v after the disk was healthy", time.Since(healed).Round(time.Millisecond))
			requireSame(t, w, r)
		})
	}
}

// TestReplicationAcrossServerReadFaults serves a feed from a writer whose
// disk stops reading part way through a replica's download: the replica
// must not ask again and again meanwhile, and must complete the download
// once the writer's disk reads again.
func TestReplicationAcrossServerReadFaults(t *testing.T) {
	const n = 3000
	noLeaks(t)
	net := memnet.New(memnet.Config{})
	m := faultfs.NewMem()
	fsys := faultfs.Wrap(m)
	w, err := feed.Open("/writer", &feed.Options{FS: fsys})
	require.NoError(t, err)
	defer w.Close()
	_, err = w.Append(blocksFor(0, 0, n)...)
	require.NoError(t, err)
	var broken atomic.Bool
	fsys.SetRule(func(c faultfs.Call) error {
		if c.Op == faultfs.OpRead && broken.Load() {
			return faultfs.Errno(syscall.EIO)
		}
		return nil
	})
	ws := swarmOn(t, net, "10.0.0.1", nil, swarm.Config{})
	_, err = ws.Replicate(w)
	require.NoError(t, err)
	r := openFeed(t, &feed.Options{Key: w.Key()})
	rs := swarmOn(t, net, "10.0.0.2", nil, swarm.Config{})
	d, err := rs.Download(r, 0, n)
	require.NoError(t, err)
	require.NoError(t, rs.Connect(ws.Addr().String()))
	waitUntil(t, 30*time.Second, "a third of the download", func() bool { return r.Downloaded() >= n/3 })
	broken.Store(true)
	waitUntil(t, 10*time.Second, "the writer's disk failing a read", func() bool { return fsys.Injected(0) > 0 })

	const window = 2 * time.Second
	sent, start := net.Sent("10.0.0.2"), time.Now()
	var lastSecond int64
	waitUntil(t, 2*window, "the window", func() bool {
		if time.Since(start) >= window-time.Second && lastSecond == 0 {
			lastSecond = net.Sent("10.0.0.2")
		}
		return time.Since(start) >= window
	})
	sent, lastSecond = net.Sent("10.0.0.2")-sent, net.Sent("10.0.0.2")-lastSecond
	figure(t, "diskfaults.serverreads", "with the writer's reads failing after %d of %d blocks: the replica sent %d KB in %v (%d KB in the last second); %d reads failed",
		r.Downloaded(), n, sent/1000, window, lastSecond/1000, fsys.Injected(0))
	require.Less(t, lastSecond, int64(100_000), "the replica kept asking a writer that could not read")

	broken.Store(false)
	healed, dials := time.Now(), net.Stats().Dials
	ctx, cancel := context.WithTimeout(context.Background(), scale.stallWait)
	defer cancel()
	if err := d.Wait(ctx); err != nil {
		t.Fatalf("the writer's disk reads again, but the replica's download stays at %d of %d blocks for %v on "+
			"the same session", r.Downloaded(), n, scale.stallWait)
	}
	require.Equal(t, dials, net.Stats().Dials, "the download completed on a new connection, not the same session")
	figure(t, "diskfaults.serverreads.resume", "download completed %v after the writer's disk read again", time.Since(healed).Round(time.Millisecond))
	requireSame(t, w, r)
}
