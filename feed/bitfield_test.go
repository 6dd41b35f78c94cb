package feed

import (
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/hyperfeed/hyperfeed/merkle"
)

// TestBitfieldAnySet checks anySet, which skips whole bytes, against bits
// read one at a time, over ranges that start and end anywhere in a byte and
// cross pages, missing pages and the end.
func TestBitfieldAnySet(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for trial := range 40 {
		b := newBitfield()
		end := uint64(3*pageBits + 100)
		var set []uint64
		for range rng.IntN(6) {
			i := rng.Uint64N(end)
			b.setRange(i, i+1, true)
			set = append(set, i)
		}
		if trial%3 == 0 && len(b.pages) > 1 {
			b.pages[1] = nil // a page never written
		}
		for range 25 {
			start := rng.Uint64N(end + 10)
			if len(set) > 0 && rng.IntN(2) == 0 {
				// Just before or after a set bit, in its byte or the next.
				start = max(set[rng.IntN(len(set))]+uint64(rng.IntN(17)), 8) - 8
			}
			span := uint64(300)
			if rng.IntN(5) == 0 {
				span = 2 * pageBits
			}
			stop := start + rng.Uint64N(span)
			want := false
			for i := start; i < stop; i++ {
				want = want || b.get(i)
			}
			if got := b.anySet(start, stop); got != want {
				t.Fatalf("anySet(%d, %d) = %v, bits say %v", start, stop, got, want)
			}
		}
	}
}

// TestBitfieldUnsetFresh checks that a failed write clears only the bits it
// set, and that the pages it touched are written again.
func TestBitfieldUnsetFresh(t *testing.T) {
	b := newBitfield()
	b.setRange(3, 5, true)
	clear(b.dirty)
	fresh := b.setNew(2, 7, nil)
	if len(fresh) != 3 || fresh[0] != 2 || fresh[1] != 5 || fresh[2] != 6 {
		t.Fatalf("fresh bits %v, want [2 5 6]", fresh)
	}
	clear(b.dirty) // as a flush that wrote the page before the failure
	b.unset(fresh)
	for i := range uint64(8) {
		if b.get(i) != (i == 3 || i == 4) {
			t.Fatalf("bit %d is %v after the undo", i, b.get(i))
		}
	}
	if !b.dirty[0] {
		t.Fatal("the page the failed write changed is not to be written again")
	}
}

// TestNodeRecord checks the tree record: whole, absent, and written in part
// or damaged, which is neither.
func TestNodeRecord(t *testing.T) {
	n := merkle.Leaf(5, []byte("block 5"))
	var rec [nodeSize]byte
	putNode(rec[:], n)
	if got, err := decodeNode(n.Index, rec[:]); err != nil || got != n {
		t.Fatalf("decoded %v, %v; want %v", got, err, n)
	}
	var zero [nodeSize]byte
	if got, err := decodeNode(7, zero[:]); err != nil || !got.IsZero() || got.Index != 7 {
		t.Fatalf("an absent record decoded as %v, %v", got, err)
	}
	for cut := 1; cut < nodeSize; cut++ {
		// A write stopped after cut bytes, or whose first cut bytes were
		// lost, over an absent node.
		var head, tail [nodeSize]byte
		copy(head[:cut], rec[:cut])
		copy(tail[cut:], rec[cut:])
		for _, torn := range [][nodeSize]byte{head, tail} {
			if torn == rec || torn == zero {
				continue // the padding is zeros: nothing was lost
			}
			if _, err := decodeNode(n.Index, torn[:]); !errors.Is(err, errDamagedNode) || !errors.Is(err, ErrCorrupt) {
				t.Fatalf("a record torn at byte %d decoded with %v", cut, err)
			}
		}
	}
	rec[nodeSize-1] = 1 // the padding
	if _, err := decodeNode(n.Index, rec[:]); !errors.Is(err, errDamagedNode) {
		t.Fatalf("a record with padding set decoded with %v", err)
	}
}

// count keeps a running total of the bits set; it must agree with counting
// them one by one, whatever sets and clears them, and after a reload.
func TestBitfieldCount(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	b := newBitfield()
	naive := func(end uint64) uint64 {
		var n uint64
		for i := range end {
			if b.get(i) {
				n++
			}
		}
		return n
	}
	const span = 3*pageBits + 100
	for round := range 400 {
		start := rng.Uint64N(span)
		end := min(start+rng.Uint64N(2*pageBits), span)
		if rng.IntN(3) == 0 {
			b.unset([]uint64{start, end - 1})
		} else {
			b.setRange(start, end, rng.IntN(2) == 0)
		}
		for _, end := range []uint64{0, 1, 63, 64, 65, pageBits - 1, pageBits, pageBits + 77, span, span + pageBits, rng.Uint64N(span)} {
			if got, want := b.count(end), naive(end); got != want {
				t.Fatalf("round %d: count(%d) = %d, want %d", round, end, got, want)
			}
		}
	}
	f, err := os.Create(filepath.Join(t.TempDir(), "bitfield"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b.dirty = map[int]bool{0: true, 1: true, 2: true, 3: true}
	if err := b.flush(f); err != nil {
		t.Fatal(err)
	}
	loaded := newBitfield()
	if _, err := loaded.load(f); err != nil {
		t.Fatal(err)
	}
	for _, end := range []uint64{0, 1, 64, pageBits, pageBits + 77, span} {
		if got, want := loaded.count(end), b.count(end); got != want {
			t.Fatalf("after reload: count(%d) = %d, want %d", end, got, want)
		}
	}
	if loaded.end > b.end {
		t.Fatalf("after reload, bits end at %d, past %d", loaded.end, b.end)
	}
}
