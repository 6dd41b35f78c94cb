package memnet

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"golang.org/x/net/nettest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// connPair dials a connection from host a to a listener on host b.
func connPair(t testing.TB, n *Network) (client, server net.Conn) {
	t.Helper()
	ln, err := n.Listen("10.0.0.2:0")
	require.NoError(t, err)
	defer ln.Close()
	client, err = n.Dial(context.Background(), "10.0.0.1", ln.Addr().String())
	require.NoError(t, err)
	server, err = ln.Accept()
	require.NoError(t, err)
	return client, server
}

// TestConformance runs the x/net conformance suite for net.Conn: deadlines,
// Close during blocked calls, concurrent use, and data integrity.
func TestConformance(t *testing.T) {
	for name, f := range map[string]Faults{
		"clean": {},
		// Faults that keep the stream whole must keep it conformant.
		"latency and chunks": {Latency: time.Millisecond, Jitter: time.Millisecond, Chunk: 7},
	} {
		t.Run(name, func(t *testing.T) {
			nettest.TestConn(t, func() (c1, c2 net.Conn, stop func(), err error) {
				n := New(Config{Buffer: 4096})
				n.SetFaults(f)
				c1, c2 = connPair(t, n)
				return c1, c2, func() { c1.Close(); c2.Close() }, nil
			})
		})
	}
}

func TestSent(t *testing.T) {
	n := New(Config{})
	a, b := connPair(t, n)
	defer a.Close()
	defer b.Close()
	go a.Write(make([]byte, 300))
	_, err := io.ReadFull(b, make([]byte, 300))
	require.NoError(t, err)
	require.Equal(t, int64(300), n.Sent("10.0.0.1"))
	require.Zero(t, n.Sent("10.0.0.2"))
}

func TestCloseGivesEOFAfterData(t *testing.T) {
	n := New(Config{})
	a, b := connPair(t, n)
	_, err := a.Write([]byte("hello"))
	require.NoError(t, err)
	require.NoError(t, a.Close())
	got, err := io.ReadAll(b)
	require.NoError(t, err)
	require.Equal(t, "hello", string(got))
	_, err = b.Write([]byte("x"))
	require.ErrorIs(t, err, syscall.EPIPE, "writing to a peer that closed")
	require.NoError(t, b.Close())
	require.Zero(t, n.Conns())
}

// TestBackpressure: a writer whose peer does not read blocks once the
// buffer is full, and a write deadline fails it having written part.
func TestBackpressure(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := New(Config{Buffer: 1000})
		a, b := connPair(t, n)
		defer a.Close()
		defer b.Close()
		require.NoError(t, a.SetWriteDeadline(time.Now().Add(time.Second)))
		start := time.Now()
		k, err := a.Write(make([]byte, 2500))
		require.ErrorIs(t, err, os.ErrDeadlineExceeded)
		require.Equal(t, 1000, k, "as much as the buffer holds")
		require.Equal(t, time.Second, time.Since(start))

		// A reader makes room: a blocked write goes through.
		require.NoError(t, a.SetWriteDeadline(time.Time{}))
		done := make(chan error, 1)
		go func() {
			_, err := a.Write(make([]byte, 1500))
			done <- err
		}()
		synctest.Wait()
		select {
		case err := <-done:
			t.Fatalf("the write did not block: %v", err)
		default:
		}
		got, err := io.ReadFull(b, make([]byte, 2500))
		require.NoError(t, err)
		require.Equal(t, 2500, got)
		require.NoError(t, <-done)
	})
}

func TestLatencyKeepsOrder(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := New(Config{Seed: 1})
		n.SetFaults(Faults{Latency: 50 * time.Millisecond, Jitter: 100 * time.Millisecond})
		a, b := connPair(t, n)
		defer a.Close()
		defer b.Close()
		start := time.Now()
		var want []byte
		for i := range 100 {
			p := bytes.Repeat([]byte{byte(i)}, 10)
			want = append(want, p...)
			_, err := a.Write(p)
			require.NoError(t, err)
		}
		got, err := io.ReadAll(io.LimitReader(b, int64(len(want))))
		require.NoError(t, err)
		require.Equal(t, want, got)
		took := time.Since(start)
		require.GreaterOrEqual(t, took, 50*time.Millisecond)
		require.LessOrEqual(t, took, 150*time.Millisecond)
	})
}

func TestChunkRechunks(t *testing.T) {
	n := New(Config{Seed: 2})
	n.SetFaults(Faults{Chunk: 5})
	a, b := connPair(t, n)
	defer a.Close()
	defer b.Close()
	want := bytes.Repeat([]byte("0123456789"), 100)
	go a.Write(want)
	var got []byte
	buf := make([]byte, 100)
	reads := 0
	for len(got) < len(want) {
		k, err := b.Read(buf)
		require.NoError(t, err)
		require.LessOrEqual(t, k, 5)
		got = append(got, buf[:k]...)
		reads++
	}
	require.Equal(t, want, got)
	require.GreaterOrEqual(t, reads, len(want)/5)
	require.Equal(t, reads, n.Stats().Chunks)
}

