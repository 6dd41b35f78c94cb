// Package noiseconn secures a byte stream with the Noise XX handshake
// (25519, ChaChaPoly, BLAKE2b) and frames the encrypted stream.
//
// # Handshake
//
// The prologue is Prologue, so peers of other protocols or versions fail the
// handshake. The three XX messages are sent as frames (below) with empty
// payloads. With a network secret, the pattern is XXpsk0 and the secret is
// the pre-shared key: a peer without it cannot finish the handshake, and
// learns nothing from trying. The handshake hash (ChannelBinding) names the
// session; capabilities bind to it.
//
// # Frames
//
//	u24le(len) ‖ ciphertext (len bytes, 16 ≤ len ≤ MaxFrame)
//
// Each frame carries at most MaxPlaintext bytes of the stream; Write puts
// WriteChunk bytes in each but the last of its frames, so that a full frame
// is 64 KiB on the wire. A length over MaxFrame is refused before anything is
// decrypted; a frame that fails to decrypt, and a nonce counter that runs
// out, close the connection.
//
// # Memory
//
// A connection spends most of its life idle, so a Conn keeps no buffer of
// its own between calls. Write encrypts each frame into a pooled buffer and
// returns it once the frame is written. Read decrypts a frame in place in
// the caller's buffer when that holds the whole frame, and otherwise in a
// pooled buffer that goes back to the pool once its last byte has been
// read. What stays is a 4 KiB buffer under the frames, so that a run of
// small frames costs one system call rather than two each.
package noiseconn

import (
	"bufio"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/flynn/noise"
)

// Prologue binds every handshake to this protocol and its version.
const Prologue = "hyperfeed/1"

// Frame limits.
const (
	tagSize      = 16
	MaxFrame     = 65535
	MaxPlaintext = MaxFrame - tagSize // 65,519
	headerSize   = 3

	// WriteChunk is how much of the stream Write puts in one frame: a full
	// frame and its header are then 64 KiB. A buffered writer above a Conn
	// makes the fewest frames and system calls by flushing WriteChunk
	// bytes at a time.
	WriteChunk = bigBuffer - headerSize - tagSize // 65,517
)

// Buffer sizes.
const (
	// readBuffer is the buffer under the frames that a Conn keeps for its
	// whole life. Frames are read whole, into the caller's buffer or a
	// pooled one: this only saves the system call for a small frame's
	// header, and a large frame that finds it empty skips it.
	readBuffer = 4 << 10
	// smallBuffer and bigBuffer are the sizes of pooled frame buffers. A
	// bigBuffer holds a full frame that Write makes, with its header, and
	// the ciphertext of the largest frame that Read takes (MaxFrame): a
	// frame's header is read on its own.
	smallBuffer = 4 << 10
	bigBuffer   = 64 << 10
)

var (
	smallBuffers = sync.Pool{New: func() any { b := make([]byte, smallBuffer); return &b }}
	bigBuffers   = sync.Pool{New: func() any { b := make([]byte, bigBuffer); return &b }}
)

// getBuffer returns a pooled buffer of at least n ≤ bigBuffer bytes.
func getBuffer(n int) *[]byte {
	if n <= smallBuffer {
		return smallBuffers.Get().(*[]byte)
	}
	return bigBuffers.Get().(*[]byte)
}

// putBuffer returns a buffer from getBuffer to its pool. Nothing may use it
// after.
func putBuffer(b *[]byte) {
	if cap(*b) == smallBuffer {
		smallBuffers.Put(b)
	} else {
		bigBuffers.Put(b)
	}
}

// Errors, wrapped with detail.
var (
	ErrHandshake    = errors.New("noiseconn: handshake failed")
	ErrFrameTooLong = errors.New("noiseconn: frame too long")
	ErrDecrypt      = errors.New("noiseconn: frame failed to decrypt")
)

var suite = noise.NewCipherSuite(noise.DH25519, noise.CipherChaChaPoly, noise.HashBLAKE2b)

// KeyPair is a peer's static Noise key pair: its identity.
type KeyPair struct {
	Private [32]byte
	Public  [32]byte
}

// GenerateKeyPair returns a fresh random key pair.
func GenerateKeyPair() (KeyPair, error) {
	k, err := suite.GenerateKeypair(rand.Reader)
	if err != nil {
		return KeyPair{}, err
	}
	var kp KeyPair
	copy(kp.Private[:], k.Private)
	copy(kp.Public[:], k.Public)
	return kp, nil
}

