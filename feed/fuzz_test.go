package feed

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"math/bits"
	"os"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/hyperfeed/hyperfeed/merkle"
)

// fuzzMaxFile bounds an in-memory file, so that a write at a wild offset
// fails the fuzz target instead of exhausting memory.
const fuzzMaxFile = 64 << 20

// fuzzFile is an in-memory File. Every handle to a name shares one, as
// descriptors of one file share its contents.
type fuzzFile struct {
	mu   sync.Mutex
	name string
	data []byte
	wild error // the first write refused for its offset
}

func (f *fuzzFile) ReadAt(p []byte, off int64) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if off < 0 {
		return 0, fmt.Errorf("read %s at %d: negative offset", f.name, off)
	}
	if off >= int64(len(f.data)) {
		return 0, io.EOF
	}
	n := copy(p, f.data[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (f *fuzzFile) WriteAt(p []byte, off int64) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if off < 0 || off > fuzzMaxFile-int64(len(p)) {
		err := fmt.Errorf("write of %d bytes to %s at %d: past the test's limit", len(p), f.name, off)
		if f.wild == nil {
			f.wild = err
		}
		return 0, err
	}
	if end := int(off) + len(p); end > len(f.data) {
		f.data = append(f.data, make([]byte, end-len(f.data))...)
	}
	copy(f.data[off:], p)
	return len(p), nil
}

func (f *fuzzFile) Truncate(size int64) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if size < 0 || size > fuzzMaxFile {
		return fmt.Errorf("truncate %s to %d: out of range", f.name, size)
	}
	if int(size) <= len(f.data) {
		f.data = f.data[:size]
	} else {
		f.data = append(f.data, make([]byte, int(size)-len(f.data))...)
	}
	return nil
}

func (f *fuzzFile) Sync() error  { return nil }
func (f *fuzzFile) Close() error { return nil }

func (f *fuzzFile) Stat() (os.FileInfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return fuzzFileInfo{name: f.name, size: int64(len(f.data))}, nil
}

type fuzzFileInfo struct {
	name string
	size int64
}

func (i fuzzFileInfo) Name() string       { return i.name }
func (i fuzzFileInfo) Size() int64        { return i.size }
func (i fuzzFileInfo) Mode() os.FileMode  { return 0o600 }
func (i fuzzFileInfo) ModTime() time.Time { return time.Time{} }
func (i fuzzFileInfo) IsDir() bool        { return false }
func (i fuzzFileInfo) Sys() any           { return nil }

// fuzzFS is an in-memory FS whose state can be cloned, so that every fuzz
// input starts from the same replica at the cost of a few small copies.
type fuzzFS struct {
	mu    sync.Mutex
	files map[string]*fuzzFile
}

func newFuzzFS() *fuzzFS { return &fuzzFS{files: map[string]*fuzzFile{}} }

func (m *fuzzFS) MkdirAll(string, os.FileMode) error { return nil }

func (m *fuzzFS) ReadDir(dir string) ([]os.DirEntry, error) {
	return nil, fmt.Errorf("read dir %s: %w", dir, errors.ErrUnsupported)
}

func (m *fuzzFS) OpenFile(name string, flag int, _ os.FileMode) (File, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	f, ok := m.files[name]
	if !ok {
		if flag&os.O_CREATE == 0 {
			return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
		}
		f = &fuzzFile{name: name}
		m.files[name] = f
	}
	if flag&os.O_TRUNC != 0 {
		f.Truncate(0)
	}
	return f, nil
}

func (m *fuzzFS) clone() *fuzzFS {
	m.mu.Lock()
	defer m.mu.Unlock()
	c := newFuzzFS()
	for name, f := range m.files {
		f.mu.Lock()
		c.files[name] = &fuzzFile{name: name, data: slices.Clone(f.data)}
		f.mu.Unlock()
	}
	return c
}

// wild returns the first write any file refused for its offset.
func (m *fuzzFS) wild() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, f := range m.files {
		f.mu.Lock()
		err := f.wild
		f.mu.Unlock()
		if err != nil {
			return err
		}
	}
	return nil
}

func fuzzSealSlot(b []byte) {
	binary.LittleEndian.PutUint32(b[headerSlotSize-4:], crc32.Checksum(b[:headerSlotSize-4], castagnoli))
}

