// Package wire is the message layer of the replication protocol: typed
// messages encoded with msgpack, framed on a byte stream (the encrypted
// stream of package noiseconn).
//
// # Framing
//
//	u32le(n) ‖ type (1 byte) ‖ msgpack body (n-1 bytes),   1 ≤ n ≤ MaxMessage
//
// A frame longer than MaxMessage is refused before it is read; a body is
// decoded with bounded allocation and checked by its message's Validate, so
// nothing malformed reaches the protocol. Bodies are msgpack arrays (struct
// fields in order), so adding a field at the end stays compatible.
//
// Nothing that is hashed or signed is msgpack: proofs carry merkle nodes,
// whose hashes are over merkle's canonical layouts.
//
// # Memory
//
// Most connections are idle most of the time, so neither end keeps a buffer
// between messages. A Writer takes its buffers from pools at its first Write
// after a Flush and returns them at the Flush. A Reader does not buffer: it
// reads a frame's header and then its body straight from the stream, which
// should be buffered itself (a noiseconn.Conn reads whole frames). Each
// message gets a body of its own, since a decoded message points into it.
package wire

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/hashicorp/go-msgpack/v2/codec"
	"github.com/hyperfeed/hyperfeed/internal/noiseconn"
)

// MaxMessage bounds a frame: a largest block (16 MiB) with its proof fits.
const MaxMessage = 16<<20 + 64<<10

// Errors, wrapped with detail.
var (
	ErrTooLarge  = errors.New("wire: message too large")
	ErrMalformed = errors.New("wire: malformed message")
)

// Type is a message's type byte.
type Type byte

// The message types.
const (
	TypeOpen Type = iota + 1
	TypeClose
	TypeSync
	TypeRange
	TypeBitfield
	TypeRequest
	TypeData
	TypeNoData
	TypeCancel
	TypePing
	TypePong
	TypeExtension
)

// Message is one protocol message.
type Message interface {
	Type() Type
	// Validate checks what msgpack cannot: lengths of keys and hashes,
	// ranges, and the limits that keep a peer from making us allocate.
	Validate() error
}

func newMessage(t Type) (Message, error) {
	switch t {
	case TypeOpen:
		return &Open{}, nil
	case TypeClose:
		return &Close{}, nil
	case TypeSync:
		return &Sync{}, nil
	case TypeRange:
		return &Range{}, nil
	case TypeBitfield:
		return &Bitfield{}, nil
	case TypeRequest:
		return &Request{}, nil
	case TypeData:
		return &Data{}, nil
	case TypeNoData:
		return &NoData{}, nil
	case TypeCancel:
		return &Cancel{}, nil
	case TypePing:
		return &Ping{}, nil
	case TypePong:
		return &Pong{}, nil
	case TypeExtension:
		return &Extension{}, nil
	}
	return nil, fmt.Errorf("%w: unknown type %d", ErrMalformed, t)
}

func handle() *codec.MsgpackHandle {
	h := &codec.MsgpackHandle{WriteExt: true}
	h.StructToArray = true
	// A length prefix inside a body may claim anything; allocate for what
	// the bytes can hold, growing as they are really read.
	h.MaxInitLen = 4096
	return h
}

// writeBuffer is how much a Writer buffers before it writes to the stream:
// a full buffer fills one noiseconn frame.
const writeBuffer = noiseconn.WriteChunk

// Pools of a Writer's buffers while it has messages to flush: the buffer of
// frames, and the scratch a body is encoded into, which grows to the largest
// message.
var (
	writeBuffers = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, writeBuffer) }}
	bodies       = sync.Pool{New: func() any { return new([]byte) }}
)

// noBytes is a non-nil empty slice, for an encoder or decoder to point at
// when it is not in use, rather than at the last body.
var noBytes = []byte{}

// Writer writes messages to a stream, buffered: call Flush to send.
type Writer struct {
	dst  io.Writer
	w    *bufio.Writer // from writeBuffers, or nil
	body *[]byte       // from bodies, or nil
	none []byte        // noBytes, for enc between Flush and Write
	enc  *codec.Encoder
}

// NewWriter returns a Writer on w.
func NewWriter(w io.Writer) *Writer {
	wr := &Writer{dst: w, none: noBytes}
	wr.enc = codec.NewEncoderBytes(&wr.none, handle())
	return wr
}

// Write encodes m into the buffer, flushing it to the stream when full.
func (w *Writer) Write(m Message) error {
	if w.w == nil {
		w.w = writeBuffers.Get().(*bufio.Writer)
		w.w.Reset(w.dst)
		w.body = bodies.Get().(*[]byte)
	}
	*w.body = (*w.body)[:0]
	w.enc.ResetBytes(w.body)
	if err := w.enc.Encode(m); err != nil {
		return fmt.Errorf("wire: encode %T: %w", m, err)
	}
	body := *w.body
	n := len(body) + 1
	if n > MaxMessage {
		return fmt.Errorf("%w: %T of %d bytes", ErrTooLarge, m, n)
	}
	var hdr [5]byte
	binary.LittleEndian.PutUint32(hdr[:], uint32(n))
	hdr[4] = byte(m.Type())
	if _, err := w.w.Write(hdr[:]); err != nil {
		return err
	}
	_, err := w.w.Write(body)
	return err
}

// Buffered returns the bytes waiting for Flush.
func (w *Writer) Buffered() int {
	if w.w == nil {
		return 0
	}
	return w.w.Buffered()
}

// Flush sends what is buffered. Once that succeeds, the Writer holds no
// buffer until its next Write.
func (w *Writer) Flush() error {
	if w.w == nil {
		return nil
	}
	if err := w.w.Flush(); err != nil {
		return err // kept, as the buffer's error, for every call after
	}
	w.w.Reset(nil)
	writeBuffers.Put(w.w)
	w.w = nil
	w.enc.ResetBytes(&w.none)
	bodies.Put(w.body)
	w.body = nil
	return nil
}

// Reader reads messages from a stream.
type Reader struct {
	r   io.Reader
	dec *codec.Decoder
}

// NewReader returns a Reader on r, which should be buffered: a Reader reads
// a frame's header, then its body.
func NewReader(r io.Reader) *Reader {
	return &Reader{r: r, dec: codec.NewDecoderBytes(noBytes, handle())}
}

// Read returns the next message. Any error but io.EOF at a frame boundary
// means the peer broke the protocol or the stream failed: drop the peer.
func (r *Reader) Read() (Message, error) {
	var hdr [5]byte
	if _, err := io.ReadFull(r.r, hdr[:4]); err != nil {
		return nil, err
	}
	n := binary.LittleEndian.Uint32(hdr[:4])
	if n == 0 || n > MaxMessage {
		return nil, fmt.Errorf("%w: %d bytes announced, at most %d", ErrTooLarge, n, MaxMessage)
	}
	// Bodies hold slices into the frame (see Bytes): each gets its own.
	frame := make([]byte, n)
	if _, err := io.ReadFull(r.r, frame); err != nil {
		return nil, noEOF(err)
	}
	m, err := newMessage(Type(frame[0]))
	if err != nil {
		return nil, err
	}
	r.dec.ResetBytes(frame[1:])
	err = r.dec.Decode(m)
	r.dec.ResetBytes(noBytes) // let the frame go with the message
	if err != nil {
		return nil, fmt.Errorf("%w: %T: %v", ErrMalformed, m, err)
	}
	if err := m.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %T: %v", ErrMalformed, m, err)
	}
	return m, nil
}

func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}
