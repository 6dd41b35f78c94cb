package feed

import "sync"

// committer runs the group commit of a feed in sync mode. A writer that needs
// its header sequence number durable either finds a commit round running and
// waits for it, or runs one itself; a round makes durable everything written
// before it began, so concurrent writers share its fsyncs.
type committer struct {
	mu      sync.Mutex
	cond    sync.Cond
	busy    bool
	durable uint64 // the highest header sequence number on stable storage
	err     error  // a failed round fails the feed for good
}

func (c *committer) init(durable uint64) {
	c.cond.L = &c.mu
	c.durable = durable
}

// wait returns once header seq is durable.
func (c *committer) wait(f *Feed, seq uint64) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for c.durable < seq && c.err == nil {
		if c.busy {
			c.cond.Wait()
			continue
		}
		c.busy = true
		c.mu.Unlock()
		done, err := f.commitRound()
		c.mu.Lock()
		c.busy = false
		if err != nil {
			c.err = err
		} else {
			c.durable = max(c.durable, done)
		}
		c.cond.Broadcast()
	}
	return c.err
}

// exclusive keeps commit rounds out until release, for writes that rewrite
// history and sync inline (see settleLocked). release records seq, the header
// the caller wrote and synced itself, as durable.
func (c *committer) exclusive() (release func(seq uint64), err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for c.busy {
		c.cond.Wait()
	}
	if c.err != nil {
		return nil, c.err
	}
	c.busy = true
	return func(seq uint64) {
		c.mu.Lock()
		defer c.mu.Unlock()
		c.busy = false
		c.durable = max(c.durable, seq)
		c.cond.Broadcast()
	}, nil
}

// settleLocked makes the tip durable and publishes it, holding mu throughout,
// so that a write that rewrites history starts from a durable head. The
// caller holds the committer exclusively and writes the next header itself.
func (f *Feed) settleLocked() error {
	if f.tip.Seq == f.head.Seq {
		return nil
	}
	if err := f.syncData(); err != nil {
		return err
	}
	fresh, err := f.markHeld(f.pending...)
	if err == nil {
		if err = f.syncBitsLocked(); err != nil {
			f.unmarkHeld(fresh)
		}
	}
	if err != nil {
		return err
	}
	f.pending = nil
	f.head, f.roots = f.tip, f.tipRoots
	return nil
}

// commitRound makes the tip durable: data first, then the bitfield pages of
// the blocks that data holds, then the header that names them. Only then is
// the tip published as the head.
func (f *Feed) commitRound() (uint64, error) {
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return 0, ErrClosed
	}
	snap, snapRoots := f.tip, f.tipRoots
	pend := f.pending
	f.pending = nil
	f.mu.Unlock()

	err := f.syncData()
	var fresh []uint64
	if err == nil {
		f.mu.Lock()
		fresh, err = f.markHeld(pend...)
		if err == nil {
			// Syncing under the lock keeps the flag honest; only replicas
			// write bitfield pages, one round at a time.
			err = f.syncBitsLocked()
		}
		f.mu.Unlock()
	}
	if err == nil {
		err = writeHeader(f.files.header, &snap, true)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if err != nil {
		// The round's blocks were not acknowledged: the feed no longer
		// claims them, and fails until reopened.
		f.unmarkHeld(fresh)
		f.failed = err
		return 0, err
	}
	if snap.Seq > f.head.Seq {
		f.head, f.roots = snap, snapRoots
	}
	return snap.Seq, nil
}
