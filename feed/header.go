package feed

import (
	"bytes"
	"crypto/ed25519"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"

	"github.com/hyperfeed/hyperfeed/merkle"
)

// The header file holds two copies of the header, each in a slot of
// headerSlotSize bytes ending in a CRC-32C of the rest of the slot. A commit
// writes slot 0, then slot 1 (with an fsync between them in sync mode), so at
// any moment at least one slot is whole, and after a finished commit both say
// the same. See doc.go.
const (
	headerSlotSize = 512
	headerSlots    = 2
	headerFileSize = headerSlotSize * headerSlots
	headerVersion  = 3
	maxForkHistory = 8

	flagSigned   = 1 << 0
	flagComplete = 1 << 1
)

var headerMagic = [8]byte{'H', 'Y', 'P', 'R', 'F', 'E', 'E', 'D'}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// errBadSlot marks a header slot that fails its checks.
var errBadSlot = errors.New("bad header slot")

// forkPoint records a truncation: moving from fork From to fork Fork, the tree
// kept its first Length blocks. A writer moves one fork at a time; a replica
// may jump several, and then Length is what the jump kept. A peer still on an
// older fork shares with this feed the blocks below the smallest Length of the
// fork points it missed.
type forkPoint struct {
	From   uint64
	Fork   uint64
	Length uint64
}

// header is the signed head of the feed and everything needed to open it
// without reading the log.
type header struct {
	Seq        uint64 // commit counter; the slot with the larger one is newer
	Key        Key
	Fork       uint64
	Length     uint64
	ByteLength uint64
	TreeHash   [32]byte
	// Signature signs (TreeHash, Length, Fork). It is empty on a new replica,
	// and on a replica that cut its tree back to a fork point and has not yet
	// received the new fork's head: its roots are then a verified prefix.
	Signature []byte
	Forks     []forkPoint // the last maxForkHistory truncations, oldest first
	// Complete says the feed holds every block below Length, as a writer
	// always does; the bitfield file is then not kept up to date.
	Complete bool
}

func (h *header) encode() [headerSlotSize]byte {
	var b [headerSlotSize]byte
	w := b[:0]
	w = append(w, headerMagic[:]...)
	w = binary.LittleEndian.AppendUint32(w, headerVersion)
	var flags uint32
	if len(h.Signature) == ed25519.SignatureSize {
		flags |= flagSigned
	}
	if h.Complete {
		flags |= flagComplete
	}
	w = binary.LittleEndian.AppendUint32(w, flags)
	w = binary.LittleEndian.AppendUint64(w, h.Seq)
	w = append(w, h.Key[:]...)
	w = binary.LittleEndian.AppendUint64(w, h.Fork)
	w = binary.LittleEndian.AppendUint64(w, h.Length)
	w = binary.LittleEndian.AppendUint64(w, h.ByteLength)
	w = append(w, h.TreeHash[:]...)
	var sig [ed25519.SignatureSize]byte
	copy(sig[:], h.Signature)
	w = append(w, sig[:]...)
	w = append(w, byte(len(h.Forks)), 0, 0, 0, 0, 0, 0, 0)
	for _, fp := range h.Forks {
		w = binary.LittleEndian.AppendUint64(w, fp.From)
		w = binary.LittleEndian.AppendUint64(w, fp.Fork)
		w = binary.LittleEndian.AppendUint64(w, fp.Length)
	}
	binary.LittleEndian.PutUint32(b[headerSlotSize-4:], crc32.Checksum(b[:headerSlotSize-4], castagnoli))
	return b
}