// FuzzDecodeHeader decodes arbitrary header slots. With fixCRC the slot's
// checksum is recomputed first, since otherwise almost every input stops at
// the checksum.
func FuzzDecodeHeader(f *testing.F) {
	sig := bytes.Repeat([]byte{0xa5}, ed25519.SignatureSize)
	var key Key
	copy(key[:], bytes.Repeat([]byte{7}, len(key)))
	seeds := []header{
		{},
		{Seq: 1, Key: key, TreeHash: merkle.TreeHash(nil)},
		{Seq: 9, Key: key, Fork: 2, Length: 40, ByteLength: 4000, TreeHash: [32]byte{1, 2, 3}, Signature: sig,
			Forks: []forkPoint{{From: 0, Fork: 1, Length: 30}, {From: 1, Fork: 2, Length: 12}}},
		{Seq: 1<<64 - 1, Fork: 1<<64 - 1, Length: merkle.MaxLength, ByteLength: 1<<64 - 1, Signature: make([]byte, ed25519.SignatureSize)},
	}
	full := header{Seq: 3, Key: key, Fork: 8, Length: 5, Signature: sig}
	for i := range maxForkHistory {
		full.Forks = append(full.Forks, forkPoint{From: uint64(i), Fork: uint64(i + 1), Length: uint64(100 - i)})
	}
	seeds = append(seeds, full)
	for _, h := range seeds {
		b := h.encode()
		f.Add(b[:], false)
		f.Add(b[:], true)
		// Damaged copies: the checksum catches them unless fixCRC re-seals
		// them, which lets the fuzzer past it into the fields.
		for _, at := range []int{0, 8, 12, 16, 64, 88, 184} {
			d := b
			d[at] ^= 0xff
			f.Add(d[:], true)
		}
		f.Add(b[:100], false)
	}
	f.Add([]byte{}, false)
	// A whole slot of the format before this one.
	prev := seeds[2].encode()
	binary.LittleEndian.PutUint32(prev[8:], headerVersion-1)
	fuzzSealSlot(prev[:])
	f.Add(prev[:], false)

	f.Fuzz(func(t *testing.T, in []byte, fixCRC bool) {
		// Any length at all is refused, never a panic.
		if _, err := decodeHeader(in); err == nil && len(in) != headerSlotSize {
			t.Fatalf("accepted a slot of %d bytes", len(in))
		}
		slot := make([]byte, headerSlotSize)
		copy(slot, in)
		if fixCRC {
			fuzzSealSlot(slot)
		}
		h, err := decodeHeader(slot)
		if err != nil {
			if !errors.Is(err, errBadSlot) {
				t.Fatalf("refusal is not errBadSlot: %v", err)
			}
			sealed := crc32.Checksum(slot[:headerSlotSize-4], castagnoli) == binary.LittleEndian.Uint32(slot[headerSlotSize-4:])
			if sealed && bytes.Equal(slot[:8], headerMagic[:]) && binary.LittleEndian.Uint32(slot[8:]) != headerVersion && !errors.Is(err, ErrVersion) {
				t.Fatalf("a whole slot of another version is refused without ErrVersion: %v", err)
			}
			return
		}
		enc := h.encode()
		h2, err := decodeHeader(enc[:])
		if err != nil {
			t.Fatalf("re-encoded header does not decode: %v\nheader: %+v", err, h)
		}
		if !reflect.DeepEqual(h, h2) {
			t.Fatalf("header changed in a round trip:\n got %+v\nwant %+v", h2, h)
		}
		// The encoding is canonical: what decoding tolerates (flags, padding)
		// is written the one way.
		if enc2 := h2.encode(); enc2 != enc {
			t.Fatalf("encoding is not stable:\n%x\n%x", enc, enc2)
		}
		// The fields the slot carries verbatim are the input's.
		if h.Seq != binary.LittleEndian.Uint64(slot[16:]) || !bytes.Equal(h.Key[:], slot[24:56]) ||
			h.Length != binary.LittleEndian.Uint64(slot[64:]) || !bytes.Equal(h.TreeHash[:], slot[80:112]) {
			t.Fatalf("decoded fields differ from the slot: %+v", h)
		}
		if len(h.Forks) > maxForkHistory || h.Length > merkle.MaxLength {
			t.Fatalf("decoded header out of bounds: %+v", h)
		}
	})
}

// fuzzRecord returns a bitfield file record holding pg, with a valid checksum.
func fuzzRecord(pg []byte) []byte {
	rec := make([]byte, recordSize)
	copy(rec, pg)
	binary.LittleEndian.PutUint32(rec[pageBytes:], crc32.Checksum(rec[:pageBytes], castagnoli))
	return rec
}

