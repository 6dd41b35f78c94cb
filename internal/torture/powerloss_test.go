package torture

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hyperfeed/hyperfeed/feed"
	"github.com/hyperfeed/hyperfeed/internal/faultfs"
	"github.com/hyperfeed/hyperfeed/internal/memnet"
	"github.com/hyperfeed/hyperfeed/swarm"
	"github.com/stretchr/testify/require"
)

// These tests stop a feed at a random point of its I/O (faultfs.Mem's
// PowerOffAfter), take what the storage would hold afterwards, and check
// it against what the feed acknowledged. Unlike the SIGKILL tests, they can
// stop between any two writes, and drop what was not synced.

// crashKind is what is left of the storage after the stop.
type crashKind int

const (
	// processCrash: the process died and the machine kept running; the
	// operating system still has every write (Mem.Snapshot).
	processCrash crashKind = iota
	// powerLoss: the machine lost power; only what was synced survives,
	// with random sectors of what was not, in any order (Mem.Crash, the
	// model of SQLite's crash tests).
	powerLoss
	// powerLossOrdered: the same under the page cache's model, where each
	// page holds a prefix of its writes (Mem.CrashOrdered).
	powerLossOrdered
)

func (k crashKind) String() string { return [...]string{"process", "power-sectors", "power-pages"}[k] }

// crash returns what k leaves of m, and for the sector model the part of
// the unsynced sectors kept (-1 for the page model).
func crash(m *faultfs.Mem, k crashKind, rng *rand.Rand) (*faultfs.Mem, float64) {
	switch k {
	case processCrash:
		return m.Snapshot(), 1
	case powerLossOrdered:
		return m.CrashOrdered(rng), -1
	}
	// Drop everything unsynced, keep it all, or keep a random part.
	keep := [...]float64{0, 1, rng.Float64()}[rng.IntN(3)]
	return m.Crash(rng, keep), keep
}

// TestPowerLossWriter appends and truncates on a Mem until its power goes
// off after a random number of writes and syncs, then checks the feed that
// storage reopens with. In sync mode a power loss keeps every
// acknowledged write; in either mode a process crash does. Each trial
// starts from the storage the last one left, so recovery is tested on
// recovered feeds, and a stop inside Open (its repairs) is among the
// points hit.
func TestPowerLossWriter(t *testing.T) {
	for _, tc := range []struct {
		sync bool
		kind crashKind
	}{{true, powerLoss}, {true, powerLossOrdered}, {true, processCrash}, {false, processCrash}} {
		t.Run(fmt.Sprintf("sync=%v/%v", tc.sync, tc.kind), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(3, uint64(scale.powerTrials)))
			m := faultfs.NewMem()
			var acked history
			midOp, inOpen, ops := 0, 0, 0
			var unverified verifyTally
			var writes int64
			for trial := range scale.powerTrials {
				m.PowerOffAfter(int64(rng.IntN(200)))
				f, err := feed.Open("/feed", &feed.Options{FS: m, Sync: tc.sync})
				var inflight *op
				if err != nil {
					require.ErrorIs(t, err, faultfs.ErrPowerOff, "trial %d: open", trial)
					inOpen++
				} else {
					for range 30 {
						var o op
						if n := f.Len(); n > 0 && rng.IntN(8) == 0 {
							o = op{truncate: true, length: n - uint64(rng.IntN(int(min(n, 20))+1))}
						} else {
							o = op{n: 1 + rng.IntN(8)}
						}
						if err := o.do(f, acked); err != nil {
							// The power is off, and the operation failed.
							// Some report a failed read as ErrCorrupt; the
							// disk-fault tests hold them to that.
							require.True(t, powerIsOff(m), "trial %d: %v failed with the power on: %v", trial, o, err)
							inflight = &o
							midOp++
							break
						}
						acked = acked.apply(o)
						ops++
					}
					m.PowerOff()
					f.Close() // fails, in sync mode, on the power being off
				}
				writes += int64(m.Stats().Writes)
				c, keep := crash(m, tc.kind, rng)
				g, err := feed.Open("/feed", &feed.Options{FS: c, Sync: tc.sync})
				require.NoError(t, err, "trial %d: reopen after a %v crash (keep %.2f)", trial, tc.kind, keep)
				got, verr, err := checkWriter(g, acked, inflight)
				require.NoError(t, err, "trial %d: %v crash, keep %.2f", trial, tc.kind, keep)
				// Tallied, not failed at once, so that the trials go on (see
				// TestPowerLossStaleNode).
				unverified.add(t, verr, fmt.Sprintf("trial %d, keep %.2f, %v in flight", trial, keep, inflight))
				require.NoError(t, g.Close())
				acked, m = got, c
			}
			figure(t, fmt.Sprintf("powerloss.writer.sync=%v.%v", tc.sync, tc.kind),
				"%d crashes (%d inside an operation, %d inside Open) after %d acknowledged operations; every acknowledged write held; feed ended at %d blocks, fork %d",
				scale.powerTrials, midOp, inOpen, ops, len(acked.tags), acked.fork)
			if unverified.total() > 0 {
				t.Fatalf("after %d of %d crashes the feed reopened with every acknowledged block, but Verify "+
					"fails: %v", unverified.total(), scale.powerTrials, &unverified)
			}
		})
	}
}

