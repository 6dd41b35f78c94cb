package wire

import (
	"bytes"
	"context"
	"net"
	"runtime"
	"testing"
	"time"

	"github.com/hyperfeed/hyperfeed/internal/noiseconn"
	"github.com/stretchr/testify/require"
)

// end is one side of a connection as swarm runs it: a noiseconn.Conn with a
// Reader in its own goroutine and a Writer.
type end struct {
	c    *noiseconn.Conn
	w    *Writer
	got  chan Message
	done chan error
}

func newEnd(c *noiseconn.Conn) *end {
	e := &end{c: c, w: NewWriter(c), got: make(chan Message, 16), done: make(chan error, 1)}
	go func() {
		r := NewReader(c)
		for {
			m, err := r.Read()
			if err != nil {
				e.done <- err
				return
			}
			e.got <- m
		}
	}()
	return e
}

func (e *end) close() error {
	e.c.Close()
	return <-e.done
}

// connPair connects two ends over raw, which dial makes: a net.Pipe or TCP
// loopback.
func connPair(tb testing.TB, dial func() (net.Conn, net.Conn), ka, kb noiseconn.KeyPair) (*end, *end) {
	tb.Helper()
	ra, rb := dial()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ch := make(chan error, 1)
	var cb *noiseconn.Conn
	go func() {
		var err error
		cb, err = noiseconn.Handshake(ctx, rb, false, noiseconn.Config{KeyPair: kb})
		ch <- err
	}()
	ca, err := noiseconn.Handshake(ctx, ra, true, noiseconn.Config{KeyPair: ka})
	require.NoError(tb, err)
	require.NoError(tb, <-ch)
	return newEnd(ca), newEnd(cb)
}

func pipe() (net.Conn, net.Conn) { return net.Pipe() }

// loopback returns a dial that connects over TCP loopback.
func loopback(tb testing.TB) func() (net.Conn, net.Conn) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(tb, err)
	tb.Cleanup(func() { ln.Close() })
	return func() (net.Conn, net.Conn) {
		ch := make(chan net.Conn, 1)
		go func() {
			c, err := ln.Accept()
			require.NoError(tb, err)
			ch <- c
		}()
		a, err := net.Dial("tcp", ln.Addr().String())
		require.NoError(tb, err)
		return a, <-ch
	}
}

// exchange sends m from a to b and waits for it.
func exchange(tb testing.TB, a, b *end, m Message) {
	tb.Helper()
	sent := make(chan error, 1)
	go func() {
		err := a.w.Write(m)
		if err == nil {
			err = a.w.Flush()
		}
		sent <- err
	}()
	select {
	case got := <-b.got:
		require.Equal(tb, m.Type(), got.Type())
	case err := <-b.done:
		tb.Fatal(err)
	}
	require.NoError(tb, <-sent)
}

func heapAlloc() uint64 {
	var ms runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// BenchmarkIdleConn measures the heap an idle connection end holds, as
// B/conn: its noiseconn.Conn, a Reader blocked in Read and a Writer, over
// net.Pipe, after a ping each way ("ping"), or after a 64 KiB block each way
// and then a ping ("block").
func BenchmarkIdleConn(b *testing.B) {
	const pairs = 200
	ka, kb := mustKeyPair(b), mustKeyPair(b)
	block := &Data{Channel: 1, ID: 1, Block: &BlockData{Index: 1, Value: make([]byte, 64<<10), Nodes: make([]byte, 10*NodeSize)}}
	for _, c := range []struct {
		name  string
		first []Message
	}{
		{"ping", []Message{&Ping{Nonce: 1}}},
		{"block", []Message{block, &Ping{Nonce: 1}}},
	} {
		b.Run(c.name, func(b *testing.B) {
			var per float64
			runs := 0
			for b.Loop() {
				ends := make([]*end, 0, 2*pairs)
				before := heapAlloc()
				for range pairs {
					x, y := connPair(b, pipe, ka, kb)
					for _, m := range c.first {
						exchange(b, x, y, m)
						exchange(b, y, x, m)
					}
					ends = append(ends, x, y)
				}
				after := heapAlloc()
				per += float64(int64(after)-int64(before)) / float64(len(ends))
				runs++
				for _, e := range ends {
					e.close()
				}
			}
			b.ReportMetric(per/float64(runs), "B/conn")
		})
	}
}

func mustKeyPair(tb testing.TB) noiseconn.KeyPair {
	kp, err := noiseconn.GenerateKeyPair()
	require.NoError(tb, err)
	return kp
}

// BenchmarkStream measures messages from one end to the other over Noise on
// TCP loopback, flushed every batch messages, as a session sends a burst of
// blocks.
func BenchmarkStream(b *testing.B) {
	for _, c := range []struct {
		name  string
		size  int
		batch int
	}{
		{"ping", 0, 1},
		{"1KiB", 1 << 10, 64},
		{"64KiB", 64 << 10, 16},
	} {
		b.Run(c.name, func(b *testing.B) {
			x, y := connPair(b, loopback(b), mustKeyPair(b), mustKeyPair(b))
			defer y.close()
			defer x.close()
			var m Message = &Ping{Nonce: 1}
			if c.size > 0 {
				m = &Data{Channel: 1, ID: 1, Block: &BlockData{Index: 1, Value: bytes.Repeat([]byte{1}, c.size), Nodes: make([]byte, 12*NodeSize)}}
				b.SetBytes(int64(c.size))
			}
			sent := make(chan error, 1)
			go func() {
				for i := range b.N {
					if err := x.w.Write(m); err != nil {
						sent <- err
						return
					}
					if (i+1)%c.batch == 0 || i == b.N-1 {
						if err := x.w.Flush(); err != nil {
							sent <- err
							return
						}
					}
				}
				sent <- nil
			}()
			for range b.N {
				select {
				case <-y.got:
				case err := <-y.done:
					b.Fatal(err)
				}
			}
			require.NoError(b, <-sent)
		})
	}
}
