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
package wire

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/hashicorp/go-msgpack/v2/codec"
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

// Writer writes messages to a stream, buffered: call Flush to send.
type Writer struct {
	w    *bufio.Writer
	enc  *codec.Encoder
	body []byte
}

// NewWriter returns a Writer on w.
func NewWriter(w io.Writer) *Writer {
	wr := &Writer{w: bufio.NewWriterSize(w, 64<<10)}
	wr.enc = codec.NewEncoderBytes(&wr.body, handle())
	return wr
}

// Write encodes m into the buffer, flushing it to the stream when full.
func (w *Writer) Write(m Message) error {
	w.body = w.body[:0]
	w.enc.ResetBytes(&w.body)
	if err := w.enc.Encode(m); err != nil {
		return fmt.Errorf("wire: encode %T: %w", m, err)
	}
	n := len(w.body) + 1
	if n > MaxMessage {
		return fmt.Errorf("%w: %T of %d bytes", ErrTooLarge, m, n)
	}
	var hdr [5]byte
	binary.LittleEndian.PutUint32(hdr[:], uint32(n))
	hdr[4] = byte(m.Type())
	if _, err := w.w.Write(hdr[:]); err != nil {
		return err
	}
	_, err := w.w.Write(w.body)
	return err
}

// Buffered returns the bytes waiting for Flush.
func (w *Writer) Buffered() int { return w.w.Buffered() }

// Flush sends what is buffered.
func (w *Writer) Flush() error { return w.w.Flush() }

// Reader reads messages from a stream.
type Reader struct {
	r    *bufio.Reader
	dec  *codec.Decoder
	body []byte
}

// NewReader returns a Reader on r.
func NewReader(r io.Reader) *Reader {
	return &Reader{r: bufio.NewReaderSize(r, 64<<10), dec: codec.NewDecoderBytes(nil, handle())}
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
	if cap(r.body) < int(n) {
		r.body = make([]byte, n)
	}
	frame := r.body[:n]
	if _, err := io.ReadFull(r.r, frame); err != nil {
		return nil, noEOF(err)
	}
	m, err := newMessage(Type(frame[0]))
	if err != nil {
		return nil, err
	}
	r.dec.ResetBytes(frame[1:])
	if err := r.dec.Decode(m); err != nil {
		return nil, fmt.Errorf("%w: %T: %v", ErrMalformed, m, err)
	}
	if err := m.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %T: %v", ErrMalformed, m, err)
	}
	// Bodies hold slices into the frame buffer, which the next Read reuses.
	r.body = nil
	return m, nil
}

func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}