// fuzzSketchChunk is the size of one record in a sketch: the first
// fuzzSketchPage bytes of the page, then the record's 8-byte tail.
const (
	fuzzSketchPage  = 32
	fuzzSketchChunk = fuzzSketchPage + 8
)

// fuzzExpandSketch turns a sketch into bitfield file bytes: every whole chunk
// becomes a record whose page is the chunk's bytes followed by zeros, and a
// short last chunk becomes a partial record. Records are 4 KiB, and the
// fuzzer's minimizer takes time that grows with the square of an input's
// length, so raw files of a few records keep it busy for its whole budget;
// sketches keep the inputs that matter small.
func fuzzExpandSketch(sk []byte) []byte {
	var out []byte
	for len(sk) >= fuzzSketchChunk {
		rec := make([]byte, recordSize)
		copy(rec, sk[:fuzzSketchPage])
		copy(rec[pageBytes:], sk[fuzzSketchPage:fuzzSketchChunk])
		out = append(out, rec...)
		sk = sk[fuzzSketchChunk:]
	}
	return append(out, sk...)
}

// FuzzBitfieldLoad loads arbitrary bitfield files. Bit 0 of fix re-seals
// every record's checksum and bit 1 clears its padding, so that inputs get
// past the checks into the pages; bit 2 reads the input as a sketch.
func FuzzBitfieldLoad(f *testing.F) {
	some := make([]byte, pageBytes)
	for i := range some {
		some[i] = byte(i * 37)
	}
	valid := fuzzRecord(some)
	badCRC := slices.Clone(valid)
	badCRC[pageBytes] ^= 1
	// Raw files (fix bit 2 clear), a few, since they are long.
	for _, s := range [][]byte{nil, valid, slices.Concat(valid, badCRC), slices.Concat(valid, valid[:100])} {
		f.Add(s, uint8(0))
		f.Add(s, uint8(3))
	}
	// Sketches (fix bit 2 set).
	chunk := func(page []byte, tail ...byte) []byte {
		c := make([]byte, fuzzSketchChunk)
		copy(c, page)
		copy(c[fuzzSketchPage:], tail)
		return c
	}
	set := chunk([]byte{1, 0x80, 0xff, 0, 7})
	zero := chunk(nil)
	badPad := chunk([]byte{1}, 0, 0, 0, 0, 0, 0, 0, 1)
	for _, s := range [][]byte{
		set,
		zero,
		chunk(nil, 1), // a page of zero bits whose checksum is wrong
		slices.Concat(set, zero, chunk([]byte{1})),
		slices.Concat(zero, zero, set),
		badPad,
		slices.Concat(set, set[:7]),
		set[:fuzzSketchChunk-1],
	} {
		f.Add(s, uint8(4))
		f.Add(s, uint8(5))
		f.Add(s, uint8(7))
	}

	f.Fuzz(func(t *testing.T, in []byte, fix uint8) {
		if fix&4 != 0 {
			in = fuzzExpandSketch(in)
		}
		n := len(in) / recordSize
		if fix&3 != 0 {
			// Re-seal every whole record so the fuzzer reaches pages that
			// load, not only checksum failures.
			in = slices.Clone(in)
			for p := range n {
				rec := in[p*recordSize : (p+1)*recordSize]
				if fix&1 != 0 {
					binary.LittleEndian.PutUint32(rec[pageBytes:], crc32.Checksum(rec[:pageBytes], castagnoli))
				}
				if fix&2 != 0 {
					clear(rec[pageBytes+4:])
				}
			}
		}
		var wantDamaged []int
		for p := range n {
			rec := in[p*recordSize : (p+1)*recordSize]
			if !isZero(rec) && (binary.LittleEndian.Uint32(rec[pageBytes:]) != crc32.Checksum(rec[:pageBytes], castagnoli) || !isZero(rec[pageBytes+4:])) {
				wantDamaged = append(wantDamaged, p)
			}
		}

		b := newBitfield()
		damaged, err := b.load(&fuzzFile{name: "bitfield", data: in})
		if err != nil {
			t.Fatalf("load failed: %v", err)
		}
		if !slices.Equal(damaged, wantDamaged) {
			t.Fatalf("load reports pages %v damaged, the records that fail their checks are %v", damaged, wantDamaged)
		}
		if len(b.pages) != n {
			t.Fatalf("%d pages from %d whole records", len(b.pages), n)
		}
		var ones uint64
		for p := range n {
			rec := in[p*recordSize : (p+1)*recordSize]
			pg := b.pages[p]
			switch {
			case isZero(rec) || slices.Contains(damaged, p):
				if pg != nil {
					t.Fatalf("page %d: an unwritten or damaged record loaded as a page", p)
				}
				continue
			case pg == nil:
				t.Fatalf("page %d: a written record did not load", p)
			case !bytes.Equal(pg[:], rec[:pageBytes]):
				t.Fatalf("page %d differs from its record", p)
			}
			for _, c := range rec[:pageBytes] {
				ones += uint64(bits.OnesCount8(c))
			}
		}
		end := uint64(n) * pageBits
		if got := b.count(end); got != ones {
			t.Fatalf("count is %d, records hold %d set bits", got, ones)
		}
		// count short of the end takes off what lies past it, from the
		// bound load found (no bit at or past b.end is set).
		if b.end > end || b.end > 0 && !b.get(b.end-1) {
			t.Fatalf("the bits are said to end at %d of %d, where no bit is set", b.end, end)
		}
		for _, e := range []uint64{0, 1, 63, 64, 65, pageBits - 1, pageBits + 77, end / 2, b.end, b.end - min(b.end, 1)} {
			e = min(e, end)
			var want uint64
			for p := range int(e / pageBits) {
				if pg := b.pages[p]; pg != nil {
					for _, c := range pg {
						want += uint64(bits.OnesCount8(c))
					}
				}
			}
			for i := e / pageBits * pageBits; i < e; i++ {
				if b.get(i) {
					want++
				}
			}
			if got := b.count(e); got != want {
				t.Fatalf("count(%d) is %d, the pages hold %d set bits before it", e, got, want)
			}
		}
		// get reads bits one at a time where count reads whole pages; both
		// must see the records' bits, and none of a damaged record's.
		for p := range n {
			for _, j := range []uint64{0, 1, 7, 8, pageBits/2 + 3, pageBits - 1} {
				i := uint64(p)*pageBits + j
				want := !slices.Contains(damaged, p) && in[p*recordSize+int(j/8)]&(1<<(j%8)) != 0
				if b.get(i) != want {
					t.Fatalf("get(%d) = %v, record says %v", i, !want, want)
				}
			}
		}
		if b.get(end) || b.firstMissing(end, end+5) != end {
			t.Fatal("a block past the loaded pages reads as held")
		}

		// Whatever loaded writes back to a file that loads the same.
		for p := range n {
			b.dirty[p] = true
		}
		out := &fuzzFile{name: "bitfield-out"}
		if err := b.flush(out); err != nil {
			t.Fatal(err)
		}
		b2 := newBitfield()
		if damaged, err := b2.load(out); err != nil || len(damaged) > 0 {
			t.Fatalf("flushed bitfield does not load: %v, pages %v damaged", err, damaged)
		}
		for p := range n {
			var want, got page
			if b.pages[p] != nil {
				want = *b.pages[p]
			}
			if p < len(b2.pages) && b2.pages[p] != nil {
				got = *b2.pages[p]
			}
			if want != got {
				t.Fatalf("page %d changed in a flush and load", p)
			}
		}
	})
}

