package noiseconn

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"math"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func keyPair(t testing.TB) KeyPair {
	kp, err := GenerateKeyPair()
	require.NoError(t, err)
	return kp
}

// pair runs both sides of a handshake over a net.Pipe.
func pair(t testing.TB, a, b Config) (*Conn, *Conn, error, error) {
	t.Helper()
	ra, rb := net.Pipe()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	type res struct {
		c   *Conn
		err error
	}
	ch := make(chan res, 1)
	go func() {
		c, err := Handshake(ctx, rb, false, b)
		ch <- res{c, err}
	}()
	ca, errA := Handshake(ctx, ra, true, a)
	r := <-ch
	t.Cleanup(func() {
		if ca != nil {
			ca.Close()
		}
		if r.c != nil {
			r.c.Close()
		}
	})
	return ca, r.c, errA, r.err
}

func TestHandshakeAndStream(t *testing.T) {
	ka, kb := keyPair(t), keyPair(t)
	a, b, errA, errB := pair(t, Config{KeyPair: ka}, Config{KeyPair: kb})
	require.NoError(t, errA)
	require.NoError(t, errB)
	require.Equal(t, kb.Public, a.RemoteKey())
	require.Equal(t, ka.Public, b.RemoteKey())
	require.Equal(t, a.ChannelBinding(), b.ChannelBinding())
	require.Len(t, a.ChannelBinding(), 64)
	require.True(t, a.Initiator())
	require.False(t, b.Initiator())

	// Both directions at once, with writes larger than a frame.
	big := make([]byte, 3*MaxPlaintext+17)
	rand.Read(big)
	done := make(chan error, 1)
	go func() {
		got := make([]byte, len(big))
		if _, err := io.ReadFull(b, got); err != nil {
			done <- err
			return
		}
		if !bytes.Equal(got, big) {
			done <- errors.New("a→b stream differs")
			return
		}
		_, err := b.Write([]byte("pong"))
		done <- err
	}()
	_, err := a.Write(big)
	require.NoError(t, err)
	got := make([]byte, 4)
	_, err = io.ReadFull(a, got) // net.Pipe is unbuffered: read before waiting
	require.NoError(t, err)
	require.Equal(t, "pong", string(got))
	require.NoError(t, <-done)
}

func TestKeyPairFromPrivate(t *testing.T) {
	kp := keyPair(t)
	again, err := KeyPairFromPrivate(kp.Private)
	require.NoError(t, err)
	require.Equal(t, kp, again)
}

func TestNetworkSecret(t *testing.T) {
	secret := bytes.Repeat([]byte{1}, 32)
	other := bytes.Repeat([]byte{2}, 32)
	_, _, errA, errB := pair(t, Config{KeyPair: keyPair(t), Secret: secret}, Config{KeyPair: keyPair(t), Secret: secret})
	require.NoError(t, errA)
	require.NoError(t, errB)

	for _, c := range []struct {
		name string
		a, b []byte
	}{{"initiator lacks it", nil, secret}, {"responder lacks it", secret, nil}, {"different secrets", secret, other}} {
		_, _, errA, errB := pair(t, Config{KeyPair: keyPair(t), Secret: c.a}, Config{KeyPair: keyPair(t), Secret: c.b})
		require.ErrorIs(t, errB, ErrHandshake, c.name)
		require.Error(t, errA, c.name)
	}
	_, _, errA, _ = pair(t, Config{KeyPair: keyPair(t), Secret: []byte("short")}, Config{KeyPair: keyPair(t)})
	require.ErrorIs(t, errA, ErrHandshake)
}

func TestHandshakeContext(t *testing.T) {
	ra, rb := net.Pipe()
	defer rb.Close()
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		// A silent peer: read the first message and say nothing.
		buf := make([]byte, 100)
		rb.Read(buf)
		cancel()
	}()
	_, err := Handshake(ctx, ra, true, Config{KeyPair: keyPair(t)})
	require.ErrorIs(t, err, ErrHandshake)
	require.ErrorContains(t, err, "context canceled")
}

func TestGarbageBeforeHandshake(t *testing.T) {
	ra, rb := net.Pipe()
	go func() {
		rb.Write([]byte("GET / HTTP/1.1\r\n\r\n"))
		rb.Close()
	}()
	_, err := Handshake(context.Background(), ra, false, Config{KeyPair: keyPair(t)})
	require.ErrorIs(t, err, ErrHandshake)
}

// adversary completes a handshake with a, then hands back b's raw side for
// the test to write whatever it likes to a.
func adversary(t *testing.T) (*Conn, *Conn) {
	a, b, errA, errB := pair(t, Config{KeyPair: keyPair(t)}, Config{KeyPair: keyPair(t)})
	require.NoError(t, errA)
	require.NoError(t, errB)
	return a, b
}

