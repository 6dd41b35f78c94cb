package feed

import (
	"encoding/binary"
	"hash/crc32"
	"maps"
	"math/bits"
	"slices"
)

// The bitfield file is a run of records, one per page of pageBits blocks: the
// page's bits (block i is bit i%8 of byte i/8, low bit first) followed by a
// CRC-32C of them and four zero bytes. A record that was never written reads
// as zeros and means an empty page.
const (
	pageBytes  = 4096
	pageBits   = pageBytes * 8
	recordSize = pageBytes + 8
)

type page [pageBytes]byte

// bitfield records which blocks a feed holds. It lives in memory and is
// written back a page at a time.
type bitfield struct {
	pages    []*page // nil: all zero
	ones     uint64  // bits set in all pages, so that count is cheap
	end      uint64  // no bit at or past it is set (it may be clear)
	dirty    map[int]bool
	unsynced bool // pages were written since the file was last synced
}

func newBitfield() *bitfield { return &bitfield{dirty: map[int]bool{}} }

func (b *bitfield) get(i uint64) bool {
	p := int(i / pageBits)
	if p >= len(b.pages) || b.pages[p] == nil {
		return false
	}
	j := i % pageBits
	return b.pages[p][j/8]&(1<<(j%8)) != 0
}

// setRange sets blocks [start, end) to v.
func (b *bitfield) setRange(start, end uint64, v bool) {
	for i := start; i < end; {
		p := int(i / pageBits)
		if p >= len(b.pages) {
			if !v {
				return
			}
			b.pages = append(b.pages, make([]*page, p+1-len(b.pages))...)
		}
		if b.pages[p] == nil {
			if !v {
				i = uint64(p+1) * pageBits
				continue
			}
			b.pages[p] = new(page)
		}
		pg := b.pages[p]
		stop := min(end, uint64(p+1)*pageBits)
		changed := false
		for ; i < stop; i++ {
			j := i % pageBits
			old := pg[j/8]
			if v {
				pg[j/8] |= 1 << (j % 8)
			} else {
				pg[j/8] &^= 1 << (j % 8)
			}
			if pg[j/8] != old {
				changed = true
				if v {
					b.ones++
					b.end = max(b.end, i+1)
				} else {
					b.ones--
				}
			}
		}
		if changed {
			b.dirty[p] = true
		}
	}
}

// setNew sets blocks [start, end) and appends to fresh the ones that were
// not set, so that a write that fails can clear exactly those again.
func (b *bitfield) setNew(start, end uint64, fresh []uint64) []uint64 {
	for i := start; i < end; i++ {
		if !b.get(i) {
			b.setRange(i, i+1, true)
			fresh = append(fresh, i)
		}
	}
	return fresh
}

// unset clears the given blocks.
func (b *bitfield) unset(blocks []uint64) {
	for _, i := range blocks {
		b.setRange(i, i+1, false)
	}
}

// touch marks page p to be written by the next flush, whatever it holds.
func (b *bitfield) touch(p int) { b.dirty[p] = true }

// anySet reports whether any of blocks [start, end) is set.
func (b *bitfield) anySet(start, end uint64) bool {
	for start < end {
		p := start / pageBits
		if p >= uint64(len(b.pages)) {
			return false
		}
		stop := min(end, (p+1)*pageBits)
		if pg := b.pages[p]; pg != nil {
			lo, hi := start%pageBits, (stop-1)%pageBits+1 // bits [lo, hi) of the page
			for ; lo < hi && lo%8 != 0; lo++ {
				if pg[lo/8]&(1<<(lo%8)) != 0 {
					return true
				}
			}
			for ; lo < hi && hi%8 != 0; hi-- {
				if pg[(hi-1)/8]&(1<<((hi-1)%8)) != 0 {
					return true
				}
			}
			if lo < hi && !isZero(pg[lo/8:hi/8]) {
				return true
			}
		}
		start = stop
	}
	return false
}

// firstMissing returns the first block at or after start that is not set, or
// end if all of [start, end) are.
func (b *bitfield) firstMissing(start, end uint64) uint64 {
	for i := start; i < end; i++ {
		if !b.get(i) {
			return i
		}
	}
	return end
}

// count returns how many of blocks [0, end) are set: those set in all,
// less those at or past end (a feed keeps none past its head, so that is
// at most the rest of one page).
func (b *bitfield) count(end uint64) uint64 {
	n := b.ones
	if end >= b.end {
		return n
	}
	for p := int(end / pageBits); p < len(b.pages); p++ {
		pg := b.pages[p]
		if pg == nil {
			continue
		}
		from := uint64(0)
		if first := uint64(p) * pageBits; end > first {
			from = end - first
		}
		for ; from < pageBits && from%64 != 0; from++ {
			if pg[from/8]&(1<<(from%8)) != 0 {
				n--
			}
		}
		for ; from < pageBits; from += 64 {
			n -= uint64(bits.OnesCount64(binary.LittleEndian.Uint64(pg[from/8:])))
		}
	}
	return n
}

// load reads the bitfield file. A record that fails its checks is left out
// (the page reads as empty) and its page returned in damaged, for the
// caller to rebuild.
func (b *bitfield) load(f File) (damaged []int, err error) {
	size, err := fileSize(f)
	if err != nil {
		return nil, err
	}
	n := int(size / recordSize)
	if n == 0 {
		return nil, nil
	}
	buf := make([]byte, n*recordSize)
	if err := readFull(f, buf, 0); err != nil {
		return nil, err
	}
	b.pages, b.ones, b.end = make([]*page, n), 0, 0
	for p := range n {
		rec := buf[p*recordSize : (p+1)*recordSize]
		if isZero(rec) {
			continue
		}
		if binary.LittleEndian.Uint32(rec[pageBytes:]) != crc32.Checksum(rec[:pageBytes], castagnoli) || !isZero(rec[pageBytes+4:]) {
			damaged = append(damaged, p)
			continue
		}
		pg := new(page)
		copy(pg[:], rec)
		b.pages[p] = pg
		for k := 0; k < pageBytes; k += 8 {
			b.ones += uint64(bits.OnesCount64(binary.LittleEndian.Uint64(pg[k:])))
		}
		for k := pageBytes - 1; k >= 0; k-- {
			if pg[k] != 0 {
				b.end = uint64(p)*pageBits + uint64(k)*8 + uint64(bits.Len8(pg[k]))
				break
			}
		}
	}
	return damaged, nil
}

// flush writes the dirty pages to f.
func (b *bitfield) flush(f File) error {
	if len(b.dirty) == 0 {
		return nil
	}
	var rec [recordSize]byte
	for _, p := range slices.Sorted(maps.Keys(b.dirty)) {
		if p < len(b.pages) && b.pages[p] != nil {
			copy(rec[:], b.pages[p][:])
		} else {
			clear(rec[:pageBytes])
		}
		binary.LittleEndian.PutUint32(rec[pageBytes:], crc32.Checksum(rec[:pageBytes], castagnoli))
		b.unsynced = true
		if _, err := f.WriteAt(rec[:], int64(p)*recordSize); err != nil {
			return err
		}
		delete(b.dirty, p)
	}
	return nil
}

func isZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
