package wire

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/hyperfeed/hyperfeed/merkle"
)

// Limits a Validate enforces.
const (
	maxBlock        = 16 << 20
	maxPathNodes    = 64
	maxUpgradeNodes = 64 * 64
	maxBitfield     = 4096
	keySize         = 32
	signatureSize   = 64

	// NodeSize is the size of one proof node on the wire:
	// u64le(index) ‖ u64le(size) ‖ hash (32).
	NodeSize = 48
)

var errField = errors.New("bad field")

// Open asks to replicate the feed with DiscoveryKey on a channel the sender
// numbers. Capability proves the sender knows the feed key (see swarm/doc.go).
type Open struct {
	Channel      uint32
	DiscoveryKey []byte
	Capability   []byte
}

// Close ends a channel.
type Close struct {
	Channel uint32
}

// Sync tells the peer the sender's head of a feed.
type Sync struct {
	Channel uint32
	Fork    uint64
	Length  uint64
}

// Range says the sender holds blocks [Start, Start+Length) of a feed, or,
// with Drop, no longer holds them.
type Range struct {
	Channel uint32
	Drop    bool
	Start   uint64
	Length  uint64
}

// Bitfield carries one page of the sender's bitfield: block Page·32768+i is
// held if bit i (low bit first) is set.
type Bitfield struct {
	Channel uint32
	Page    uint64
	Bits    []byte
}

// Request asks for a proof: of a block, of the sender's head, or both.
type Request struct {
	Channel uint32
	ID      uint64
	Fork    uint64
	Length  uint64
	Block   *BlockRequest
	Upgrade bool
}

// BlockRequest names a block and how many proof nodes the requester lacks.
type BlockRequest struct {
	Index uint64
	Nodes uint64
}

// Data answers a Request with a proof.
type Data struct {
	Channel uint32
	ID      uint64
	Fork    uint64
	Block   *BlockData
	Upgrade *UpgradeData
}

// BlockData is a block with its proof path.
//
// Nodes are packed, NodeSize bytes each, rather than an array of maps or
// arrays: a download carries a dozen of them per block, and one byte string
// costs one allocation to decode where an array of arrays costs two per node.
type BlockData struct {
	Index uint64
	Value Bytes
	Nodes []byte
}

// UpgradeData is an upgrade proof.
type UpgradeData struct {
	Start     uint64
	Length    uint64
	Nodes     []byte // packed as in BlockData
	Signature []byte
}

// NoData answers a Request the sender cannot serve.
type NoData struct {
	Channel uint32
	ID      uint64
}

// Cancel withdraws a Request.
type Cancel struct {
	Channel uint32
	ID      uint64
}

// Ping asks the peer for a Pong with the same Nonce: a keep-alive.
type Ping struct {
	Nonce uint64
}

// Pong answers a Ping.
type Pong struct {
	Nonce uint64
}

// Bytes is a byte string that a Reader decodes without copying: it points
// into the frame it came in, which the Reader never reuses. A block value
// decoded as a plain []byte would be copied, and, since decoding allocates
// at most MaxInitLen at first, copied again each time it grows.
type Bytes []byte

// MarshalBinary implements encoding.BinaryMarshaler.
func (b Bytes) MarshalBinary() ([]byte, error) { return b, nil }

// UnmarshalBinary implements encoding.BinaryUnmarshaler, keeping data.
func (b *Bytes) UnmarshalBinary(data []byte) error {
	*b = data
	return nil
}

// Type implements Message.
func (*Open) Type() Type { return TypeOpen }

// Type implements Message.
func (*Close) Type() Type { return TypeClose }

// Type implements Message.
func (*Sync) Type() Type { return TypeSync }

// Type implements Message.
func (*Range) Type() Type { return TypeRange }

// Type implements Message.
func (*Bitfield) Type() Type { return TypeBitfield }

// Type implements Message.
func (*Request) Type() Type { return TypeRequest }

// Type implements Message.
func (*Data) Type() Type { return TypeData }

// Type implements Message.
func (*NoData) Type() Type { return TypeNoData }

// Type implements Message.
func (*Cancel) Type() Type { return TypeCancel }

// Type implements Message.
func (*Ping) Type() Type { return TypePing }

// Type implements Message.
func (*Pong) Type() Type { return TypePong }

// Validate implements Message.
func (m *Open) Validate() error {
	if len(m.DiscoveryKey) != keySize || len(m.Capability) != keySize {
		return fmt.Errorf("%w: key or capability not %d bytes", errField, keySize)
	}
	return nil
}

// Validate implements Message.
func (m *Close) Validate() error { return nil }

// Validate implements Message.
func (m *Sync) Validate() error {
	if m.Length > merkle.MaxLength {
		return fmt.Errorf("%w: length %d", errField, m.Length)
	}
	return nil
}

