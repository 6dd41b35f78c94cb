package noiseconn

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// loopbackPair runs both sides of a handshake over TCP loopback.
func loopbackPair(b *testing.B) (*Conn, *Conn) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(b, err)
	defer ln.Close()
	ch := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		ch <- c
	}()
	ra, err := net.Dial("tcp", ln.Addr().String())
	require.NoError(b, err)
	rb := <-ch
	require.NotNil(b, rb)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	errs := make(chan error, 1)
	var cb *Conn
	go func() {
		var err error
		cb, err = Handshake(ctx, rb, false, Config{KeyPair: keyPair(b)})
		errs <- err
	}()
	ca, err := Handshake(ctx, ra, true, Config{KeyPair: keyPair(b)})
	require.NoError(b, err)
	require.NoError(b, <-errs)
	b.Cleanup(func() {
		ca.Close()
		cb.Close()
	})
	return ca, cb
}

// BenchmarkStream measures the stream over TCP loopback in writes of size
// bytes, read with a buffer of read bytes.
func BenchmarkStream(b *testing.B) {
	for _, c := range []struct {
		name        string
		write, read int
	}{
		{"write=64B/read=4KiB", 64, 4 << 10},
		{"write=64KiB/read=64KiB", 64 << 10, 64 << 10},
		{"write=1MiB/read=1MiB", 1 << 20, 1 << 20},
		{"write=1MiB/read=4KiB", 1 << 20, 4 << 10},
	} {
		b.Run(c.name, func(b *testing.B) {
			a, z := loopbackPair(b)
			p := make([]byte, c.write)
			b.SetBytes(int64(c.write))
			done := make(chan error, 1)
			go func() {
				buf := make([]byte, c.read)
				total := int64(b.N) * int64(c.write)
				for total > 0 {
					n, err := z.Read(buf[:min(int64(len(buf)), total)])
					if err != nil {
						done <- err
						return
					}
					total -= int64(n)
				}
				done <- nil
			}()
			for range b.N {
				if _, err := a.Write(p); err != nil {
					b.Fatal(err)
				}
			}
			require.NoError(b, <-done)
		})
	}
}
