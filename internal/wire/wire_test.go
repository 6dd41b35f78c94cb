package wire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/hyperfeed/hyperfeed/merkle"
	"github.com/stretchr/testify/require"
)

func hash(b byte) []byte { return bytes.Repeat([]byte{b}, 32) }

func sampleMessages() []Message {
	return []Message{
		&Open{Channel: 7, DiscoveryKey: hash(1), Capability: hash(2)},
		&Close{Channel: 7},
		&Sync{Channel: 1, Fork: 2, Length: 3},
		&Range{Channel: 1, Drop: true, Start: 5, Length: 10},
		&Bitfield{Channel: 1, Page: 3, Bits: []byte{0xff, 0x01}},
		&Request{Channel: 1, ID: 99, Fork: 1, Length: 10, Block: &BlockRequest{Index: 4, Nodes: 3}, Upgrade: true},
		&Request{Channel: 1, ID: 100, Upgrade: true},
		&Data{Channel: 1, ID: 99, Fork: 1,
			Block:   &BlockData{Index: 4, Value: []byte("block"), Nodes: PackNodes([]merkle.Node{{Index: 10, Size: 3, Hash: [32]byte{3}}})},
			Upgrade: &UpgradeData{Start: 3, Length: 10, Nodes: PackNodes([]merkle.Node{{Index: 11, Size: 9, Hash: [32]byte{4}}}), Signature: bytes.Repeat([]byte{5}, 64)}},
		&Data{Channel: 1, ID: 98, Block: &BlockData{Index: 0, Value: []byte{}}},
		&NoData{Channel: 1, ID: 3},
		&Cancel{Channel: 1, ID: 3},
		&Ping{Nonce: 42},
		&Pong{Nonce: 42},
		&Extension{Channel: 3, Name: "presence", Payload: []byte("here")},
		&Extension{Channel: 3, Name: strings.Repeat("n", MaxExtensionName), Payload: make([]byte, MaxExtensionPayload)},
	}
}

func TestRoundTrip(t *testing.T) {
	var buf bytes.Buffer
	w := NewWriter(&buf)
	for _, m := range sampleMessages() {
		require.NoError(t, w.Write(m))
	}
	require.NoError(t, w.Flush())
	r := NewReader(&buf)
	for _, want := range sampleMessages() {
		got, err := r.Read()
		require.NoError(t, err)
		if d, ok := want.(*Data); ok && d.Block != nil && len(d.Block.Value) == 0 {
			// msgpack does not tell an empty byte string from nil.
			g := got.(*Data)
			require.Empty(t, g.Block.Value)
			g.Block.Value = d.Block.Value
		}
		require.Equal(t, want, got)
	}
	_, err := r.Read()
	require.ErrorIs(t, err, io.EOF)
}

func TestProofConversion(t *testing.T) {
	p := &merkle.Proof{Fork: 3,
		Block:   &merkle.BlockProof{Index: 2, Nodes: []merkle.Node{{Index: 6, Size: 1, Hash: [32]byte{1}}}},
		Upgrade: &merkle.UpgradeProof{Start: 1, Length: 4, Nodes: []merkle.Node{{Index: 5, Size: 2, Hash: [32]byte{2}}}, Signature: bytes.Repeat([]byte{9}, 64)},
	}
	d := DataFrom(4, 5, p, []byte("v"))
	require.NoError(t, d.Validate())
	got, v := d.ToProof()
	require.Equal(t, p, got)
	require.Equal(t, "v", string(v))
}

func frame(typ Type, body []byte) []byte {
	b := binary.LittleEndian.AppendUint32(nil, uint32(len(body)+1))
	return append(append(b, byte(typ)), body...)
}