func decodeHeader(b []byte) (header, error) {
	var h header
	if len(b) != headerSlotSize {
		return h, fmt.Errorf("%w: %d bytes", errBadSlot, len(b))
	}
	if crc32.Checksum(b[:headerSlotSize-4], castagnoli) != binary.LittleEndian.Uint32(b[headerSlotSize-4:]) {
		return h, fmt.Errorf("%w: checksum mismatch", errBadSlot)
	}
	if !bytes.Equal(b[:8], headerMagic[:]) {
		return h, fmt.Errorf("%w: not a hyperfeed header", errBadSlot)
	}
	if v := binary.LittleEndian.Uint32(b[8:]); v != headerVersion {
		return h, fmt.Errorf("%w: %w %d (this package reads %d)", errBadSlot, ErrVersion, v, headerVersion)
	}
	flags := binary.LittleEndian.Uint32(b[12:])
	r := b[16:]
	u64 := func() uint64 { v := binary.LittleEndian.Uint64(r); r = r[8:]; return v }
	h.Seq = u64()
	copy(h.Key[:], r)
	r = r[32:]
	h.Fork = u64()
	h.Length = u64()
	h.ByteLength = u64()
	copy(h.TreeHash[:], r)
	r = r[32:]
	if flags&flagSigned != 0 {
		h.Signature = bytes.Clone(r[:ed25519.SignatureSize])
	}
	h.Complete = flags&flagComplete != 0
	r = r[ed25519.SignatureSize:]
	n := int(r[0])
	r = r[8:]
	if n > maxForkHistory {
		return h, fmt.Errorf("%w: %d fork points", errBadSlot, n)
	}
	for range n {
		h.Forks = append(h.Forks, forkPoint{From: u64(), Fork: u64(), Length: u64()})
	}
	if h.Length > merkle.MaxLength {
		return h, fmt.Errorf("%w: length %d", errBadSlot, h.Length)
	}
	return h, nil
}

// readHeader returns the newest whole header in the file, and whether a slot
// had to be passed over.
func readHeader(f File) (h header, damaged bool, err error) {
	var buf [headerFileSize]byte
	n, err := f.ReadAt(buf[:], 0)
	if n < headerFileSize && err != nil && err != io.EOF {
		return h, false, err
	}
	// A short file still has a whole slot 0 if the crash came after it.
	if n < headerSlotSize {
		return h, false, fmt.Errorf("%w: header file is %d bytes", ErrCorrupt, n)
	}
	var found bool
	var verr error // a whole slot of another format version
	for i := range headerSlots {
		slot := buf[i*headerSlotSize : (i+1)*headerSlotSize]
		s, err := decodeHeader(slot)
		if err != nil {
			damaged = true
			if errors.Is(err, ErrVersion) {
				verr = fmt.Errorf("%w %d (this package reads %d)", ErrVersion, binary.LittleEndian.Uint32(slot[8:]), headerVersion)
			}
			continue
		}
		if !found || s.Seq > h.Seq {
			h, found = s, true
		}
	}
	switch {
	case !found && verr != nil:
		return h, damaged, verr
	case !found:
		return h, damaged, fmt.Errorf("%w: no whole header slot", ErrCorrupt)
	}
	return h, damaged, nil
}

// writeHeader commits h to both slots, in order, syncing after each when sync
// is set, so that a torn write can damage at most the slot being written.
// Without sync one write covers both: a process that dies cannot tear a
// write, and ordering against power loss is what sync is for.
func writeHeader(f File, h *header, sync bool) error {
	b := h.encode()
	if !sync {
		var both [headerFileSize]byte
		for i := range headerSlots {
			copy(both[i*headerSlotSize:], b[:])
		}
		_, err := f.WriteAt(both[:], 0)
		return err
	}
	for i := range headerSlots {
		if _, err := f.WriteAt(b[:], int64(i*headerSlotSize)); err != nil {
			return err
		}
		if sync {
			if err := f.Sync(); err != nil {
				return err
			}
		}
	}
	return nil
}

// commonLength returns the length below which this feed's tree and the tree a
// peer saw at fork (with length peerLength) are the same.
func (h *header) commonLength(fork, peerLength uint64) uint64 {
	l := min(peerLength, h.Length)
	if fork == h.Fork {
		return l
	}
	if fork > h.Fork {
		return 0
	}
	// Every fork point after the peer's fork cut the shared prefix; if the
	// history does not reach back to the peer's fork, nothing is known to be
	// shared.
	covered := false
	for _, fp := range h.Forks {
		if fp.Fork > fork {
			covered = covered || fp.From <= fork
			l = min(l, fp.Length)
		}
	}
	if !covered {
		return 0
	}
	return l
}

func (h *header) addFork(from, fork, length uint64) {
	h.Forks = append(h.Forks, forkPoint{From: from, Fork: fork, Length: length})
	if len(h.Forks) > maxForkHistory {
		h.Forks = h.Forks[len(h.Forks)-maxForkHistory:]
	}
}
