package torture

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hyperfeed/hyperfeed/feed"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

// scales are the sizes of the suite: scale_long_test.go (build tag
// torture) and scale_short_test.go set them.
type scales struct {
	long          bool
	killTrials    int // SIGKILLs of a writing child
	killReplica   int // SIGKILLs of a replicating child
	powerTrials   int // power losses of a writer, per mode
	replicaPower  int // power losses of a replica
	faultBlocks   int // blocks in the feeds disk faults are injected into
	netReplicas   int // replicas converging over a faulty network
	netRounds     int // rounds of appends and network faults
	loadPeers     int // peers of the many-feeds load test
	loadFeeds     int // feeds of the many-feeds load test
	loadBlocks    int // blocks of each of those feeds
	fanoutReaders int // readers served at once by one writer
	fanoutBlocks  int // blocks of that writer's feed
	floodRequests int // requests a flooding peer sends
	openFlood     int // channels an opening peer opens
	crashSeeds    int // crashes of each state in the focused power-loss tests
	// stallWait is how long a test waits for progress before it calls a
	// replica stalled (and reports the bug that stalls it).
	stallWait time.Duration
}

func TestMain(m *testing.M) {
	if role := os.Getenv(childRoleEnv); role != "" {
		os.Exit(runChild(role))
	}
	code := m.Run()
	writeFigures()
	os.Exit(code)
}

// Figures are what the tests measured, for the README: logged as they
// come, and written to $TORTURE_FIGURES at the end.
var figures struct {
	mu    sync.Mutex
	lines []string
}

// figure logs a measurement under key and keeps it for the report.
func figure(t testing.TB, key, format string, args ...any) {
	t.Helper()
	line := key + ": " + fmt.Sprintf(format, args...)
	t.Log(line)
	figures.mu.Lock()
	figures.lines = append(figures.lines, line)
	figures.mu.Unlock()
}

func writeFigures() {
	name := os.Getenv("TORTURE_FIGURES")
	if name == "" {
		return
	}
	figures.mu.Lock()
	defer figures.mu.Unlock()
	sort.Strings(figures.lines)
	if err := os.WriteFile(name, []byte(strings.Join(figures.lines, "\n")+"\n"), 0o644); err != nil {
		fmt.Fprintln(os.Stderr, "torture: figures:", err)
	}
}

// mix is splitmix64: a cheap, good hash of a counter.
func mix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ x>>30) * 0xbf58476d1ce4e5b9
	x = (x ^ x>>27) * 0x94d049bb133111eb
	return x ^ x>>31
}

// blockFor is the block a writer of these tests writes at index i while on
// fork: which history wrote it shows in its bytes, so that a block of an
// abandoned fork is told from the block that replaced it. Sizes vary from
// a few bytes to 2 KiB, with one block in 500 over 256 KiB (an append
// holding it hashes on every core and writes meanwhile).
func blockFor(fork, i uint64) []byte {
	h := mix(fork<<40 ^ i)
	size := int(h % 2048)
	if h%500 == 0 {
		size = 256<<10 + int(h%8192)
	}
	b := fmt.Appendf(make([]byte, 0, size+32), "fork %d block %d;", fork, i)
	var w [8]byte
	binary.LittleEndian.PutUint64(w[:], h)
	for len(b) < size+24 {
		b = append(b, w[:]...)
	}
	return b
}

// blocksFor returns blocks [from, from+n) of fork.
func blocksFor(fork, from uint64, n int) [][]byte {
	out := make([][]byte, n)
	for k := range out {
		out[k] = blockFor(fork, from+uint64(k))
	}
	return out
}

// history is what a writer of these tests has written: its fork, and for
// each block, the fork that wrote it.
type history struct {
	fork uint64
	tags []uint64
}

func (h history) clone() history { return history{h.fork, slices.Clone(h.tags)} }

// op is one write of a writer: an append of n blocks, or a truncation to
// length.
type op struct {
	truncate bool
	n        int    // blocks appended
	length   uint64 // length truncated to
}

func (o op) String() string {
	if o.truncate {
		return fmt.Sprintf("truncate to %d", o.length)
	}
	return fmt.Sprintf("append %d", o.n)
}

// apply returns the history after o.
func (h history) apply(o op) history {
	h = h.clone()
	if o.truncate {
		h.tags = h.tags[:o.length]
		h.fork++
		return h
	}
	for range o.n {
		h.tags = append(h.tags, h.fork)
	}
	return h
}

// do performs o on a writable feed.
func (o op) do(f *feed.Feed, h history) error {
	if o.truncate {
		return f.Truncate(o.length)
	}
	_, err := f.Append(blocksFor(h.fork, uint64(len(h.tags)), o.n)...)
	return err
}

