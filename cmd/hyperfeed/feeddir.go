package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/hyperfeed/hyperfeed/feed"
)

// headerFile is the file that makes a directory a feed (package feed
// documents its files). feed.Open creates a feed wherever it finds none, so
// the commands that expect one look for this file first: a mistyped
// directory must not quietly become a new, empty feed.
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

// openFeed opens the feed that dir must already hold.
func (e *env) openFeed(dir string, opts feed.Options) (*feed.Feed, error) {
	st, err := inspectDir(dir)
	if err != nil {
		return nil, err
	}
	switch st {
	case dirMissing:
		return nil, fmt.Errorf("%s: no such directory", dir)
	case dirEmpty, dirOther:
		return nil, fmt.Errorf("%s holds no feed (hyperfeed create makes one, hyperfeed clone copies one)", dir)
	}
	opts.Logger = e.log
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
	return err
}
