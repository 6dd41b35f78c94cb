package main

import (
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/hyperfeed/hyperfeed/feed"
)

// headerFile is the file that makes a directory a feed (package feed
// documents its files). Only create and clone look at it, to tell where a
// new feed may go: feed.Open with MustExist tells a feed from no feed, but
// not a directory holding someone's files from one where creating a feed
// stopped before its header was written, which the library takes up again.
const headerFile = "header"

type dirState int

const (
	dirMissing dirState = iota
	dirEmpty            // exists and holds nothing, or a feed whose creation never finished
	dirFeed             // holds a feed
	dirOther            // holds something else
)

func inspectDir(dir string) (dirState, error) {
	st, err := os.Stat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return dirMissing, nil
	}
	if err != nil {
		return 0, err
	}
	if !st.IsDir() {
		return 0, fmt.Errorf("%s is not a directory", dir)
	}
	h, err := os.Stat(filepath.Join(dir, headerFile))
	switch {
	case err == nil && h.Size() > 0:
		return dirFeed, nil
	case err == nil:
		// feed.Open writes the header last when it creates a feed.
		return dirEmpty, nil
	case !errors.Is(err, fs.ErrNotExist):
		return 0, err
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return 0, err
	}
	if len(entries) == 0 {
		return dirEmpty, nil
	}
	return dirOther, nil
}

// openFeed opens the feed that dir must already hold: a mistyped directory
// must not quietly become a new, empty feed.
func (e *env) openFeed(dir string, opts feed.Options) (*feed.Feed, error) {
	opts.Logger = e.log
	opts.MustExist = true
	f, err := feed.Open(dir, &opts)
	return f, openError(dir, err)
}

// openError says what a failed feed.Open means for the user.
func openError(dir string, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, feed.ErrLocked):
		return fmt.Errorf("%s is in use by another process: a feed is open in one process at a time, so stop the share or clone using it first", dir)
	case errors.Is(err, feed.ErrCorrupt):
		return corruption(dir, err)
	}
	// Where no feed was found, or the path led nowhere, say what is there.
	st, serr := os.Stat(dir)
	switch {
	case errors.Is(serr, fs.ErrNotExist):
		return fmt.Errorf("%s: no such directory", dir)
	case serr == nil && !st.IsDir():
		return fmt.Errorf("%s is not a directory", dir)
	case errors.Is(err, feed.ErrNotFound):
		return fmt.Errorf("%s holds no feed (hyperfeed create makes one, hyperfeed clone copies one)", dir)
	}
	return err
}

// openFeedOperand parses the command line with fs for a command whose one
// operand is a feed directory, and opens the feed there. The caller closes
// it.
func (e *env) openFeedOperand(fs *flag.FlagSet, args []string) (dir string, f *feed.Feed, err error) {
	ops, err := e.parse(fs, args, 1)
	if err != nil {
		return "", nil, err
	}
	dir = ops[0]
	f, err = e.openFeed(dir, feed.Options{})
	return dir, f, err
}