// powerIsOff reports whether m has lost power.
func powerIsOff(m *faultfs.Mem) bool {
	_, err := m.ReadDir("/")
	return errors.Is(err, faultfs.ErrPowerOff)
}

// TestPowerLossStaleNode cuts the power in the middle of an append in sync
// mode, keeping some sectors of what it wrote and not others, for every
// small length and every point of the append: the feed must reopen with
// its old head and verify.
func TestPowerLossStaleNode(t *testing.T) {
	for _, kind := range []crashKind{powerLoss, powerLossOrdered} {
		t.Run(kind.String(), func(t *testing.T) {
			crashes, bad := 0, 0
			var example string
			for length := uint64(1); length <= 8; length++ {
				for budget := int64(1); budget <= 6; budget++ {
					m := faultfs.NewMem()
					f, err := feed.Open("/feed", &feed.Options{FS: m, Sync: true})
					require.NoError(t, err)
					_, err = f.Append(blocksFor(0, 0, int(length))...)
					require.NoError(t, err)
					head := f.Head()
					m.PowerOffAfter(budget)
					_, aerr := f.Append(blocksFor(0, length, 1)...)
					f.Close()
					rng := rand.New(rand.NewPCG(uint64(budget), length))
					for range scale.crashSeeds {
						c, _ := crash(m, kind, rng)
						g, err := feed.Open("/feed", &feed.Options{FS: c, Sync: true})
						require.NoError(t, err)
						if aerr != nil {
							require.Equal(t, head, g.Head(), "an append that failed changed the head")
						}
						if verr := g.Verify(context.Background()); verr != nil {
							if bad++; example == "" {
								example = fmt.Sprintf("%d blocks, power off after %d of the append's writes and syncs, "+
									"reopened at length %d: %v", length, budget, g.Len(), verr)
							}
						}
						crashes++
						require.NoError(t, g.Close())
					}
				}
			}
			if bad > 0 {
				t.Fatalf("%d of %d power losses (%v model) in the middle of an append (sync mode) leave a feed that "+
					"opens with the old head but fails Verify, e.g. %s", bad, crashes, kind, example)
			}
		})
	}
}

// TestPowerLossBitfield cuts a sync-mode replica's power at every point of
// storing a proof, under both crash models: the replica must open again
// with every block it acknowledged.
func TestPowerLossBitfield(t *testing.T) {
	w := openFeed(t, nil)
	_, err := w.Append(blocksFor(0, 0, 100)...)
	require.NoError(t, err)
	for _, kind := range []crashKind{powerLoss, powerLossOrdered} {
		t.Run(kind.String(), func(t *testing.T) {
			base := faultfs.NewMem()
			r, err := feed.Open("/replica", &feed.Options{Key: w.Key(), FS: base, Sync: true})
			require.NoError(t, err)
			for i := range uint64(50) {
				p, d, err := w.Prove(r.BlockRequest(i))
				require.NoError(t, err)
				require.NoError(t, r.ApplyProof(p, d))
			}
			require.NoError(t, r.Close())
			crashes, failed := 0, 0
			var example string
			for budget := int64(1); budget <= 12; budget++ {
				m := base.Snapshot()
				r, err := feed.Open("/replica", &feed.Options{Key: w.Key(), FS: m, Sync: true})
				require.NoError(t, err)
				m.PowerOffAfter(budget)
				p, d, err := w.Prove(r.BlockRequest(50))
				require.NoError(t, err)
				r.ApplyProof(p, d)
				r.Close()
				rng := rand.New(rand.NewPCG(uint64(budget), 7))
				for range scale.crashSeeds {
					c, _ := crash(m, kind, rng)
					crashes++
					g, err := feed.Open("/replica", &feed.Options{Key: w.Key(), FS: c, Sync: true})
					if err != nil {
						if failed++; example == "" {
							example = fmt.Sprintf("power off after %d of the commit's writes and syncs: %v", budget, err)
						}
						continue
					}
					for i := range uint64(50) {
						require.True(t, g.Has(i), "acknowledged block %d lost", i)
					}
					require.NoError(t, g.Close())
				}
			}
			if failed > 0 {
				t.Fatalf("%d of %d power losses (%v model) while a sync-mode replica stored one block left a "+
					"replica that does not open: %s", failed, crashes, kind, example)
			}
		})
	}
}