// Fuzz inputs for FuzzApplyProof encode a sequence of proofs:
//
//	input := opts:byte proof*          opts bit 0: sync mode; bits 1-3: proofs-1
//	proof := flags:byte fork:uvarint [block] [upgrade] [data]
//	         flags bit 0: block, bit 1: upgrade, bit 2: data (else nil)
//	block := index:uvarint nodes
//	upgrade := start:uvarint length:uvarint nodes siglen:byte sig
//	data := len:uvarint bytes
//	nodes := count:byte (index:uvarint size:uvarint hash:32 bytes)*
//
// Reading past the end yields zeros, so every input decodes to something.

type fuzzProof struct {
	p    *merkle.Proof
	data []byte
}

type fuzzReader struct{ b []byte }

func (r *fuzzReader) byte() byte {
	if len(r.b) == 0 {
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

func (r *fuzzReader) uvarint() uint64 {
	var v uint64
	for s := uint(0); s < 64; s += 7 {
		c := r.byte()
		v |= uint64(c&0x7f) << s
		if c < 0x80 {
			break
		}
	}
	return v
}

func (r *fuzzReader) bytes(n uint64) []byte {
	n = min(n, uint64(len(r.b)))
	b := make([]byte, n)
	copy(b, r.b)
	r.b = r.b[n:]
	return b
}

func (r *fuzzReader) nodes() []merkle.Node {
	var out []merkle.Node
	for k := int(r.byte()); k > 0 && len(r.b) > 0; k-- {
		n := merkle.Node{Index: r.uvarint(), Size: r.uvarint()}
		copy(n.Hash[:], r.bytes(32))
		out = append(out, n)
	}
	return out
}

func fuzzDecodeProofs(in []byte) (syncMode bool, proofs []fuzzProof) {
	r := &fuzzReader{b: in}
	opts := r.byte()
	for range 1 + int(opts>>1&7) {
		flags := r.byte()
		p := &merkle.Proof{Fork: r.uvarint()}
		if flags&1 != 0 {
			p.Block = &merkle.BlockProof{Index: r.uvarint(), Nodes: r.nodes()}
		}
		if flags&2 != 0 {
			u := &merkle.UpgradeProof{Start: r.uvarint(), Length: r.uvarint(), Nodes: r.nodes()}
			if n := r.byte(); n > 0 {
				u.Signature = r.bytes(uint64(n))
			}
			p.Upgrade = u
		}
		var data []byte
		if flags&4 != 0 {
			data = r.bytes(r.uvarint())
		}
		proofs = append(proofs, fuzzProof{p, data})
	}
	return opts&1 != 0, proofs
}

func fuzzAppendNodes(out []byte, nodes []merkle.Node) []byte {
	if len(nodes) > 255 {
		panic("too many nodes to encode")
	}
	out = append(out, byte(len(nodes)))
	for _, n := range nodes {
		out = binary.AppendUvarint(out, n.Index)
		out = binary.AppendUvarint(out, n.Size)
		out = append(out, n.Hash[:]...)
	}
	return out
}

func fuzzEncodeProofs(syncMode bool, proofs []fuzzProof) []byte {
	if len(proofs) < 1 || len(proofs) > 8 {
		panic("1 to 8 proofs encode")
	}
	opts := byte(len(proofs)-1) << 1
	if syncMode {
		opts |= 1
	}
	out := []byte{opts}
	for _, fp := range proofs {
		p := fp.p
		var flags byte
		if p.Block != nil {
			flags |= 1
		}
		if p.Upgrade != nil {
			flags |= 2
		}
		if fp.data != nil {
			flags |= 4
		}
		out = append(out, flags)
		out = binary.AppendUvarint(out, p.Fork)
		if b := p.Block; b != nil {
			out = binary.AppendUvarint(out, b.Index)
			out = fuzzAppendNodes(out, b.Nodes)
		}
		if u := p.Upgrade; u != nil {
			out = binary.AppendUvarint(out, u.Start)
			out = binary.AppendUvarint(out, u.Length)
			out = fuzzAppendNodes(out, u.Nodes)
			out = append(out, byte(len(u.Signature)))
			out = append(out, u.Signature...)
		}
		if fp.data != nil {
			out = binary.AppendUvarint(out, uint64(len(fp.data)))
			out = append(out, fp.data...)
		}
	}
	return out
}

func fuzzCloneProof(fp fuzzProof) fuzzProof {
	p := *fp.p
	if p.Block != nil {
		b := *p.Block
		b.Nodes = slices.Clone(b.Nodes)
		p.Block = &b
	}
	if p.Upgrade != nil {
		u := *p.Upgrade
		u.Nodes = slices.Clone(u.Nodes)
		u.Signature = slices.Clone(u.Signature)
		p.Upgrade = &u
	}
	return fuzzProof{&p, slices.Clone(fp.data)}
}

type fuzzHead struct {
	fork, length uint64
	hash         [32]byte
}

// fuzzWorld is what FuzzApplyProof checks replicas against: the writer's
// history, fork by fork, and every head it signed.
type fuzzWorld struct {
	key   Key
	base  *fuzzFS // the replica every input starts from
	hist  [][][]byte
	heads map[fuzzHead]bool
}

// fuzzBlock is block i of the writer's history at a fork; one block is empty,
// since a zero-size leaf is an edge case of the tree.
func fuzzBlock(fork, i int) []byte {
	if i == 13 {
		return []byte{}
	}
	return fmt.Appendf(nil, "fork %d block %d%s", fork, i, bytes.Repeat([]byte{'.'}, i%7))
}

// check verifies the replica against the writer.
func (w *fuzzWorld) check(r *Feed) error {
	ctx := context.Background()
	if err := r.Verify(ctx); err != nil {
		return err
	}
	h := r.Head()
	if len(h.Signature) == 0 {
		return fmt.Errorf("head %d at fork %d is unsigned", h.Length, h.Fork)
	}
	if !w.heads[fuzzHead{h.Fork, h.Length, h.TreeHash}] {
		return fmt.Errorf("head %d at fork %d is not one the writer signed", h.Length, h.Fork)
	}
	hist := w.hist[h.Fork]
	var held, byteLen uint64
	for i := range h.Length {
		byteLen += uint64(len(hist[i]))
		if !r.Has(i) {
			continue
		}
		held++
		b, err := r.Get(ctx, i)
		if err != nil {
			return err
		}
		if !bytes.Equal(b, hist[i]) {
			return fmt.Errorf("block %d is %q, the writer's is %q", i, b, hist[i])
		}
	}
	if d := r.Downloaded(); d != held {
		return fmt.Errorf("Downloaded is %d, Has says %d", d, held)
	}
	if bl := r.ByteLen(); bl != byteLen {
		return fmt.Errorf("ByteLen is %d, the writer's blocks hold %d", bl, byteLen)
	}
	return nil
}

// fuzzBuildWorld builds the writer's history and the replica fuzz inputs
// start from, and returns seed inputs made of the writer's real proofs.
// Everything is deterministic, so that every fuzzing worker process builds
// the same world and an input means the same thing in each.
//
// The writer appends 40 blocks at fork 0 (heads 8, 20, 28, 40), truncates to
// 30 (fork 1) and appends to 42 (heads 30, 36, 42). The replica holds the
// head of length 20 and blocks 0, 3, 7, 12, 13 and 19.
func fuzzBuildWorld(f *testing.F) (*fuzzWorld, [][]fuzzProof) {
	sk := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{0x42}, ed25519.SeedSize))
	w, err := Open(f.TempDir(), &Options{SecretKey: sk})
	if err != nil {
		f.Fatal(err)
	}
	defer w.Close()
	world := &fuzzWorld{key: w.Key(), heads: map[fuzzHead]bool{}}
	var hist0, hist1 [][]byte
	for i := range 40 {
		hist0 = append(hist0, fuzzBlock(0, i))
	}
	hist1 = slices.Clone(hist0[:30])
	for i := 30; i < 42; i++ {
		hist1 = append(hist1, fuzzBlock(1, i))
	}
	world.hist = [][][]byte{hist0, hist1}
	record := func() {
		h := w.Head()
		world.heads[fuzzHead{h.Fork, h.Length, h.TreeHash}] = true
	}
	appendTo := func(hist [][]byte, end int) {
		if _, err := w.Append(hist[w.Len():end]...); err != nil {
			f.Fatal(err)
		}
		record()
	}
	prove := func(req Request) fuzzProof {
		p, data, err := w.Prove(req)
		if err != nil {
			f.Fatal(err)
		}
		return fuzzProof{p, data}
	}
	apply := func(r *Feed, fp fuzzProof) fuzzProof {
		if err := r.ApplyProof(fp.p, fp.data); err != nil {
			f.Fatal(err)
		}
		return fp
	}
	var sims []*Feed
	defer func() {
		for _, s := range sims {
			s.Close()
		}
	}()
	sim := func(fsys *fuzzFS) *Feed {
		r, err := Open("r", &Options{Key: world.key, FS: fsys})
		if err != nil {
			f.Fatal(err)
		}
		sims = append(sims, r)
		return r
	}

	var seeds [][]fuzzProof
	appendTo(hist0, 8)
	appendTo(hist0, 20)
	world.base = newFuzzFS()
	r := sim(world.base)
	initial := apply(r, prove(r.UpgradeRequest()))
	for _, i := range []uint64{0, 3, 7, 12, 13, 19} {
		apply(r, prove(r.BlockRequest(i)))
	}
	if err := r.Close(); err != nil {
		f.Fatal(err)
	}
	base := func() *Feed { return sim(world.base.clone()) }

	// Writer at 20: blocks under the replica's head, and a stale upgrade.
	r = base()
	seeds = append(seeds, []fuzzProof{initial})
	for _, i := range []uint64{1, 2, 5, 18} {
		seeds = append(seeds, []fuzzProof{prove(r.BlockRequest(i))})
	}
	seeds = append(seeds, []fuzzProof{apply(r, prove(r.BlockRequest(1))), apply(r, prove(r.BlockRequest(2)))})

	// Writer at 28, then 40: a replica that follows it.
	appendTo(hist0, 28)
	s1 := base()
	pA := apply(s1, prove(s1.UpgradeRequest()))
	appendTo(hist0, 40)
	r = base()
	seeds = append(seeds, []fuzzProof{prove(r.UpgradeRequest())})
	for _, i := range []uint64{4, 12, 25, 33, 39} {
		seeds = append(seeds, []fuzzProof{prove(r.BlockRequest(i))})
	}
	pB := apply(s1, prove(s1.UpgradeRequest()))
	pC := apply(s1, prove(s1.BlockRequest(30)))
	seeds = append(seeds, []fuzzProof{pA, pB, pC})
	s2 := base()
	seeds = append(seeds, []fuzzProof{
		apply(s2, prove(s2.UpgradeRequest())),
		apply(s2, prove(s2.BlockRequest(25))),
		apply(s2, prove(s2.BlockRequest(26))),
		apply(s2, prove(s2.BlockRequest(2))),
	})
	blockUnderNewHead := prove(s2.BlockRequest(33))
	up := prove(base().BlockRequest(33)) // block and upgrade, with nodes in both

	// Fork 1: the writer truncates to 30 and grows to 42.
	if err := w.Truncate(30); err != nil {
		f.Fatal(err)
	}
	record()
	appendTo(hist1, 36)
	appendTo(hist1, 42)
	r = base()
	forkUp := prove(r.UpgradeRequest())
	seeds = append(seeds, []fuzzProof{forkUp}, []fuzzProof{prove(r.BlockRequest(35))})
	pD := apply(s1, prove(s1.UpgradeRequest())) // from 40 blocks back to the shared 30
	pE := apply(s1, prove(s1.BlockRequest(35)))
	seeds = append(seeds, []fuzzProof{pA, pB, pC, pD, pE})
	s3 := base()
	seeds = append(seeds, []fuzzProof{
		apply(s3, prove(s3.UpgradeRequest())),
		apply(s3, prove(s3.BlockRequest(35))),
		apply(s3, prove(s3.BlockRequest(5))),
		apply(s3, prove(s3.BlockRequest(41))),
	})
	// A block proof at fork 1 joined to the fork upgrade, as one proof.
	joined := fuzzCloneProof(prove(s3.BlockRequest(38)))
	joined.p.Upgrade = fuzzCloneProof(forkUp).p.Upgrade
	seeds = append(seeds, []fuzzProof{joined})
	seeds = append(seeds, []fuzzProof{blockUnderNewHead}, []fuzzProof{pB, pD})

	// Small mutations of real proofs, each of which the replica must refuse.
	mutate := func(fp fuzzProof, edit func(p *merkle.Proof, data []byte) []byte) {
		c := fuzzCloneProof(fp)
		c.data = edit(c.p, c.data)
		seeds = append(seeds, []fuzzProof{c})
	}
	mutate(up, func(p *merkle.Proof, d []byte) []byte { p.Block.Nodes[0].Hash[0] ^= 1; return d })
	mutate(up, func(p *merkle.Proof, d []byte) []byte { p.Block.Nodes[0].Size++; return d })
	mutate(up, func(p *merkle.Proof, d []byte) []byte { p.Block.Index++; return d })
	mutate(up, func(p *merkle.Proof, d []byte) []byte { p.Upgrade.Nodes[0].Hash[5] ^= 1; return d })
	mutate(up, func(p *merkle.Proof, d []byte) []byte { p.Upgrade.Start--; return d })
	mutate(up, func(p *merkle.Proof, d []byte) []byte { p.Upgrade.Length--; return d })
	mutate(up, func(p *merkle.Proof, d []byte) []byte { p.Upgrade.Signature[0] ^= 1; return d })
	mutate(up, func(p *merkle.Proof, d []byte) []byte { p.Fork++; return d })
	mutate(up, func(p *merkle.Proof, d []byte) []byte { d[0] ^= 1; return d })
	mutate(up, func(p *merkle.Proof, d []byte) []byte { return append(d, 0) })
	mutate(up, func(p *merkle.Proof, d []byte) []byte { p.Upgrade = nil; return d })
	mutate(forkUp, func(p *merkle.Proof, d []byte) []byte { p.Upgrade.Start = 19; return d })
	mutate(forkUp, func(p *merkle.Proof, d []byte) []byte { p.Fork = 2; return d })

	// The codec must carry the real proofs exactly, or the seeds mean less
	// than they seem to.
	for _, s := range seeds {
		_, got := fuzzDecodeProofs(fuzzEncodeProofs(false, s))
		if !reflect.DeepEqual(got, s) {
			f.Fatalf("proof codec round trip changed a seed:\n got %+v\nwant %+v", got, s)
		}
	}
	return world, seeds
}

