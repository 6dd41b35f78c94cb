package torture

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/hyperfeed/hyperfeed/feed"
	"github.com/hyperfeed/hyperfeed/internal/memnet"
	"github.com/hyperfeed/hyperfeed/swarm"
	"github.com/stretchr/testify/require"
)

// loadBlockSize is the size of the load tests' blocks.
const loadBlockSize = 1024

func loadBlocks(seed uint64, from, n int) [][]byte {
	out := make([][]byte, n)
	for k := range out {
		b := make([]byte, loadBlockSize)
		x := mix(seed<<32 ^ uint64(from+k))
		for j := range b {
			b[j] = byte(x >> (8 * (j % 8)))
		}
		copy(b, fmt.Sprintf("feed %d block %d;", seed, from+k))
		out[k] = b
	}
	return out
}

// goroutinePeak samples the goroutine count while it runs.
func goroutinePeak(stop <-chan struct{}) <-chan int {
	out := make(chan int, 1)
	go func() {
		peak := runtime.NumGoroutine()
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				out <- peak
				return
			case <-tick.C:
				peak = max(peak, runtime.NumGoroutine())
			}
		}
	}()
	return out
}

// TestLoadManyFeedsManyPeers replicates many feeds among many peers, every
// peer connected to every other over memnet, each feed written by one peer
// (of its store) and downloaded by all the others: every replica must
// converge. It reports the throughput, and the peak heap and goroutines.
func TestLoadManyFeedsManyPeers(t *testing.T) {
	noLeaks(t)
	peers, feeds, blocks := scale.loadPeers, scale.loadFeeds, scale.loadBlocks
	net := memnet.New(memnet.Config{})
	stores := make([]*feed.Store, peers)
	swarms := make([]*swarm.Swarm, peers)
	for p := range peers {
		st, err := feed.OpenStore(t.TempDir(), nil)
		require.NoError(t, err)
		t.Cleanup(func() { st.Close() })
		stores[p] = st
		swarms[p] = swarmOn(t, net, fmt.Sprintf("10.0.3.%d", p+1), st, swarm.Config{})
	}
	writers := make([]*feed.Feed, feeds)
	for i := range feeds {
		f, err := stores[i%peers].Named(fmt.Sprintf("feed-%d", i))
		require.NoError(t, err)
		_, err = f.Append(loadBlocks(uint64(i), 0, blocks)...)
		require.NoError(t, err)
		_, err = swarms[i%peers].Replicate(f)
		require.NoError(t, err)
		writers[i] = f
	}
	mem := startMemPeak()
	stop := make(chan struct{})
	gpeak := goroutinePeak(stop)
	start := time.Now()
	var downloads []*swarm.Download
	var replicas []*feed.Feed
	var pairs []int
	for p := range peers {
		for i, w := range writers {
			if i%peers == p {
				continue
			}
			r, err := stores[p].Get(w.Key())
			require.NoError(t, err)
			d, err := swarms[p].Download(r, 0, uint64(blocks))
			require.NoError(t, err)
			downloads = append(downloads, d)
			replicas = append(replicas, r)
			pairs = append(pairs, i)
		}
		for q := range p {
			require.NoError(t, swarms[p].Connect(swarms[q].Addr().String()))
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	for k, d := range downloads {
		require.NoError(t, d.Wait(ctx), "replica %d of feed %d", k, pairs[k])
	}
	took := time.Since(start)
	close(stop)
	peak, gs := mem.Stop(), <-gpeak
	for k, r := range replicas {
		requireSame(t, writers[pairs[k]], r)
	}
	total := len(downloads) * blocks
	figure(t, "load.manyfeeds", "%d feeds x %d peers (%d connections, %d replicas of %d blocks of %d B): converged in %v, %.0f blocks/s, %.1f MB/s in all; heap peak +%.0f MiB, %d goroutines at most",
		feeds, peers, peers*(peers-1)/2, len(downloads), blocks, loadBlockSize, took.Round(time.Millisecond),
		float64(total)/took.Seconds(), float64(total*loadBlockSize)/took.Seconds()/1e6, mib(peak), gs)
}

// TestLoadOneWriterManyReaders has one writer serve many readers at once,
// each a swarm connected only to the writer, over memnet: every reader
// must get the whole feed. It reports the writer's aggregate throughput
// and the peak heap.
func TestLoadOneWriterManyReaders(t *testing.T) {
	noLeaks(t)
	readers, blocks := scale.fanoutReaders, scale.fanoutBlocks
	net := memnet.New(memnet.Config{})
	w := openFeed(t, nil)
	for i := 0; i < blocks; i += 5000 {
		_, err := w.Append(loadBlocks(1, i, min(5000, blocks-i))...)
		require.NoError(t, err)
	}
	ws := swarmOn(t, net, "10.0.4.1", nil, swarm.Config{})
	_, err := ws.Replicate(w)
	require.NoError(t, err)
	rs := make([]*feed.Feed, readers)
	ds := make([]*swarm.Download, readers)
	sws := make([]*swarm.Swarm, readers)
	for i := range readers {
		rs[i] = openFeed(t, &feed.Options{Key: w.Key()})
		sws[i] = swarmOn(t, net, fmt.Sprintf("10.0.4.%d", i+2), nil, swarm.Config{})
		ds[i], err = sws[i].Download(rs[i], 0, uint64(blocks))
		require.NoError(t, err)
	}
	mem := startMemPeak()
	start := time.Now()
	for _, s := range sws {
		require.NoError(t, s.Connect(ws.Addr().String()))
	}
	var mu sync.Mutex
	var slowest, fastest time.Duration
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	errs := make([]error, readers)
	for i, d := range ds {
		wg.Go(func() {
			errs[i] = d.Wait(ctx)
			took := time.Since(start)
			mu.Lock()
			slowest = max(slowest, took)
			if fastest == 0 || took < fastest {
				fastest = took
			}
			mu.Unlock()
		})
	}
	wg.Wait()
	for i, err := range errs {
		require.NoError(t, err, "reader %d", i)
	}
	took := time.Since(start)
	peak := mem.Stop()
	for _, r := range rs {
		requireSame(t, w, r)
	}
	total := readers * blocks
	figure(t, "load.fanout", "1 writer serving %d readers at once (%d blocks of %d B each, %.0f MiB): all done in %v (first %v), %.0f blocks/s, %.1f MB/s served in all; heap peak +%.0f MiB",
		readers, blocks, loadBlockSize, float64(blocks*loadBlockSize)/(1<<20), took.Round(time.Millisecond), fastest.Round(time.Millisecond),
		float64(total)/took.Seconds(), float64(total*loadBlockSize)/took.Seconds()/1e6, mib(peak))
}

// TestLoadMemoryPerFeed measures the heap an open feed costs once it has
// served and stored a few proofs: what a store with many feeds, or a swarm
// replicating many, pays for each.
func TestLoadMemoryPerFeed(t *testing.T) {
	const blocks = 100
	n := scale.loadFeeds
	w := openFeed(t, nil)
	_, err := w.Append(loadBlocks(2, 0, blocks)...)
	require.NoError(t, err)
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	feeds := make([]*feed.Feed, n)
	for i := range feeds {
		f, err := feed.Open(t.TempDir(), &feed.Options{Key: w.Key()})
		require.NoError(t, err)
		for b := range uint64(4) {
			p, d, err := w.Prove(f.BlockRequest(b * 25))
			require.NoError(t, err)
			require.NoError(t, f.ApplyProof(p, d))
		}
		feeds[i] = f
	}
	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	per := float64(after.HeapInuse-before.HeapInuse) / float64(n)
	figure(t, "load.perfeed", "an open replica that has stored 4 blocks costs %.0f KiB of heap (%d feeds)", per/1024, n)
	for _, f := range feeds {
		require.NoError(t, f.Close())
	}
	runtime.KeepAlive(feeds)
}