// KeyPairFromPrivate derives the key pair of a private key.
func KeyPairFromPrivate(priv [32]byte) (KeyPair, error) {
	pub, err := noise.DH25519.DH(priv[:], basepoint[:])
	if err != nil {
		return KeyPair{}, err
	}
	kp := KeyPair{Private: priv}
	copy(kp.Public[:], pub)
	return kp, nil
}

var basepoint = [32]byte{9}

// Config configures a handshake.
type Config struct {
	KeyPair KeyPair
	// Secret, if set, is a 32-byte network secret both sides must hold.
	Secret []byte
}

// Conn is an encrypted, framed stream over a net.Conn. Read and Write may
// be called from one goroutine each at the same time.
type Conn struct {
	raw       net.Conn
	br        *bufio.Reader
	remote    [32]byte
	binding   []byte
	initiator bool

	rmu     sync.Mutex
	recv    *noise.CipherState
	rbuf    *[]byte // pooled buffer pending is in, or nil
	pending []byte  // decrypted bytes not yet read

	wmu    sync.Mutex
	send   *noise.CipherState
	werr   error
	close  sync.Once
	broken atomic.Pointer[error] // why the peer's frames closed the connection
}

// Broken returns the error that made this side close the connection
// because of what the peer sent (an oversize or undecryptable frame), or
// nil. A write that fails because of that close can then be blamed on the
// peer.
func (c *Conn) Broken() error {
	if p := c.broken.Load(); p != nil {
		return *p
	}
	return nil
}

func (c *Conn) breakOff(err error) error {
	c.broken.CompareAndSwap(nil, &err)
	c.Close()
	return err
}

// Handshake runs the Noise XX handshake over raw as the initiator (the side
// that dialled) or the responder, until ctx ends. On failure raw is closed.
func Handshake(ctx context.Context, raw net.Conn, initiator bool, cfg Config) (*Conn, error) {
	c, err := handshake(ctx, raw, initiator, cfg)
	if err != nil {
		raw.Close()
		return nil, fmt.Errorf("%w: %v", ErrHandshake, err)
	}
	return c, nil
}

func handshake(ctx context.Context, raw net.Conn, initiator bool, cfg Config) (*Conn, error) {
	if cfg.Secret != nil && len(cfg.Secret) != 32 {
		return nil, fmt.Errorf("network secret is %d bytes, want 32", len(cfg.Secret))
	}
	// A context that ends interrupts the blocking reads and writes below.
	stop := context.AfterFunc(ctx, func() { raw.SetDeadline(time.Unix(1, 0)) })
	defer func() {
		if stop() {
			raw.SetDeadline(time.Time{})
		}
	}()
	nc := noise.Config{
		CipherSuite:   suite,
		Random:        rand.Reader,
		Pattern:       noise.HandshakeXX,
		Initiator:     initiator,
		Prologue:      []byte(Prologue),
		StaticKeypair: noise.DHKey{Private: cfg.KeyPair.Private[:], Public: cfg.KeyPair.Public[:]},
	}
	if cfg.Secret != nil {
		nc.PresharedKey = cfg.Secret
		nc.PresharedKeyPlacement = 0
	}
	hs, err := noise.NewHandshakeState(nc)
	if err != nil {
		return nil, err
	}
	c := &Conn{raw: raw, br: bufio.NewReaderSize(raw, readBuffer), initiator: initiator}
	var cs1, cs2 *noise.CipherState
	for step := range 3 {
		if (step%2 == 0) == initiator {
			msg, a, b, err := hs.WriteMessage(nil, nil)
			if err != nil {
				return nil, err
			}
			if err := writeFrame(raw, msg); err != nil {
				return nil, err
			}
			cs1, cs2 = a, b
		} else {
			n, err := c.readHeader()
			if err != nil {
				return nil, ctxErr(ctx, err)
			}
			frame := make([]byte, n)
			if _, err := io.ReadFull(c.br, frame); err != nil {
				return nil, ctxErr(ctx, err)
			}
			if _, cs1, cs2, err = hs.ReadMessage(nil, frame); err != nil {
				return nil, fmt.Errorf("message %d: %w", step+1, err)
			}
		}
	}
	if cs1 == nil || cs2 == nil {
		return nil, errors.New("handshake did not complete")
	}
	if initiator {
		c.send, c.recv = cs1, cs2
	} else {
		c.send, c.recv = cs2, cs1
	}
	copy(c.remote[:], hs.PeerStatic())
	c.binding = hs.ChannelBinding()
	return c, nil
}

func writeFrame(w io.Writer, payload []byte) error {
	if len(payload) > MaxFrame {
		return fmt.Errorf("%w: %d bytes", ErrFrameTooLong, len(payload))
	}
	b := make([]byte, headerSize+len(payload))
	putU24(b, len(payload))
	copy(b[headerSize:], payload)
	_, err := w.Write(b)
	return err
}

