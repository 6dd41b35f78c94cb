package main

import (
	"bufio"
	"context"
	"errors"
	"io"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/hyperfeed/hyperfeed/feed"
)

func split(t *testing.T, in io.Reader, opts splitOptions) ([]string, error) {
	t.Helper()
	s := &splitter{opts: opts, br: bufio.NewReaderSize(in, 16)} // a small buffer: lines span reads
	var out []string
	var arena []byte
	for {
		var b []byte
		var err error
		arena, b, err = s.next(arena)
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		out = append(out, string(b))
	}
}

func TestSplit(t *testing.T) {
	long := strings.Repeat("L", 100)
	for _, c := range []struct {
		name string
		in   string
		opts splitOptions
		want []string
	}{
		{"lines", "a\n\nb\r\n" + long + "\nlast", splitOptions{mode: splitLines}, []string{"a", "", "b\r", long, "last"}},
		{"no input", "", splitOptions{mode: splitLines}, nil},
		{"one newline", "\n", splitOptions{mode: splitLines}, []string{""}},
		{"chunks", "abcdefghij", splitOptions{mode: splitChunks, chunk: 4}, []string{"abcd", "efgh", "ij"}},
		{"exact chunks", "abcdefgh", splitOptions{mode: splitChunks, chunk: 4}, []string{"abcd", "efgh"}},
		{"whole", "a\nb\n", splitOptions{mode: splitWhole}, []string{"a\nb\n"}},
		{"whole, empty", "", splitOptions{mode: splitWhole}, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			// One byte per read, too: blocks must not depend on how input arrives.
			for _, in := range []io.Reader{strings.NewReader(c.in), iotest.OneByteReader(strings.NewReader(c.in))} {
				got, err := split(t, in, c.opts)
				if err != nil || !slices.Equal(got, c.want) {
					t.Errorf("got %q, %v; want %q", got, err, c.want)
				}
			}
		})
	}
}

func TestSplitStopsAtReadError(t *testing.T) {
	boom := errors.New("boom")
	got, err := split(t, io.MultiReader(strings.NewReader("a\nb"), iotest.ErrReader(boom)), splitOptions{mode: splitLines})
	if !errors.Is(err, boom) || !slices.Equal(got, []string{"a"}) {
		t.Errorf("got %q, %v: want the complete line, then the error", got, err)
	}
}

// appendInput keeps the order of blocks however the input is cut into runs
// and batches, and a failing input leaves the blocks before the failure.
func TestAppendInput(t *testing.T) {
	f, err := feed.Open(filepath.Join(t.TempDir(), "f"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	in := lines("n", 3000)
	var lengths []uint64
	n, err := appendInput(context.Background(), f, iotest.HalfReader(strings.NewReader(in)), splitOptions{mode: splitLines}, func(l uint64) { lengths = append(lengths, l) })
	if err != nil || n != 3000 || f.Len() != 3000 {
		t.Fatalf("appended %d (length %d), %v", n, f.Len(), err)
	}
	if !slices.IsSorted(lengths) || lengths[len(lengths)-1] != 3000 {
		t.Errorf("lengths reported %v", lengths)
	}
	var b strings.Builder
	for i := range f.Len() {
		blk, err := f.Get(context.Background(), i)
		if err != nil {
			t.Fatal(err)
		}
		b.Write(blk)
		b.WriteByte('\n')
	}
	if b.String() != in {
		t.Error("blocks differ from the input lines")
	}

	boom := errors.New("boom")
	n, err = appendInput(context.Background(), f, io.MultiReader(strings.NewReader("x\ny\n"), iotest.ErrReader(boom)), splitOptions{mode: splitLines}, nil)
	if !errors.Is(err, boom) || n != 2 || f.Len() != 3002 {
		t.Errorf("failing input: appended %d (length %d), %v", n, f.Len(), err)
	}
}

// Cancelled, appendInput returns the cause at once, and its reader goroutine
// ends when the input does (goleak checks that).
func TestAppendInputCancelled(t *testing.T) {
	f, err := feed.Open(filepath.Join(t.TempDir(), "f"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	pr, pw := io.Pipe()
	ctx, cancel := context.WithCancelCause(context.Background())
	cancel(interrupted{2})
	_, err = appendInput(ctx, f, pr, splitOptions{mode: splitLines}, nil)
	if _, ok := errors.AsType[interrupted](err); !ok {
		t.Errorf("err = %v, want the interruption", err)
	}
	pw.Close()
}
