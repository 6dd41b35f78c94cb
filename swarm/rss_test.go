package swarm

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hyperfeed/hyperfeed/feed"
	"github.com/stretchr/testify/require"
)

// rssChildEnv tells a test binary started by benchReaderRSS to be the
// reader: "addr key blocks".
const rssChildEnv = "HYPERFEED_RSS_READER"

// benchReaderRSS measures the peak resident memory of a reader downloading
// a whole feed of n blocks of size bytes over TCP loopback. The reader runs
// in a child process, so that its peak (VmHWM) is its own and not the
// writer's or the benchmark's.
func benchReaderRSS(b *testing.B, n, size int) {
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
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(b, err)
	defer ln.Close()

	var peak float64
	for b.Loop() {
		served := make(chan error, 1)
		go func() {
			conn, err := ln.Accept()
			if err != nil {
				served <- err
				return
			}
			s, err := NewSession(context.Background(), conn, false, SessionConfig{KeyPair: testKeyPair(b)})
			if err != nil {
				served <- err
				return
			}
			s.Replicate(rw)
			<-s.Done() // the reader hangs up when it has everything
			served <- nil
		}()
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s %s %d", rssChildEnv, ln.Addr(), w.Key(), n))
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		require.NoError(b, err, "reader: %s", stderr.String())
		require.NoError(b, <-served)
		kib, err := strconv.ParseFloat(strings.TrimSpace(string(out)), 64)
		require.NoError(b, err, "reader said %q", out)
		peak = max(peak, kib/1024)
	}
	b.ReportMetric(peak, "peak-RSS-MiB")
}

func BenchmarkReaderRSS1KiB(b *testing.B)  { benchReaderRSS(b, 100_000, 1024) }
func BenchmarkReaderRSS64KiB(b *testing.B) { benchReaderRSS(b, 5_000, 64<<10) }

// rssReader is the child's side of benchReaderRSS: it downloads the feed
// and prints its peak resident set in KiB.
func rssReader(arg string) error {
	var addr, key string
	var n uint64
	if _, err := fmt.Sscan(arg, &addr, &key, &n); err != nil {
		return err
	}
	k, err := feed.ParseKey(key)
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "hyperfeed-rss-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	f, err := feed.Open(dir, &feed.Options{Key: k})
	if err != nil {
		return err
	}
	defer f.Close()
	r := NewReplicator(f)
	defer r.Close()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	kp, err := GenerateKeyPair()
	if err != nil {
		return err
	}
	s, err := NewSession(ctx, conn, true, SessionConfig{KeyPair: kp})
	if err != nil {
		return err
	}
	defer s.Close()
	s.Replicate(r)
	if err := r.Download(0, n).Wait(ctx); err != nil {
		return err
	}
	hwm, err := peakRSS()
	if err != nil {
		return err
	}
	fmt.Println(hwm)
	return nil
}

// peakRSS returns this process's VmHWM in KiB.
func peakRSS() (int, error) {
	status, err := os.Open("/proc/self/status")
	if err != nil {
		return 0, err
	}
	defer status.Close()
	sc := bufio.NewScanner(status)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			return strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
		}
	}
	return 0, fmt.Errorf("no VmHWM in /proc/self/status")
}
