package feed_test

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"testing"

	"github.com/hyperfeed/hyperfeed/feed"
)

const kib = 1 << 10

// benchFeedLimit is how many payload bytes a benchmark appends to one feed
// before replacing it, so that long runs (a big -benchtime, or -count) stay
// near a gigabyte of disk whatever b.N grows to.
const benchFeedLimit = 1 << 30

// benchIO counts what a feed asks of the disk. Wall time alone hides write
// amplification and how many fsyncs a commit costs, and those are what differ
// between machines.
type benchIO struct {
	written     atomic.Int64
	syncs       atomic.Int64
	headerSyncs atomic.Int64
}

type benchIOCounts struct{ written, syncs, headerSyncs int64 }

func (c *benchIO) snapshot() benchIOCounts {
	return benchIOCounts{c.written.Load(), c.syncs.Load(), c.headerSyncs.Load()}
}

func (c *benchIO) restore(s benchIOCounts) {
	c.written.Store(s.written)
	c.syncs.Store(s.syncs)
	c.headerSyncs.Store(s.headerSyncs)
}

// benchFS is the operating system's file system, counted.
type benchFS struct{ io *benchIO }

func (fsys benchFS) MkdirAll(dir string, perm os.FileMode) error { return os.MkdirAll(dir, perm) }

func (fsys benchFS) ReadDir(dir string) ([]os.DirEntry, error) { return os.ReadDir(dir) }

func (fsys benchFS) OpenFile(name string, flag int, perm os.FileMode) (feed.File, error) {
	f, err := os.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	// The header's syncs come two per commit round, which is how the group
	// commit's sharing shows.
	return &benchFile{File: f, io: fsys.io, header: filepath.Base(name) == "header"}, nil
}

// benchFile embeds *os.File rather than wrapping it so that Fd stays visible
// and the feed still takes its lock, as it would in production.
type benchFile struct {
	*os.File
	io     *benchIO
	header bool
}

func (f *benchFile) WriteAt(p []byte, off int64) (int, error) {
	n, err := f.File.WriteAt(p, off)
	f.io.written.Add(int64(n))
	return n, err
}

func (f *benchFile) Sync() error {
	f.io.syncs.Add(1)
	if f.header {
		f.io.headerSyncs.Add(1)
	}
	return f.File.Sync()
}

// benchBlocks returns n random blocks of size bytes, deterministic so that
// runs compare.
func benchBlocks(n, size int) [][]byte {
	buf := make([]byte, n*size)
	rand.NewChaCha8([32]byte{'b', 'e', 'n', 'c', 'h'}).Read(buf)
	blocks := make([][]byte, n)
	for i := range blocks {
		blocks[i] = buf[i*size : (i+1)*size : (i+1)*size]
	}
	return blocks
}

// reportRate reports perOp units per second of timed work.
func reportRate(b *testing.B, perOp float64, unit string) {
	if s := b.Elapsed().Seconds(); s > 0 && b.N > 0 {
		b.ReportMetric(float64(b.N)*perOp/s, unit)
	}
}

// benchWriter is a writable feed under a benchmark, replaced by an empty one
// whenever it reaches the size limit.
type benchWriter struct {
	b     *testing.B
	sync  bool
	limit uint64
	io    benchIO
	dir   string
	f     *feed.Feed
}

func newBenchWriter(b *testing.B, sync bool, limit uint64) *benchWriter {
	w := &benchWriter{b: b, sync: sync, limit: limit}
	w.open()
	b.Cleanup(func() { w.f.Close() })
	// What creating the feed wrote is not the appends' doing.
	w.io.restore(benchIOCounts{})
	return w
}

func (w *benchWriter) open() {
	w.dir = w.b.TempDir()
	f, err := feed.Open(w.dir, &feed.Options{Sync: w.sync, FS: benchFS{&w.io}})
	if err != nil {
		w.b.Fatal(err)
	}
	w.f = f
}

// append appends blocks. It is for one goroutine only: replacing the feed
// under concurrent writers would race with them.
func (w *benchWriter) append(blocks [][]byte) {
	if w.f.ByteLen() >= w.limit {
		w.b.StopTimer()
		saved := w.io.snapshot()
		if err := w.f.Close(); err != nil {
			w.b.Fatal(err)
		}
		if err := os.RemoveAll(w.dir); err != nil {
			w.b.Fatal(err)
		}
		w.open()
		w.io.restore(saved)
		w.b.StartTimer()
	}
	if _, err := w.f.Append(blocks...); err != nil {
		w.b.Fatal(err)
	}
}

