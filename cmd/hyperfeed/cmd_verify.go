package main

import (
	"errors"
	"fmt"

	"github.com/hyperfeed/hyperfeed/feed"
)

func cmdVerify(e *env, args []string) error {
	dir, f, err := e.openFeedOperand(e.flags(), args) // Open checks the header, roots and signature
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Verify(e.ctx); err != nil {
		if errors.Is(err, feed.ErrCorrupt) {
			return corruption(dir, err)
		}
		return e.stopped(err, "before verifying everything")
	}
	h := f.Head()
	held := fmt.Sprintf("all %d blocks", h.Length)
	if have := f.Downloaded(); have < h.Length {
		held = fmt.Sprintf("the %d blocks held", have)
	}
	fmt.Fprintf(e.stdout, "ok: %s match the signed head (length %d, fork %d, %s)\n", held, h.Length, h.Fork, humanBytes(float64(f.ByteLen())))
	return nil
}
