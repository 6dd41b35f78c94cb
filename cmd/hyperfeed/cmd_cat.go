package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strconv"

	"github.com/hyperfeed/hyperfeed/feed"
	"github.com/hyperfeed/hyperfeed/swarm"
)

func cmdCat(e *env, args []string) error {
	fs := e.flags()
	start := fs.Uint64("start", 0, "write from block `N`")
	var end optUint
	fs.Var(&end, "end", "stop before block `N` (default: the feed's length; with --live: never)")
	raw := fs.Bool("raw", false, "write blocks back to back, as they were appended with --chunk or --whole; by default each block is followed by a newline")
	live := fs.Bool("live", false, "on a replica: fetch blocks from peers and wait for new ones until --end or interrupted")
	dir, f, err := e.openFeedOperand(fs, args)
	if err != nil {
		return err
	}
	defer f.Close()
	w := bufio.NewWriterSize(e.stdout, 256<<10)
	sep := []byte("\n")
	if *raw {
		sep = nil
	}
	if *live {
		err = e.catLive(f, w, sep, *start, end)
	} else {
		err = e.catHeld(f, w, sep, dir, *start, end)
	}
	if ferr := w.Flush(); err == nil {
		err = ferr
	}
	if errors.Is(err, feed.ErrCorrupt) {
		return corruption(dir, err)
	}
	return err
}

// catHeld writes blocks [start, end) that the feed holds, and fails at the
// first it lacks: without --live, cat does not touch the network.
func (e *env) catHeld(f *feed.Feed, w io.Writer, sep []byte, dir string, start uint64, end optUint) error {
	length := f.Len()
	stop := length
	if end.set {
		stop = end.v
	}
	switch {
	case stop > length:
		return usageErrorf("--end %d is past the feed's length, %d", stop, length)
	case start > stop:
		return usageErrorf("--start %d is past the end, %d", start, stop)
	}
	for i := start; i < stop; i++ {
		if err := e.interruption(); err != nil {
			return err
		}
		if !f.Has(i) {
			return fmt.Errorf("%s lacks block %d: finish it with hyperfeed clone, or use --live", dir, i)
		}
		if err := writeBlock(e, f, w, sep, i); err != nil {
			return err
		}
	}
	return nil
}

// catLive fetches the blocks from peers and writes them in order as they
// come, waiting for the feed to grow when it reaches the end.
func (e *env) catLive(f *feed.Feed, w *bufio.Writer, sep []byte, start uint64, end optUint) error {
	if f.Writable() {
		// The feed is locked by this process, so no other can append to it.
		return usageErrorf("--live follows a replica; this is the writable feed, which only grows by append or share --append")
	}
	if end.set && start > end.v {
		return usageErrorf("--start %d is past --end %d", start, end.v)
	}
	n, err := e.startNetwork()
	if err != nil {
		return err
	}
	defer n.close()
	n.warnIfAlone(e)
	r, err := n.sw.Replicate(f)
	if err != nil {
		return err
	}
	stop := uint64(swarm.Live)
	if end.set {
		stop = end.v
	}
	// Get alone would fetch one block per round trip; the download keeps
	// the window of requests full ahead of it.
	d := r.Download(start, stop)
	defer d.Cancel()
	for i := start; i < stop; i++ {
		if !f.Has(i) {
			// About to wait: show what is written so far.
			if err := w.Flush(); err != nil {
				return err
			}
		}
		if err := writeBlock(e, f, w, sep, i); err != nil {
			if e.ctx.Err() != nil {
				return nil // interrupted: the usual end of --live
			}
			return err
		}
	}
	return nil
}

func writeBlock(e *env, f *feed.Feed, w io.Writer, sep []byte, i uint64) error {
	b, err := f.Get(e.ctx, i)
	if err != nil {
		return err
	}
	if _, err := w.Write(b); err != nil {
		return err
	}
	_, err = w.Write(sep)
	return err
}

// optUint is a uint64 flag that knows whether it was given.
type optUint struct {
	v   uint64
	set bool
}

func (o *optUint) String() string {
	if !o.set {
		return ""
	}
	return strconv.FormatUint(o.v, 10)
}

func (o *optUint) Set(s string) error {
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return errors.New("want a block number")
	}
	o.v, o.set = v, true
	return nil
}