func TestReorder(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := New(Config{HoldFor: 10 * time.Millisecond})
		n.SetFaults(Faults{Reorder: 1})
		a, b := connPair(t, n)
		defer a.Close()
		defer b.Close()
		// The first write is held and delivered after the second; the third
		// is held, and goes alone when nothing follows it.
		for _, p := range []string{"first.", "second.", "third."} {
			_, err := a.Write([]byte(p))
			require.NoError(t, err)
		}
		got, err := io.ReadAll(io.LimitReader(b, 19))
		require.NoError(t, err)
		require.Equal(t, "second.first.third.", string(got))
		require.Equal(t, 2, n.Stats().Reordered)
	})
}

func TestCorrupt(t *testing.T) {
	n := New(Config{Seed: 3})
	n.SetFaults(Faults{Corrupt: 1})
	a, b := connPair(t, n)
	defer a.Close()
	defer b.Close()
	want := make([]byte, 64)
	go a.Write(want)
	got := make([]byte, 64)
	_, err := io.ReadFull(b, got)
	require.NoError(t, err)
	flipped := 0
	for i := range got {
		for x := got[i] ^ want[i]; x != 0; x &= x - 1 {
			flipped++
		}
	}
	require.Equal(t, 1, flipped)
}

func TestResetFault(t *testing.T) {
	n := New(Config{})
	n.SetFaults(Faults{Reset: 1})
	a, b := connPair(t, n)
	defer a.Close()
	defer b.Close()
	_, err := a.Write([]byte("x"))
	require.ErrorIs(t, err, syscall.ECONNRESET)
	_, err = b.Read(make([]byte, 1))
	require.ErrorIs(t, err, syscall.ECONNRESET)
	require.Zero(t, n.Conns())
}

// TestPartition: a partition resets the connections across it and refuses
// dials across it until Heal; links inside a side are untouched.
func TestPartition(t *testing.T) {
	n := New(Config{})
	lnB, err := n.Listen("10.0.0.2:7000")
	require.NoError(t, err)
	defer lnB.Close()
	lnC, err := n.Listen("10.0.0.3:7000")
	require.NoError(t, err)
	defer lnC.Close()
	ctx := context.Background()
	ab, err := n.Dial(ctx, "10.0.0.1", "10.0.0.2:7000")
	require.NoError(t, err)
	defer ab.Close()
	ac, err := n.Dial(ctx, "10.0.0.1", "10.0.0.3:7000")
	require.NoError(t, err)
	defer ac.Close()
	ba, err := lnB.Accept()
	require.NoError(t, err)
	defer ba.Close()
	ca, err := lnC.Accept()
	require.NoError(t, err)
	defer ca.Close()

	blocked := make(chan error, 1)
	go func() {
		_, err := ba.Read(make([]byte, 1))
		blocked <- err
	}()
	n.Partition([]string{"10.0.0.1"}, []string{"10.0.0.2"})
	require.ErrorIs(t, <-blocked, syscall.ECONNRESET, "a blocked read fails at once")
	_, err = ab.Write([]byte("x"))
	require.ErrorIs(t, err, syscall.ECONNRESET)
	_, err = n.Dial(ctx, "10.0.0.1", "10.0.0.2:7000")
	require.ErrorIs(t, err, syscall.EHOSTUNREACH)
	_, err = n.Dial(ctx, "10.0.0.2", "10.0.0.1:1") // either way round
	require.ErrorIs(t, err, syscall.EHOSTUNREACH)

	// The other link works.
	go ac.Write([]byte("y"))
	_, err = io.ReadFull(ca, make([]byte, 1))
	require.NoError(t, err)

	n.Heal()
	again, err := n.Dial(ctx, "10.0.0.1", "10.0.0.2:7000")
	require.NoError(t, err)
	again.Close()
	s := n.Stats()
	require.Equal(t, 1, s.Resets)
	require.Equal(t, 2, s.Outs)
}

func TestBreak(t *testing.T) {
	n := New(Config{})
	a, b := connPair(t, n)
	defer a.Close()
	defer b.Close()
	require.Equal(t, 1, n.Break("10.0.0.2", "10.0.0.1"))
	_, err := b.Read(make([]byte, 1))
	require.ErrorIs(t, err, syscall.ECONNRESET)
	require.Zero(t, n.BreakAll())
}

func TestListenerClose(t *testing.T) {
	n := New(Config{})
	ln, err := n.Listen("h:1")
	require.NoError(t, err)
	_, err = n.Listen("h:1")
	require.ErrorIs(t, err, syscall.EADDRINUSE)
	queued, err := n.Dial(context.Background(), "g", "h:1")
	require.NoError(t, err)
	defer queued.Close()
	accepting := make(chan error, 1)
	require.NoError(t, ln.Close())
	go func() {
		_, err := ln.Accept()
		accepting <- err
	}()
	require.ErrorIs(t, <-accepting, net.ErrClosed)
	_, err = queued.Read(make([]byte, 1))
	require.ErrorIs(t, err, syscall.ECONNRESET, "a connection never accepted is reset")
	_, err = n.Dial(context.Background(), "g", "h:1")
	require.ErrorIs(t, err, syscall.ECONNREFUSED)
	require.Equal(t, "g", Host("g"))
	require.Equal(t, "h", Host("h:1"))
	var opErr *net.OpError
	require.True(t, errors.As(err, &opErr))
}