func putU24(b []byte, n int) { b[0], b[1], b[2] = byte(n), byte(n>>8), byte(n>>16) }

// readHeader reads a frame's header and returns the length of its
// ciphertext, which follows. The caller holds rmu or is the handshake.
func (c *Conn) readHeader() (int, error) {
	var h [headerSize]byte
	if _, err := io.ReadFull(c.br, h[:]); err != nil {
		return 0, err
	}
	n := int(h[0]) | int(h[1])<<8 | int(h[2])<<16
	if n > MaxFrame {
		return 0, fmt.Errorf("%w: %d bytes announced, at most %d", ErrFrameTooLong, n, MaxFrame)
	}
	return n, nil
}

func ctxErr(ctx context.Context, err error) error {
	if ctx != nil && ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

// RemoteKey returns the peer's static public key: its identity.
func (c *Conn) RemoteKey() [32]byte { return c.remote }

// ChannelBinding returns the handshake hash, unique to this session.
func (c *Conn) ChannelBinding() []byte { return c.binding }

// Initiator reports whether this side dialled.
func (c *Conn) Initiator() bool { return c.initiator }

// Read reads decrypted bytes of the stream. A p that can hold a whole frame's
// ciphertext receives the frame and its plaintext, without a copy; all of p
// may then be overwritten, though only the n bytes returned are the stream.
func (c *Conn) Read(p []byte) (int, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	for len(c.pending) == 0 {
		n, err := c.readHeader()
		if err != nil {
			if errors.Is(err, ErrFrameTooLong) {
				return 0, c.breakOff(err)
			}
			return 0, err
		}
		if n < tagSize {
			return 0, c.breakOff(fmt.Errorf("%w: %d-byte frame", ErrDecrypt, n))
		}
		direct := len(p) >= n
		var f []byte
		if direct {
			f = p[:n]
		} else {
			c.rbuf = getBuffer(n)
			f = (*c.rbuf)[:n]
		}
		if _, err := io.ReadFull(c.br, f); err != nil {
			c.release()
			return 0, err
		}
		// Decrypt in place: the plaintext is shorter than the ciphertext.
		pt, err := c.recv.Decrypt(f[:0], nil, f)
		if err != nil {
			c.release()
			return 0, c.breakOff(fmt.Errorf("%w: %v", ErrDecrypt, err))
		}
		if direct {
			if len(pt) > 0 {
				return len(pt), nil
			}
			continue // an empty frame
		}
		c.pending = pt
		if len(pt) == 0 {
			c.release()
		}
	}
	n := copy(p, c.pending)
	c.pending = c.pending[n:]
	if len(c.pending) == 0 {
		c.release()
	}
	return n, nil
}

// release returns the buffer of pending to its pool. The caller holds rmu.
func (c *Conn) release() {
	if c.rbuf != nil {
		putBuffer(c.rbuf)
		c.rbuf, c.pending = nil, nil
	}
}

// Write encrypts p into frames of WriteChunk bytes and a last one of the
// rest, and writes each to the underlying connection in one call.
func (c *Conn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.werr != nil {
		return 0, c.werr
	}
	n := 0
	for n < len(p) {
		chunk := p[n:min(len(p), n+WriteChunk)]
		buf := getBuffer(headerSize + len(chunk) + tagSize)
		out, err := c.send.Encrypt((*buf)[:headerSize], nil, chunk)
		if err != nil {
			// Only nonce exhaustion fails here: the session is over.
			putBuffer(buf)
			c.werr = err
			c.Close()
			return n, err
		}
		putU24(out, len(out)-headerSize)
		_, err = c.raw.Write(out)
		putBuffer(buf)
		if err != nil {
			c.werr = err
			return n, err
		}
		n += len(chunk)
	}
	return n, nil
}

// Close closes the underlying connection.
func (c *Conn) Close() error {
	var err error
	c.close.Do(func() { err = c.raw.Close() })
	return err
}

// SetDeadline, SetReadDeadline and SetWriteDeadline set the underlying
// connection's deadlines.
func (c *Conn) SetDeadline(t time.Time) error      { return c.raw.SetDeadline(t) }
func (c *Conn) SetReadDeadline(t time.Time) error  { return c.raw.SetReadDeadline(t) }
func (c *Conn) SetWriteDeadline(t time.Time) error { return c.raw.SetWriteDeadline(t) }

// LocalAddr and RemoteAddr return the underlying connection's addresses.
func (c *Conn) LocalAddr() net.Addr  { return c.raw.LocalAddr() }
func (c *Conn) RemoteAddr() net.Addr { return c.raw.RemoteAddr() }