// groupBlock is the block appender g writes as its seq-th.
func groupBlock(g, seq int) []byte {
	return fmt.Appendf(nil, "appender %d block %d %s", g, seq, bytes.Repeat([]byte{byte(g)}, seq%700))
}

// TestPowerLossGroupCommit appends from several goroutines at once in sync
// mode, so that appends share fsyncs (group commit), and cuts the power at
// random points: every block whose Append returned must survive.
func TestPowerLossGroupCommit(t *testing.T) {
	const appenders = 4
	rng := rand.New(rand.NewPCG(4, 4))
	m := faultfs.NewMem()
	acked := map[uint64][]byte{} // block index → the block
	var end uint64               // the longest acknowledged length
	trials := scale.powerTrials / 2
	var unverified verifyTally
	for trial := range trials {
		f, err := feed.Open("/feed", &feed.Options{FS: m, Sync: true})
		require.NoError(t, err, "trial %d", trial)
		m.PowerOffAfter(int64(1 + rng.IntN(150)))
		var mu sync.Mutex
		var wg sync.WaitGroup
		for g := range appenders {
			wg.Go(func() {
				for seq := trial * 1000; ; seq++ {
					b := groupBlock(g, seq)
					n, err := f.Append(b)
					if err != nil {
						return
					}
					mu.Lock()
					acked[n-1] = b
					end = max(end, n)
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		f.Close()
		c, keep := crash(m, powerLoss, rng)
		g, err := feed.Open("/feed", &feed.Options{FS: c, Sync: true})
		require.NoError(t, err, "trial %d: reopen (keep %.2f)", trial, keep)
		unverified.add(t, g.Verify(context.Background()), fmt.Sprintf("trial %d", trial)) // see TestPowerLossStaleNode
		require.GreaterOrEqual(t, g.Len(), end, "trial %d: acknowledged length lost (keep %.2f)", trial, keep)
		for i, want := range acked {
			got, err := g.Get(context.Background(), i)
			require.NoError(t, err, "trial %d: block %d", trial, i)
			require.True(t, bytes.Equal(want, got), "trial %d: block %d is not what was acknowledged", trial, i)
		}
		// Blocks past the acknowledged length survived unacknowledged: they
		// are the feed's now.
		for i := end; i < g.Len(); i++ {
			b, err := g.Get(context.Background(), i)
			require.NoError(t, err)
			acked[i] = b
		}
		end = g.Len()
		require.NoError(t, g.Close())
		m = c
	}
	figure(t, "powerloss.groupcommit", "%d power losses under %d concurrent appenders; %d acknowledged blocks all held; %d failed Verify",
		trials, appenders, len(acked), unverified.total())
	if unverified.total() > 0 {
		t.Fatalf("%d of %d feeds reopened with every acknowledged block but failed Verify: %v",
			unverified.total(), trials, &unverified)
	}
}

// TestPowerLossReplica cuts the power of a replica in sync mode while it
// takes proofs from a writer that appends and truncates: every block and
// head the replica acknowledged (by its events) must survive, and the
// replica must then complete its download from the writer.
func TestPowerLossReplica(t *testing.T) {
	for _, kind := range []crashKind{powerLoss, powerLossOrdered} {
		t.Run(kind.String(), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(5, 5))
			w := openFeed(t, nil)
			_, err := w.Append(blocksFor(0, 0, 40)...)
			require.NoError(t, err)
			rw := newReplicator(t, w)
			wh, err := historyOf(w)
			require.NoError(t, err)
			m := faultfs.NewMem()
			acks := &replicaAcks{held: map[uint64]bool{}}
			events, forked, cut, unopenable := 0, 0, 0, 0
			var openExample string
			var unverified verifyTally
			trials := scale.replicaPower / 2
			for trial := range trials {
				r, err := feed.Open("/replica", &feed.Options{Key: w.Key(), FS: m, Sync: true})
				require.NoError(t, err, "trial %d", trial)
				var eventErr error
				var emu sync.Mutex
				r.Subscribe(func(e feed.Event) {
					if err := acks.event(e); err != nil {
						emu.Lock()
						eventErr = errors.Join(eventErr, err)
						emu.Unlock()
					}
				})
				m.PowerOffAfter(int64(1 + rng.IntN(300)))
				rr := swarm.NewReplicator(r)
				rr.Download(0, swarm.Live)
				a, b := memPair(t, memnet.New(memnet.Config{}))
				sw, sr := sessionOver(t, a, b, swarm.SessionConfig{}, swarm.SessionConfig{})
				sw.Replicate(rw)
				sr.Replicate(rr)
				for range 10 {
					// Let the replica catch up, or its storage die, or 100 ms pass.
					for deadline := time.Now().Add(100 * time.Millisecond); time.Now().Before(deadline) && !ended(sr) && !converged(w, r); {
						time.Sleep(time.Millisecond)
					}
					if ended(sr) {
						cut++
						break
					}
					var o op
					if n := w.Len(); rng.IntN(15) == 0 {
						o = op{truncate: true, length: n - uint64(rng.IntN(10)+1)}
					} else {
						o = op{n: 1 + rng.IntN(10)}
					}
					require.NoError(t, o.do(w, wh))
					wh = wh.apply(o)
				}
				m.PowerOff()
				sr.Close()
				sw.Close()
				rr.Close()
				r.Close()
				require.NoError(t, eventErr)
				c, keep := crash(m, kind, rng)
				r, err = feed.Open("/replica", &feed.Options{Key: w.Key(), FS: c, Sync: true})
				if err != nil && strings.Contains(err.Error(), "fails its checksum") {
					// Tallied (see TestPowerLossBitfield); the next trial
					// starts over with an empty replica.
					if unopenable++; openExample == "" {
						openExample = fmt.Sprintf("trial %d: %v", trial, err)
					}
					m, acks = faultfs.NewMem(), &replicaAcks{held: map[uint64]bool{}}
					continue
				}
				require.NoError(t, err, "trial %d: reopen (keep %.2f)", trial, keep)
				f, err := acks.check(r)
				require.NoError(t, err, "trial %d (keep %.2f)", trial, keep)
				if f {
					forked++
				}
				// Tallied, so that the trials go on; the replica must still
				// take the rest from the writer.
				if verr := r.Verify(context.Background()); verr != nil {
					unverified.add(t, verr, fmt.Sprintf("trial %d (keep %.2f)", trial, keep))
				} else {
					requireOnlyWriters(t, w, r)
				}
				events += acks.events
				acks = newReplicaAcks(r)
				require.NoError(t, r.Close())
				m = c
			}
			// What the crashes left must still complete from the writer.
			r, err := feed.Open("/replica", &feed.Options{Key: w.Key(), FS: m, Sync: true})
			require.NoError(t, err)
			rr := newReplicator(t, r)
			rr.Download(0, swarm.Live)
			a, b := memPair(t, memnet.New(memnet.Config{}))
			sw, sr := sessionOver(t, a, b, swarm.SessionConfig{}, swarm.SessionConfig{})
			sw.Replicate(rw)
			sr.Replicate(rr)
			for deadline := time.Now().Add(10 * time.Second); !converged(w, r) && time.Now().Before(deadline) && !ended(sr); {
				time.Sleep(2 * time.Millisecond)
			}
			finished := converged(w, r)
			var finalVerify error
			if finished {
				finalVerify = r.Verify(context.Background())
			}
			sr.Close()
			sw.Close()
			rr.Close()
			require.NoError(t, r.Close())
			figure(t, "powerloss.replica."+kind.String(), "%d power losses of a replica taking proofs (%d while storing), %d acknowledgements checked (%d inside a fork change); every acknowledged block held where the replica opened; %d did not open, %d failed Verify",
				trials, cut, events, forked, unopenable, unverified.total())
			if unopenable > 0 {
				t.Fatalf("after a power loss (%v model) in sync mode, %d of %d replicas did not open at all, e.g. %s",
					kind, unopenable, trials, openExample)
			}
			if unverified.total() > 0 || !finished || finalVerify != nil {
				t.Fatalf("after a power loss (%v model) in sync mode, %d of %d replicas reopened with every "+
					"acknowledged block but failed Verify: %v; afterwards the replica converged with the writer: %v "+
					"(then Verify: %v)", kind, unverified.total(), trials, &unverified, finished, finalVerify)
			}
		})
	}
}