// historyOf reads a reopened writer's history back: the fork of each block
// from its bytes. It fails on a block whose bytes are not blockFor's.
func historyOf(f *feed.Feed) (history, error) {
	h := history{fork: f.Fork()}
	ctx := context.Background()
	for i := range f.Len() {
		b, err := f.Get(ctx, i)
		if err != nil {
			return h, err
		}
		var fork, idx uint64
		if _, err := fmt.Sscanf(string(b[:min(len(b), 64)]), "fork %d block %d;", &fork, &idx); err != nil || idx != i {
			return h, fmt.Errorf("block %d holds %q", i, b[:min(len(b), 40)])
		}
		if !bytes.Equal(b, blockFor(fork, i)) {
			return h, fmt.Errorf("block %d of fork %d is damaged", i, fork)
		}
		h.tags = append(h.tags, fork)
	}
	return h, nil
}

// checkWriter checks a reopened writer against what was acknowledged:
// its history is acked, or acked then the operation that was in flight (if
// any) when the process died or the power went, since an operation is all
// or nothing; err says how it is not. Verify's verdict comes apart, as
// verifyErr, so that a test can tell a feed that lost data from one that
// Verify finds fault with for other reasons.
func checkWriter(f *feed.Feed, acked history, inflight *op) (got history, verifyErr, err error) {
	verifyErr = f.Verify(context.Background())
	got, err = historyOf(f)
	if err != nil {
		return got, verifyErr, err
	}
	same := func(h history) bool { return h.fork == got.fork && slices.Equal(h.tags, got.tags) }
	if same(acked) || inflight != nil && same(acked.apply(*inflight)) {
		return got, verifyErr, nil
	}
	desc := "nothing in flight"
	if inflight != nil {
		desc = inflight.String() + " in flight"
	}
	return got, verifyErr, fmt.Errorf("reopened at fork %d length %d; acknowledged fork %d length %d (%s)",
		got.fork, len(got.tags), acked.fork, len(acked.tags), desc)
}

// memPeak samples the heap in use while it runs: the peak over a baseline
// taken (after a collection) when it starts.
type memPeak struct {
	base uint64
	peak uint64
	stop chan struct{}
	done chan struct{}
}

func startMemPeak() *memPeak {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	p := &memPeak{base: ms.HeapInuse, peak: ms.HeapInuse, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-p.stop:
				return
			case <-tick.C:
				var ms runtime.MemStats
				runtime.ReadMemStats(&ms)
				p.peak = max(p.peak, ms.HeapInuse)
			}
		}
	}()
	return p
}

// Stop ends the sampling and returns the peak heap in use over the
// baseline.
func (p *memPeak) Stop() uint64 {
	close(p.stop)
	<-p.done
	if p.peak < p.base {
		return 0
	}
	return p.peak - p.base
}

func mib(n uint64) float64 { return float64(n) / (1 << 20) }

// waitUntil polls cond until it holds or the deadline passes: polling with
// a deadline, not sleeping to synchronise.
func waitUntil(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", within, what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// noLeaks checks, when the test ends (after every cleanup registered
// later), that the goroutines it started are gone; those that were there
// when it began (another test's, a failed one's) are not its own.
func noLeaks(t *testing.T) {
	opt := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, opt) })
}

// requireSame checks that replica r holds the writer's head and every
// block.
func requireSame(t testing.TB, w, r *feed.Feed) {
	t.Helper()
	require.Equal(t, w.Head(), r.Head())
	ctx := context.Background()
	require.NoError(t, r.Verify(ctx))
	require.Equal(t, w.Len(), r.Downloaded())
	for i := range w.Len() {
		a, err := w.Get(ctx, i)
		require.NoError(t, err)
		b, err := r.Get(ctx, i)
		require.NoError(t, err)
		require.True(t, bytes.Equal(a, b), "block %d differs", i)
	}
}

// requireOnlyWriters checks that replica r verifies and that every block it
// holds is the writer's (when both are on the same fork).
func requireOnlyWriters(t testing.TB, w, r *feed.Feed) {
	t.Helper()
	ctx := context.Background()
	require.NoError(t, r.Verify(ctx))
	if r.Fork() != w.Fork() {
		return
	}
	require.LessOrEqual(t, r.Len(), w.Len())
	for i := range r.Len() {
		if !r.Has(i) {
			continue
		}
		a, err := w.Get(ctx, i)
		require.NoError(t, err)
		b, err := r.Get(ctx, i)
		require.NoError(t, err)
		require.True(t, bytes.Equal(a, b), "block %d is not the writer's", i)
	}
}