// reportIO reports bytes written per payload byte, and fsyncs per operation
// in sync mode.
func (w *benchWriter) reportIO(payloadPerOp int) {
	if w.b.N == 0 {
		return
	}
	c := w.io.snapshot()
	w.b.ReportMetric(float64(c.written)/float64(w.b.N*payloadPerOp), "write-amp")
	if w.sync {
		w.b.ReportMetric(float64(c.syncs)/float64(w.b.N), "fsyncs/op")
	}
}

// One block per call: the cost of a signature, a header write and a bitfield
// page per block, which batching amortizes.
func BenchmarkAppendSingle1KiB(b *testing.B) {
	blk := benchBlocks(1, kib)
	w := newBenchWriter(b, false, benchFeedLimit)
	b.SetBytes(kib)
	for b.Loop() {
		w.append(blk)
	}
	reportRate(b, 1, "blocks/s")
	w.reportIO(kib)
}

// An op is one Append call of 1,000 blocks; blocks/s and MB/s count blocks.
func BenchmarkAppendBatch1KiB(b *testing.B) {
	const n = 1000
	blocks := benchBlocks(n, kib)
	w := newBenchWriter(b, false, benchFeedLimit)
	b.SetBytes(n * kib)
	for b.Loop() {
		w.append(blocks)
	}
	reportRate(b, n, "blocks/s")
	w.reportIO(n * kib)
}

// An op is one Append call of 1,000 blocks of 64 KiB (64 MB); the feed is
// replaced every benchFeedLimit bytes.
func BenchmarkAppendBatch64KiB(b *testing.B) {
	const n = 1000
	blocks := benchBlocks(n, 64*kib)
	w := newBenchWriter(b, false, benchFeedLimit)
	b.SetBytes(n * 64 * kib)
	for b.Loop() {
		w.append(blocks)
	}
	reportRate(b, n, "blocks/s")
	w.reportIO(n * 64 * kib)
}

// One block per call, each acknowledged only after its fsyncs: the latency a
// lone writer in sync mode sees.
func BenchmarkAppendSingleSync(b *testing.B) {
	blk := benchBlocks(1, kib)
	w := newBenchWriter(b, true, benchFeedLimit)
	b.SetBytes(kib)
	for b.Loop() {
		w.append(blk)
	}
	reportRate(b, 1, "blocks/s")
	w.reportIO(kib)
}

// Concurrent single-block appends in sync mode. appends/commit is how many
// appends one commit round (one header fsync pair) made durable: 1 without
// sharing, more as the group commit batches writers that arrive while a round
// runs.
func BenchmarkAppendSyncParallel(b *testing.B) {
	blk := benchBlocks(1, kib)
	for _, par := range []int{1, 4, 16} {
		b.Run(fmt.Sprintf("writers=%d", par*runtime.GOMAXPROCS(0)), func(b *testing.B) {
			// No size limit: the feed cannot be replaced under concurrent
			// writers, and fsyncs keep it small.
			w := newBenchWriter(b, true, math.MaxUint64)
			b.SetBytes(kib)
			b.SetParallelism(par)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := w.f.Append(blk...); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.StopTimer()
			reportRate(b, 1, "blocks/s")
			w.reportIO(kib)
			if rounds := w.io.headerSyncs.Load() / 2; rounds > 0 {
				b.ReportMetric(float64(b.N)/float64(rounds), "appends/commit")
			}
		})
	}
}

// benchReadFeed returns a writable feed of n random 1 KiB blocks.
func benchReadFeed(b *testing.B, n int) *feed.Feed {
	f, err := feed.Open(b.TempDir(), nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { f.Close() })
	// Batches reuse their blocks' contents; a read cannot tell, since each
	// block is checked against its own leaf whatever the others hold.
	batch := benchBlocks(1000, kib)
	for f.Len() < uint64(n) {
		if _, err := f.Append(batch[:min(len(batch), n-int(f.Len()))]...); err != nil {
			b.Fatal(err)
		}
	}
	return f
}

const benchReadBlocks = 100_000

func BenchmarkRandomRead1KiB(b *testing.B) {
	f := benchReadFeed(b, benchReadBlocks)
	rng := rand.New(rand.NewPCG(1, 2))
	ctx := context.Background()
	b.SetBytes(kib)
	for b.Loop() {
		if _, err := f.Get(ctx, rng.Uint64N(benchReadBlocks)); err != nil {
			b.Fatal(err)
		}
	}
	reportRate(b, 1, "reads/s")
}