func TestOversizeFrameRefused(t *testing.T) {
	a, b := adversary(t)
	go b.raw.Write([]byte{0xff, 0xff, 0x01}) // 131,071 bytes announced
	_, err := a.Read(make([]byte, 10))
	require.ErrorIs(t, err, ErrFrameTooLong)
	_, err = a.Read(make([]byte, 10))
	require.Error(t, err, "the connection is closed")
}

func TestGarbageFrameRefused(t *testing.T) {
	for _, n := range []int{0, 5, 16, 100, MaxFrame} {
		a, b := adversary(t)
		frame := make([]byte, headerSize+n)
		putU24(frame, n)
		rand.Read(frame[headerSize:])
		go b.raw.Write(frame)
		_, err := a.Read(make([]byte, 10))
		require.ErrorIs(t, err, ErrDecrypt, "%d-byte frame", n)
	}
}

func TestReplayedFrameRefused(t *testing.T) {
	a, b := adversary(t)
	// Capture one genuine frame and send it twice: the second has a stale
	// nonce and must not decrypt.
	var captured bytes.Buffer
	b.raw = teeConn{b.raw, &captured}
	go b.Write([]byte("once"))
	got := make([]byte, 4)
	_, err := io.ReadFull(a, got)
	require.NoError(t, err)
	go b.raw.Write(captured.Bytes())
	_, err = a.Read(got)
	require.ErrorIs(t, err, ErrDecrypt)
}

type teeConn struct {
	net.Conn
	w io.Writer
}

func (t teeConn) Write(p []byte) (int, error) {
	t.w.Write(p)
	return t.Conn.Write(p)
}

func TestNonceExhaustion(t *testing.T) {
	a, b := adversary(t)
	a.send.SetNonce(math.MaxUint64)
	_, err := a.Write([]byte("x"))
	require.Error(t, err)
	_, err = a.Write([]byte("x"))
	require.Error(t, err, "the session is over")

	b.recv.SetNonce(math.MaxUint64)
	go a.raw.Write([]byte{20, 0, 0})
	_, err = b.Read(make([]byte, 1))
	require.Error(t, err)
}

func FuzzRead(f *testing.F) {
	f.Add([]byte{0xff, 0xff, 0xff})
	f.Add([]byte{16, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16})
	f.Add([]byte{})
	ka, kb := keyPair(f), keyPair(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		a, b, errA, errB := pair(t, Config{KeyPair: ka}, Config{KeyPair: kb})
		if errA != nil || errB != nil {
			t.Fatal(errA, errB)
		}
		go func() {
			b.raw.Write(data)
			b.raw.Close()
		}()
		buf := make([]byte, 1024)
		for {
			if _, err := a.Read(buf); err != nil {
				return // any input ends in an error, never a panic or bad data
			}
			t.Fatal("random bytes decrypted")
		}
	})
}

// TestStreamPieces reads a stream written in pieces of many sizes into
// buffers of many sizes, and checks what stays after: no frame buffer. On
// the wire, a frame with its header is at most 64 KiB.
func TestStreamPieces(t *testing.T) {
	a, b := adversary(t)
	largest := make(chan int, 1)
	largest <- 0
	a.raw = sizeConn{a.raw, largest}
	sizes := []int{1, 3, 15, 16, 17, 100, smallBuffer - headerSize - tagSize, smallBuffer, WriteChunk - 1, WriteChunk, WriteChunk + 1, MaxPlaintext + 1, 3*WriteChunk + 5}
	var want []byte
	for _, n := range sizes {
		p := make([]byte, n)
		rand.Read(p)
		want = append(want, p...)
	}
	go func() {
		rest := want
		for _, n := range sizes {
			if _, err := a.Write(rest[:n]); err != nil {
				t.Error(err)
				return
			}
			rest = rest[n:]
		}
	}()
	var got []byte
	reads := []int{1, 4, 7, 100, smallBuffer, MaxFrame, MaxFrame + 100, 1 << 20}
	for i := 0; len(got) < len(want); i++ {
		p := make([]byte, reads[i%len(reads)])
		n, err := b.Read(p)
		require.NoError(t, err)
		got = append(got, p[:n]...)
	}
	require.Equal(t, want, got)
	require.Nil(t, b.rbuf, "a frame buffer kept after everything was read")
	require.LessOrEqual(t, <-largest, 64<<10)
}

// sizeConn records the largest write.
type sizeConn struct {
	net.Conn
	largest chan int
}

func (c sizeConn) Write(p []byte) (int, error) {
	c.largest <- max(<-c.largest, len(p))
	return c.Conn.Write(p)
}
