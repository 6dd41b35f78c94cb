package main

import (
	"context"
	"fmt"
	"text/tabwriter"

	"github.com/hyperfeed/hyperfeed/feed"
)

func cmdShare(e *env, args []string) error {
	fs := e.flags()
	appendIn := fs.Bool("append", false, "also append blocks read from stdin, as append does, while sharing; peers following with --live see each block as soon as its line is complete")
	split := splitFlags(fs)
	ops, err := e.parse(fs, args, 1)
	if err != nil {
		return err
	}
	opts, err := split()
	if err != nil {
		return err
	}
	if !*appendIn && opts.mode != splitLines {
		return usageErrorf("--chunk and --whole say how to cut the input of --append")
	}
	dir := ops[0]
	// The network first, so that a bad secret is reported as such even
	// when the feed is busy.
	n, err := e.startNetwork()
	if err != nil {
		return err
	}
	f, err := e.openFeed(dir, feed.Options{})
	if err != nil {
		n.close()
		return err
	}
	defer func() {
		n.close() // before the feed, which the sessions write to
		f.Close()
	}()
	if *appendIn && !f.Writable() {
		return fmt.Errorf("--append: %s is a replica of %s: only the directory holding its secret key can append", dir, f.Key())
	}
	// Replicate also joins the feed's discovery key as the topic, which is
	// what mDNS announces (hashed) and clones look for.
	if _, err := n.sw.Replicate(f); err != nil {
		return err
	}
	held := fmt.Sprintf("%d blocks (%s)", f.Len(), humanBytes(float64(f.ByteLen())))
	if !f.Writable() {
		held += fmt.Sprintf(", %d of them held here", f.Downloaded())
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "key\t%s\n", f.Key())
	fmt.Fprintf(tw, "length\t%s\n", held)
	fmt.Fprintf(tw, "listening\t%s\n", n.sw.Addr())
	if err := tw.Flush(); err != nil {
		return err
	}

	appended := make(chan error, 1)
	if *appendIn {
		go func() {
			_, err := appendInput(e.ctx, f, e.stdin, opts, func(length uint64) {
				e.log.Info("appended", "length", length)
			})
			appended <- err
		}()
	}
	select {
	case <-e.ctx.Done():
		if *appendIn {
			<-appended // an Append under way finishes before the feed closes
		}
	case err := <-appended:
		if err != nil && e.ctx.Err() == nil {
			return err
		}
		e.log.Info("input ended; still sharing until interrupted", "length", f.Len())
		<-e.ctx.Done()
	}
	e.log.Info("stopping", "cause", context.Cause(e.ctx))
	if err := n.close(); err != nil {
		return err
	}
	return f.Close()
}