func TestRejects(t *testing.T) {
	// Announced lengths past the limit are refused before reading them.
	huge := binary.LittleEndian.AppendUint32(nil, MaxMessage+1)
	_, err := NewReader(bytes.NewReader(huge)).Read()
	require.ErrorIs(t, err, ErrTooLarge)
	_, err = NewReader(bytes.NewReader([]byte{0, 0, 0, 0})).Read()
	require.ErrorIs(t, err, ErrTooLarge)

	for name, b := range map[string][]byte{
		"unknown type":    frame(200, []byte{0x90}),
		"not msgpack":     frame(TypeSync, []byte{0xc1}),
		"short key":       mustEncode(t, &Open{Channel: 1, DiscoveryKey: []byte{1}, Capability: hash(1)}),
		"bad signature":   mustEncode(t, &Data{Upgrade: &UpgradeData{Signature: []byte{1}}}),
		"partial node":    mustEncode(t, &Data{Block: &BlockData{Nodes: make([]byte, NodeSize+1)}}),
		"empty data":      mustEncode(t, &Data{}),
		"empty request":   mustEncode(t, &Request{}),
		"huge bitfield":   mustEncode(t, &Bitfield{Bits: make([]byte, 5000)}),
		"range overflow":  mustEncode(t, &Range{Start: merkle.MaxLength, Length: 1}),
		"array too long":  frame(TypeData, []byte{0xdd, 0xff, 0xff, 0xff, 0xff}),
		"truncated frame": frame(TypeSync, []byte{0x93, 0x01})[:6],
		"unnamed ext":     mustEncode(t, &Extension{Channel: 1, Payload: []byte{1}}),
		"long ext name":   mustEncode(t, &Extension{Channel: 1, Name: strings.Repeat("n", MaxExtensionName+1)}),
		"huge ext":        mustEncode(t, &Extension{Channel: 1, Name: "x", Payload: make([]byte, MaxExtensionPayload+1)}),
	} {
		_, err := NewReader(bytes.NewReader(b)).Read()
		require.Error(t, err, name)
		require.False(t, errors.Is(err, io.EOF), name)
	}
	// A writer refuses to build what a reader would refuse.
	err = NewWriter(io.Discard).Write(&Data{Block: &BlockData{Value: make([]byte, MaxMessage)}})
	require.ErrorIs(t, err, ErrTooLarge)
}

// mustEncode encodes m without validating it, as a misbehaving peer would.
func mustEncode(t *testing.T, m Message) []byte {
	var buf bytes.Buffer
	w := NewWriter(&buf)
	require.NoError(t, w.Write(m))
	require.NoError(t, w.Flush())
	return buf.Bytes()
}

func FuzzRead(f *testing.F) {
	for _, m := range sampleMessages() {
		var buf bytes.Buffer
		w := NewWriter(&buf)
		w.Write(m)
		w.Flush()
		f.Add(buf.Bytes())
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r := NewReader(bytes.NewReader(b))
		for {
			m, err := r.Read()
			if err != nil {
				return
			}
			// Whatever is accepted is valid and survives a round trip.
			require.NoError(t, m.Validate())
			var buf bytes.Buffer
			w := NewWriter(&buf)
			require.NoError(t, w.Write(m))
			require.NoError(t, w.Flush())
			again, err := NewReader(&buf).Read()
			require.NoError(t, err)
			require.Equal(t, m.Type(), again.Type())
		}
	})
}

// TestBlockValueNotCopied checks that a block value is encoded as a msgpack
// bin, as a []byte would be, and decoded in place, without the copies and
// regrowth that a 64 KiB value otherwise costs.
func TestBlockValueNotCopied(t *testing.T) {
	value := bytes.Repeat([]byte{7}, 64<<10)
	var buf bytes.Buffer
	w := NewWriter(&buf)
	require.NoError(t, w.Write(&Data{Channel: 1, ID: 2, Block: &BlockData{Index: 3, Value: value}}))
	require.NoError(t, w.Flush())
	frame := buf.Bytes()
	// u32 length, type, array of 5, channel, id, fork, array of 3, index,
	// then bin32 (0xc6) with the value.
	require.Equal(t, []byte{byte(TypeData), 0x95, 1, 2, 0, 0x93, 3, 0xc6, 0, 1, 0, 0}, frame[4:16])
	require.Equal(t, value, frame[16:16+len(value)])

	r := NewReader(bytes.NewReader(bytes.Repeat(frame, 30)))
	allocs := testing.AllocsPerRun(20, func() {
		m, err := r.Read()
		require.NoError(t, err)
		require.Equal(t, value, []byte(m.(*Data).Block.Value))
	})
	// The frame, the message and its parts: a handful. Copying the value
	// would add one allocation per 4 KiB it grows.
	require.LessOrEqual(t, allocs, 6.0)
}