// Validate implements Message.
func (m *Range) Validate() error {
	if m.Start > merkle.MaxLength || m.Length > merkle.MaxLength-m.Start {
		return fmt.Errorf("%w: range %d+%d", errField, m.Start, m.Length)
	}
	return nil
}

// Validate implements Message.
func (m *Bitfield) Validate() error {
	if len(m.Bits) > maxBitfield || m.Page > merkle.MaxLength/(maxBitfield*8) {
		return fmt.Errorf("%w: bitfield page %d of %d bytes", errField, m.Page, len(m.Bits))
	}
	return nil
}

// Validate implements Message.
func (m *Request) Validate() error {
	if m.Length > merkle.MaxLength || (m.Block != nil && m.Block.Index >= merkle.MaxLength) {
		return fmt.Errorf("%w: request out of range", errField)
	}
	if m.Block == nil && !m.Upgrade {
		return fmt.Errorf("%w: empty request", errField)
	}
	return nil
}

// Validate implements Message.
func (m *Data) Validate() error {
	if m.Block == nil && m.Upgrade == nil {
		return fmt.Errorf("%w: empty data", errField)
	}
	if b := m.Block; b != nil {
		if len(b.Value) > maxBlock || len(b.Nodes) > maxPathNodes*NodeSize {
			return fmt.Errorf("%w: block of %d bytes with %d bytes of nodes", errField, len(b.Value), len(b.Nodes))
		}
		if err := validNodes(b.Nodes); err != nil {
			return err
		}
	}
	if u := m.Upgrade; u != nil {
		if len(u.Nodes) > maxUpgradeNodes*NodeSize || len(u.Signature) != signatureSize {
			return fmt.Errorf("%w: upgrade with %d bytes of nodes, %d-byte signature", errField, len(u.Nodes), len(u.Signature))
		}
		if err := validNodes(u.Nodes); err != nil {
			return err
		}
	}
	return nil
}

func validNodes(b []byte) error {
	if len(b)%NodeSize != 0 {
		return fmt.Errorf("%w: %d bytes of nodes is not a whole number of %d-byte nodes", errField, len(b), NodeSize)
	}
	return nil
}

// Validate implements Message.
func (m *NoData) Validate() error { return nil }

// Validate implements Message.
func (m *Cancel) Validate() error { return nil }

// Validate implements Message.
func (m *Ping) Validate() error { return nil }

// Validate implements Message.
func (m *Pong) Validate() error { return nil }

// ToProof converts a validated Data into the proof and block value that
// feed.ApplyProof takes.
func (m *Data) ToProof() (*merkle.Proof, []byte) {
	p := &merkle.Proof{Fork: m.Fork}
	var value []byte
	if b := m.Block; b != nil {
		p.Block = &merkle.BlockProof{Index: b.Index, Nodes: UnpackNodes(b.Nodes)}
		value = b.Value
	}
	if u := m.Upgrade; u != nil {
		p.Upgrade = &merkle.UpgradeProof{Start: u.Start, Length: u.Length, Nodes: UnpackNodes(u.Nodes), Signature: u.Signature}
	}
	return p, value
}

// DataFrom converts a proof and its block value into a Data message.
func DataFrom(channel uint32, id uint64, p *merkle.Proof, value []byte) *Data {
	d := &Data{Channel: channel, ID: id, Fork: p.Fork}
	if b := p.Block; b != nil {
		d.Block = &BlockData{Index: b.Index, Value: value, Nodes: PackNodes(b.Nodes)}
	}
	if u := p.Upgrade; u != nil {
		d.Upgrade = &UpgradeData{Start: u.Start, Length: u.Length, Nodes: PackNodes(u.Nodes), Signature: u.Signature}
	}
	return d
}

// UnpackNodes returns the nodes of a validated packed node list.
func UnpackNodes(b []byte) []merkle.Node {
	out := make([]merkle.Node, len(b)/NodeSize)
	for i := range out {
		r := b[i*NodeSize : (i+1)*NodeSize]
		out[i] = merkle.Node{Index: binary.LittleEndian.Uint64(r), Size: binary.LittleEndian.Uint64(r[8:])}
		copy(out[i].Hash[:], r[16:])
	}
	return out
}

// PackNodes lays nodes out as BlockData.Nodes and UpgradeData.Nodes carry them.
func PackNodes(ns []merkle.Node) []byte {
	out := make([]byte, len(ns)*NodeSize)
	for i, n := range ns {
		r := out[i*NodeSize:]
		binary.LittleEndian.PutUint64(r, n.Index)
		binary.LittleEndian.PutUint64(r[8:], n.Size)
		copy(r[16:NodeSize], n.Hash[:])
	}
	return out
}