// The feed is built once in the parent, which runs once, rather than again
// for every b.N the sub-benchmarks are ramped through.
func BenchmarkRandomRead1KiBParallel(b *testing.B) {
	f := benchReadFeed(b, benchReadBlocks)
	ctx := context.Background()
	for _, par := range []int{1, 4} {
		b.Run(fmt.Sprintf("readers=%d", par*runtime.GOMAXPROCS(0)), func(b *testing.B) {
			var seed atomic.Uint64
			b.SetBytes(kib)
			b.SetParallelism(par)
			b.RunParallel(func(pb *testing.PB) {
				rng := rand.New(rand.NewPCG(seed.Add(1), 3))
				for pb.Next() {
					if _, err := f.Get(ctx, rng.Uint64N(benchReadBlocks)); err != nil {
						b.Error(err)
						return
					}
				}
			})
			reportRate(b, 1, "reads/s")
		})
	}
}

// benchOpen times Open and Close of a feed of n 64-byte blocks. Open should
// not read the log, so the time should barely grow with n.
func benchOpen(b *testing.B, n int) {
	dir := b.TempDir()
	f, err := feed.Open(dir, nil)
	if err != nil {
		b.Fatal(err)
	}
	batch := benchBlocks(10_000, 64)
	for f.Len() < uint64(n) {
		if _, err := f.Append(batch[:min(len(batch), n-int(f.Len()))]...); err != nil {
			b.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		b.Fatal(err)
	}
	var io benchIO
	opts := &feed.Options{FS: benchFS{&io}}
	for b.Loop() {
		f, err := feed.Open(dir, opts)
		if err != nil {
			b.Fatal(err)
		}
		if err := f.Close(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(b.Elapsed().Seconds()*1e3/float64(b.N), "ms/open")
	// Opening should only read; anything written here is a write per open.
	b.ReportMetric(float64(io.written.Load())/float64(b.N), "written-B/open")
	f, err = feed.Open(dir, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	if f.Len() != uint64(n) {
		b.Fatalf("reopened feed holds %d blocks, want %d", f.Len(), n)
	}
}

func BenchmarkOpen(b *testing.B)     { benchOpen(b, 1_000_000) }
func BenchmarkOpen100k(b *testing.B) { benchOpen(b, 100_000) }

// An op is one block pulled by a replica, in order: its request, the
// writer's proof and the replica's verification and store, with no network.
// After the last block the replica starts over, empty.
func BenchmarkReplicate1KiB(b *testing.B) {
	const n = 10_000
	w, err := feed.Open(b.TempDir(), nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { w.Close() })
	batch := benchBlocks(1000, kib)
	for w.Len() < n {
		if _, err := w.Append(batch...); err != nil {
			b.Fatal(err)
		}
	}
	var (
		io   benchIO
		r    *feed.Feed
		rdir string
	)
	openReplica := func() {
		rdir = b.TempDir()
		if r, err = feed.Open(rdir, &feed.Options{Key: w.Key(), FS: benchFS{&io}}); err != nil {
			b.Fatal(err)
		}
	}
	openReplica()
	b.Cleanup(func() { r.Close() })
	io.restore(benchIOCounts{})

	var i uint64
	var nodes int
	b.SetBytes(kib)
	for b.Loop() {
		if i == n {
			b.StopTimer()
			if r.Downloaded() != n || r.Len() != n {
				b.Fatalf("replica holds %d of %d blocks", r.Downloaded(), r.Len())
			}
			saved := io.snapshot()
			if err := r.Close(); err != nil {
				b.Fatal(err)
			}
			if err := os.RemoveAll(rdir); err != nil {
				b.Fatal(err)
			}
			openReplica()
			io.restore(saved)
			i = 0
			b.StartTimer()
		}
		p, data, err := w.Prove(r.BlockRequest(i))
		if err != nil {
			b.Fatal(err)
		}
		if err := r.ApplyProof(p, data); err != nil {
			b.Fatal(err)
		}
		nodes += len(p.Block.Nodes)
		i++
	}
	reportRate(b, 1, "blocks/s")
	b.ReportMetric(float64(nodes)/float64(b.N), "proof-nodes/block")
	b.ReportMetric(float64(io.written.Load())/float64(b.N*kib), "write-amp")
}