// TestMessagesOutliveReads checks that a message stays as it was read while
// later messages are read, over noiseconn: nothing that Read returns points
// into a buffer that is reused.
func TestMessagesOutliveReads(t *testing.T) {
	x, y := connPair(t, pipe, mustKeyPair(t), mustKeyPair(t))
	defer y.close()
	defer x.close()
	var sent []Message
	for i := range 40 {
		v := bytes.Repeat([]byte{byte(i)}, []int{10, 5000, 64 << 10, 70000}[i%4])
		sent = append(sent,
			&Data{Channel: 1, ID: uint64(i), Block: &BlockData{Index: uint64(i), Value: v, Nodes: PackNodes([]merkle.Node{{Index: uint64(i), Hash: [32]byte{byte(i)}}})}},
			&Extension{Channel: 2, Name: "x", Payload: v[:min(len(v), MaxExtensionPayload)]},
			&Bitfield{Channel: 3, Bits: v[:min(len(v), 100)]},
		)
	}
	go func() {
		for i, m := range sent {
			if err := x.w.Write(m); err != nil {
				t.Error(err)
				return
			}
			if i%5 == 4 {
				if err := x.w.Flush(); err != nil {
					t.Error(err)
					return
				}
			}
		}
		x.w.Flush()
	}()
	var got []Message
	for range sent {
		got = append(got, <-y.got)
	}
	require.Equal(t, sent, got)
}

func TestWriterReleasesBuffers(t *testing.T) {
	var buf bytes.Buffer
	w := NewWriter(&buf)
	require.Zero(t, w.Buffered())
	require.NoError(t, w.Flush())
	require.NoError(t, w.Write(&Data{Block: &BlockData{Value: make([]byte, 1<<20)}}))
	require.NoError(t, w.Write(&Ping{Nonce: 1}))
	require.NotZero(t, w.Buffered())
	require.NoError(t, w.Flush())
	require.Zero(t, w.Buffered())
	require.Nil(t, w.w)
	require.Nil(t, w.body)

	// A failed flush keeps its error, as a bufio.Writer does.
	fail := errors.New("no")
	w = NewWriter(failWriter{fail})
	require.NoError(t, w.Write(&Ping{Nonce: 1}))
	require.ErrorIs(t, w.Flush(), fail)
	require.ErrorIs(t, w.Write(&Ping{Nonce: 2}), fail)
	require.ErrorIs(t, w.Flush(), fail)
}

type failWriter struct{ err error }

func (w failWriter) Write([]byte) (int, error) { return 0, w.err }

// TestIdleConnMemory bounds the heap an idle connection end holds, which
// BenchmarkIdleConn measures, after a block each way: under a quarter of
// the 256 KiB it took when noiseconn and wire kept 64 KiB buffers for a
// connection's whole life.
func TestIdleConnMemory(t *testing.T) {
	const pairs = 50
	ka, kb := mustKeyPair(t), mustKeyPair(t)
	block := &Data{Channel: 1, ID: 1, Block: &BlockData{Index: 1, Value: make([]byte, 64<<10)}}
	var ends []*end
	before := heapAlloc()
	for range pairs {
		x, y := connPair(t, pipe, ka, kb)
		exchange(t, x, y, block)
		exchange(t, y, x, block)
		exchange(t, x, y, &Ping{Nonce: 1})
		ends = append(ends, x, y)
	}
	per := (int64(heapAlloc()) - int64(before)) / int64(len(ends))
	for _, e := range ends {
		e.close()
	}
	t.Logf("%d bytes per idle connection end", per)
	require.Less(t, per, int64(256<<10/4))
}