// fuzzHang is how long one ApplyProof of a few tiny blocks in memory may take
// before it counts as a deadlock. It is a deadline, not a wait: a call that
// returns ends the wait at once.
const fuzzHang = 3 * time.Second

// fuzzApply applies a proof on another goroutine, so that a deadlock fails
// the input quickly instead of hanging the whole test binary; ok is false if
// ApplyProof did not return in time, and the goroutine is then left stuck.
func fuzzApply(r *Feed, fp fuzzProof) (ok bool, err error) {
	done := make(chan error, 1)
	go func() { done <- r.ApplyProof(fp.p, fp.data) }()
	timer := time.NewTimer(fuzzHang)
	defer timer.Stop()
	select {
	case err := <-done:
		return true, err
	case <-timer.C:
		return false, nil
	}
}

func FuzzApplyProof(f *testing.F) {
	world, seeds := fuzzBuildWorld(f)
	for _, s := range seeds {
		f.Add(fuzzEncodeProofs(false, s))
		f.Add(fuzzEncodeProofs(true, s))
	}
	if err := func() error {
		r, err := Open("r", &Options{Key: world.key, FS: world.base.clone()})
		if err != nil {
			return err
		}
		defer r.Close()
		return world.check(r)
	}(); err != nil {
		f.Fatalf("the base replica fails its own checks: %v", err)
	}

	f.Fuzz(func(t *testing.T, in []byte) {
		syncMode, proofs := fuzzDecodeProofs(in)
		fsys := world.base.clone()
		r, err := Open("r", &Options{Key: world.key, FS: fsys, Sync: syncMode})
		if err != nil {
			t.Fatal(err)
		}
		hung := false
		defer func() {
			// Close would wait on the same stuck commit.
			if !hung {
				r.Close()
			}
		}()
		for k, fp := range proofs {
			before, held := r.Head(), r.Downloaded()
			ok, err := fuzzApply(r, fp)
			if !ok {
				hung = true
				t.Fatalf("proof %d: ApplyProof (sync %v) did not return within %v", k, syncMode, fuzzHang)
			}
			if werr := fsys.wild(); werr != nil {
				t.Fatalf("proof %d: %v", k, werr)
			}
			if err != nil {
				switch {
				case errors.Is(err, ErrInvalidProof), errors.Is(err, ErrStale), errors.Is(err, ErrStaleFork),
					errors.Is(err, ErrNotAvailable), errors.Is(err, ErrBlockTooLarge):
				default:
					t.Fatalf("proof %d: a healthy replica failed with an unexpected error: %v", k, err)
				}
				// Nothing is stored unless all of it verifies.
				if after := r.Head(); !reflect.DeepEqual(after, before) || r.Downloaded() != held {
					t.Fatalf("proof %d was refused (%v) but changed the replica: head %+v -> %+v, blocks %d -> %d",
						k, err, before, after, held, r.Downloaded())
				}
			}
			if cerr := world.check(r); cerr != nil {
				t.Fatalf("proof %d (ApplyProof: %v): %v", k, err, cerr)
			}
		}
		// What the replica acknowledged is what it reopens with.
		head := r.Head()
		if err := r.Close(); err != nil {
			t.Fatal(err)
		}
		r, err = Open("r", &Options{Key: world.key, FS: fsys})
		if err != nil {
			t.Fatalf("reopen: %v", err)
		}
		defer r.Close()
		if got := r.Head(); !reflect.DeepEqual(got, head) {
			t.Fatalf("reopened at head %+v, closed at %+v", got, head)
		}
		if err := world.check(r); err != nil {
			t.Fatalf("after reopen: %v", err)
		}
	})
}
