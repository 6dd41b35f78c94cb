package swarm

import (
	"context"
	"crypto/rand"
	"testing"
	"time"

	"github.com/hyperfeed/hyperfeed/feed"
	"github.com/stretchr/testify/require"
)

// benchReplicate measures a replica downloading a whole feed of n blocks of
// size bytes from a writer over TCP loopback with Noise, both in this
// process, as the Hypercore comparison does.
func benchReplicate(b *testing.B, n, size int) {
	w, err := feed.Open(b.TempDir(), nil)
	require.NoError(b, err)
	defer w.Close()
	block := make([]byte, size)
	rand.Read(block)
	batch := make([][]byte, 0, 1000)
	for i := 0; i < n; i++ {
		batch = append(batch, block)
		if len(batch) == cap(batch) || i == n-1 {
			_, err := w.Append(batch...)
			require.NoError(b, err)
			batch = batch[:0]
		}
	}
	rw := NewReplicator(w)
	defer rw.Close()
	b.SetBytes(int64(n * size))
	var total time.Duration
	runs := 0
	for b.Loop() {
		b.StopTimer()
		r, err := feed.Open(b.TempDir(), &feed.Options{Key: w.Key()})
		require.NoError(b, err)
		rr := NewReplicator(r)
		sa, sb := sessionPair(b, true, SessionConfig{}, SessionConfig{})
		b.StartTimer()
		start := time.Now()
		sa.Replicate(rw)
		sb.Replicate(rr)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		require.NoError(b, rr.Download(0, uint64(n)).Wait(ctx))
		cancel()
		total += time.Since(start)
		runs++
		b.StopTimer()
		sa.Close()
		sb.Close()
		rr.Close()
		r.Close()
		b.StartTimer()
	}
	b.ReportMetric(float64(n*runs)/total.Seconds(), "blocks/s")
}

func BenchmarkReplicate1KiB(b *testing.B)  { benchReplicate(b, 100_000, 1024) }
func BenchmarkReplicate64KiB(b *testing.B) { benchReplicate(b, 5_000, 64<<10) }
