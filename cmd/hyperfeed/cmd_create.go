package main

import (
	"fmt"

	"github.com/hyperfeed/hyperfeed/feed"
)

func cmdCreate(e *env, args []string) error {
	fs := e.flags()
	ops, err := e.parse(fs, args, 1)
	if err != nil {
		return err
	}
	dir := ops[0]
	st, err := inspectDir(dir)
	if err != nil {
		return err
	}
	switch st {
	case dirFeed:
		return fmt.Errorf("%s already holds a feed (hyperfeed info %s shows it)", dir, dir)
	case dirOther:
		return fmt.Errorf("%s is not empty; a new feed needs an empty or missing directory", dir)
	}
	// With no key given, feed.Open generates a key pair and keeps its secret
	// half in the directory (mode 0600): the directory is the writer.
	f, err := feed.Open(dir, &feed.Options{Logger: e.log})
	if err != nil {
		return openError(dir, err)
	}
	fmt.Fprintln(e.stdout, f.Key())
	return f.Close()
}
