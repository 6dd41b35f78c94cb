package main

import (
	"fmt"

	"github.com/hyperfeed/hyperfeed/feed"
)

func cmdAppend(e *env, args []string) error {
	fs := e.flags()
	split := splitFlags(fs)
	sync := fs.Bool("sync", false, "fsync before printing the new length, so the blocks survive a power loss too")
	ops, err := e.parse(fs, args, 1)
	if err != nil {
		return err
	}
	opts, err := split()
	if err != nil {
		return err
	}
	dir := ops[0]
	f, err := e.openFeed(dir, feed.Options{Sync: *sync})
	if err != nil {
		return err
	}
	defer f.Close()
	if !f.Writable() {
		return fmt.Errorf("%s is a replica of %s: only the directory holding its secret key can append", dir, f.Key())
	}
	before := f.Len()
	n, err := appendInput(e.ctx, f, e.stdin, opts, nil)
	e.log.Info("appended", "blocks", n, "length", f.Len())
	if err != nil {
		return fmt.Errorf("%w (the feed has %d blocks, %d of them new)", err, f.Len(), f.Len()-before)
	}
	fmt.Fprintln(e.stdout, f.Len())
	return f.Close()
}
