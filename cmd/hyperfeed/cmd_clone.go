package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/hyperfeed/hyperfeed/feed"
	"github.com/hyperfeed/hyperfeed/swarm"
)

func cmdClone(e *env, args []string) error {
	fs := e.flags()
	live := fs.Bool("live", false, "once complete, keep following the feed's new blocks until interrupted")
	ops, err := e.parse(fs, args, 2)
	if err != nil {
		return err
	}
	key, err := feed.ParseKey(ops[0])
	if err != nil {
		return usageErrorf("bad key %q: %s", ops[0], tidy(err.Error()))
	}
	dir := ops[1]
	st, err := inspectDir(dir)
	if err != nil {
		return err
	}
	if st == dirOther {
		return fmt.Errorf("%s is not empty and holds no feed; clone into a new or empty directory, or into an earlier clone to resume it", dir)
	}
	// The network first: a bad secret or identity must not leave a new,
	// empty DIR behind.
	n, err := e.startNetwork()
	if err != nil {
		return err
	}
	defer n.close()
	// Resuming needs the feed found there to stay; a new one may be made.
	f, err := feed.Open(dir, &feed.Options{Key: key, MustExist: st == dirFeed, Logger: e.log})
	if errors.Is(err, feed.ErrKeyMismatch) {
		return fmt.Errorf("%s holds another feed, not %s", dir, key)
	}
	if err != nil {
		return openError(dir, err)
	}
	defer func() {
		n.close() // before the feed, which the sessions write to
		f.Close()
	}()
	if f.Writable() {
		return fmt.Errorf("%s holds the writable feed %s itself: nothing to clone", dir, key)
	}
	if f.Len() > 0 {
		e.log.Info("resuming", "dir", dir, "have", f.Downloaded(), "length", f.Len())
	}
	n.warnIfAlone(e)
	r, err := n.sw.Replicate(f)
	if err != nil {
		return err
	}
	// One download that follows the feed as it grows: when a peer's longer
	// head arrives mid-way, its blocks are fetched too.
	d := r.Download(0, swarm.Live)
	defer d.Cancel()

	if err := e.follow(f, r, n, dir, *live); err != nil {
		return err
	}
	if err := n.close(); err != nil {
		return err
	}
	return f.Close()
}

// follow waits until a peer has told its head of the feed, f holds a head
// at least as new, and every block of f's head is held; then it verifies
// and reports. With live, it then goes on showing progress until
// interrupted.
func (e *env) follow(f *feed.Feed, r *swarm.Replicator, n *network, dir string, live bool) error {
	p := newProgress(e.stderr)
	defer p.done()
	ctx, cancel := context.WithCancel(e.ctx)
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
	}()
	updated := make(chan error, 1)
	wg.Go(func() { updated <- r.Update(ctx) })
	caughtUp := false
	// The feed's events come for every block; a tick is plenty for a
	// progress line, and the completion check below reads the feed anyway.
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	verified := false
	for {
		h := f.Head()
		have := f.Downloaded()
		signed := len(h.Signature) > 0 // an empty feed has no signed head
		if signed {
			p.update(have, h.Length, f.ByteLen(), false)
		}
		if !verified && caughtUp && have == h.Length {
			p.update(have, h.Length, f.ByteLen(), true)
			if err := f.Verify(e.ctx); err != nil {
				if errors.Is(err, feed.ErrCorrupt) {
					return corruption(dir, err)
				}
				return e.stopped(err, "while verifying")
			}
			verified = true
			fmt.Fprintf(e.stdout, "cloned %s: %d blocks, %s, verified\n", dir, h.Length, humanBytes(float64(f.ByteLen())))
			if !live {
				return nil
			}
			e.log.Info("following new blocks until interrupted")
		}
		select {
		case <-e.ctx.Done():
			p.done()
			// Blocks already on their way are stored until the sessions
			// close; count after that, so the message is what DIR holds.
			n.close()
			h, have = f.Head(), f.Downloaded()
			switch {
			case live && verified:
				return nil // the usual end of --live
			case !n.metPeer():
				return e.stopped(nil, "while looking for peers")
			case !caughtUp && len(h.Signature) == 0:
				return e.stopped(nil, "before a peer sent the feed's head")
			}
			return e.stopped(nil, fmt.Sprintf("with %d of %d blocks; run the same command again to resume", have, h.Length))
		case err := <-updated:
			// Update fails only when ctx ends, which the case above handles.
			updated = nil
			caughtUp = err == nil
		case <-tick.C:
		}
	}
}
