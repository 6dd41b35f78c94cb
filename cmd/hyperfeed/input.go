package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"

	"github.com/hyperfeed/hyperfeed/feed"
)

// How input becomes blocks.
type splitMode int

const (
	splitLines  splitMode = iota // one block per line, without its "\n"
	splitChunks                  // fixed-size blocks, the last one shorter
	splitWhole                   // the whole input as one block
)

type splitOptions struct {
	mode  splitMode
	chunk int
}

// splitFlags defines --chunk and --whole on fs; the function it returns
// checks them once fs is parsed.
func splitFlags(fs *flag.FlagSet) func() (splitOptions, error) {
	chunk := fs.String("chunk", "", "cut the input into blocks of `SIZE` bytes (K, KiB, M, MiB allowed) instead of lines")
	whole := fs.Bool("whole", false, "append the whole input as one block instead of lines")
	return func() (splitOptions, error) {
		switch {
		case *chunk != "" && *whole:
			return splitOptions{}, usageErrorf("--chunk and --whole exclude each other")
		case *whole:
			return splitOptions{mode: splitWhole}, nil
		case *chunk != "":
			n, err := parseSize(*chunk)
			if err != nil {
				return splitOptions{}, usageErrorf("--chunk: %v", err)
			}
			if n < 1 || n > feed.MaxBlockSize {
				return splitOptions{}, usageErrorf("--chunk: %s is not between 1 byte and the largest block, %s", *chunk, humanBytes(feed.MaxBlockSize))
			}
			return splitOptions{mode: splitChunks, chunk: n}, nil
		}
		return splitOptions{mode: splitLines}, nil
	}
}

// One Append call signs the head once and writes each file once, so a big
// input goes in big batches; these bound the memory a batch holds.
const (
	batchBytes  = 8 << 20
	batchBlocks = 1 << 16
)

// A blockRun is blocks read together; its blocks share one backing array.
type blockRun struct {
	blocks [][]byte
	bytes  int
	err    error // the input failed after these blocks
}

type splitter struct {
	opts  splitOptions
	br    *bufio.Reader
	lines int // lines read, for messages
}

// next reads one block into arena and returns the grown arena and the block,
// or io.EOF when the input ends. Blocks handed out earlier stay valid when
// arena grows: they keep the array they were read into.
func (s *splitter) next(arena []byte) ([]byte, []byte, error) {
	start := len(arena)
	switch s.opts.mode {
	case splitWhole:
		b, err := io.ReadAll(io.LimitReader(s.br, feed.MaxBlockSize+1))
		switch {
		case err != nil:
			return arena, nil, err
		case len(b) > feed.MaxBlockSize:
			return arena, nil, fmt.Errorf("the input is larger than the largest block (%s): use --chunk", humanBytes(feed.MaxBlockSize))
		case len(b) == 0:
			return arena, nil, io.EOF // also what the call after the block gets
		}
		return arena, b, nil
	case splitChunks:
		arena = slices.Grow(arena, s.opts.chunk)[:start+s.opts.chunk]
		n, err := io.ReadFull(s.br, arena[start:])
		arena = arena[:start+n]
		if errors.Is(err, io.ErrUnexpectedEOF) {
			err = nil // the last, shorter block; the next call gets io.EOF
		}
		if err != nil {
			return arena, nil, err
		}
		return arena, arena[start:], nil
	}
	for {
		frag, err := s.br.ReadSlice('\n')
		arena = append(arena, frag...)
		if len(arena)-start > feed.MaxBlockSize+1 {
			return arena, nil, fmt.Errorf("line %d is longer than the largest block (%s): use --chunk", s.lines+1, humanBytes(feed.MaxBlockSize))
		}
		switch {
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF) && len(arena) > start:
			s.lines++ // a last line without "\n"
			return arena, arena[start:], nil
		case err != nil:
			return arena, nil, err
		}
		s.lines++
		return arena, arena[start : len(arena)-1], nil
	}
}

// readRuns sends the input's blocks to out in runs, and closes out at the
// end. A run ends when the input has nothing more buffered, so a fast input
// makes big runs and a slow one (a pipe from a live program) has each block
// appended as soon as it is complete.
func (s *splitter) readRuns(out chan<- blockRun, stop <-chan struct{}) {
	defer close(out)
	for {
		var r blockRun
		arena := make([]byte, 0, 64<<10)
		var err error
		for {
			var b []byte
			arena, b, err = s.next(arena)
			if err != nil {
				break
			}
			r.blocks = append(r.blocks, b)
			r.bytes += len(b)
			if r.bytes >= batchBytes || len(r.blocks) >= batchBlocks || s.br.Buffered() == 0 {
				break
			}
		}
		if err != nil && !errors.Is(err, io.EOF) {
			r.err = err
		}
		if len(r.blocks) > 0 || r.err != nil {
			select {
			case out <- r:
			case <-stop:
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// appendInput appends the blocks of in to f until in ends, and calls each
// (if not nil) with the length after every Append. It returns how many
// blocks it appended. If ctx ends first, the blocks read but not appended
// are dropped and the cause is returned; the goroutine reading in then stays
// blocked in its Read until in ends or the process exits, since a read from
// a terminal or pipe cannot be cancelled.
func appendInput(ctx context.Context, f *feed.Feed, in io.Reader, opts splitOptions, each func(uint64)) (uint64, error) {
	s := &splitter{opts: opts, br: bufio.NewReaderSize(in, 1<<20)}
	runs := make(chan blockRun, 8) // lets reading run ahead of appending
	stop := make(chan struct{})
	defer close(stop)
	go s.readRuns(runs, stop)
	var appended uint64
	for {
		var batch [][]byte
		var size int
		var err error
		select {
		case <-ctx.Done():
			return appended, context.Cause(ctx)
		case r, ok := <-runs:
			if !ok {
				return appended, nil
			}
			batch, size, err = r.blocks, r.bytes, r.err
		}
		// Add whatever else is ready, up to a batch.
	more:
		for err == nil && size < batchBytes && len(batch) < batchBlocks {
			select {
			case r, ok := <-runs:
				if !ok {
					break more
				}
				batch, size, err = append(batch, r.blocks...), size+r.bytes, r.err
			default:
				break more
			}
		}
		if len(batch) > 0 {
			length, aerr := f.Append(batch...)
			if aerr != nil {
				return appended, aerr
			}
			appended += uint64(len(batch))
			if each != nil {
				each(length)
			}
		}
		if err != nil {
			return appended, fmt.Errorf("reading input: %w", err)
		}
	}
}
