package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"syscall"

	"github.com/hyperfeed/hyperfeed/feed"
)

// Exit statuses. A verification failure has its own so that scripts can
// tell damaged data from a missing directory or an unreachable peer.
const (
	exitOK      = 0
	exitCorrupt = 1 // the feed failed verification (feed.ErrCorrupt)
	exitUsage   = 2 // bad flags, operands or key
	exitFailure = 3 // anything else
	// 128+N: ended early by signal N (130 for SIGINT), as a shell reports it.
)

// errHelpShown ends a command that printed its usage on request.
var errHelpShown = errors.New("help shown")

type usageError struct{ msg string }

func (u *usageError) Error() string { return u.msg }

func usageErrorf(format string, args ...any) error {
	return &usageError{fmt.Sprintf(format, args...)}
}

// interrupted is the cancellation cause of the context run gets when a
// signal arrives.
type interrupted struct{ sig syscall.Signal }

func (i interrupted) Error() string {
	switch i.sig {
	case syscall.SIGINT:
		return "interrupted"
	case syscall.SIGTERM:
		return "terminated"
	}
	return "stopped by signal " + i.sig.String()
}

// fail prints err as one line on stderr and returns the exit status for it.
func (e *env) fail(cmd string, err error) int {
	if err == nil || errors.Is(err, errHelpShown) {
		return exitOK
	}
	prefix := "hyperfeed: "
	if cmd != "" {
		prefix += cmd + ": "
	}
	fmt.Fprintln(e.stderr, prefix+tidy(err.Error()))
	return exitCode(err)
}

func exitCode(err error) int {
	var u *usageError
	var i interrupted
	switch {
	case errors.As(err, &u):
		return exitUsage
	case errors.As(err, &i):
		return 128 + int(i.sig)
	case errors.Is(err, feed.ErrCorrupt):
		return exitCorrupt
	}
	return exitFailure
}

// tidy makes a library error one line and drops the package names that each
// layer of wrapping repeats ("feed: open d: feed: locked ...").
func tidy(msg string) string {
	msg = strings.ReplaceAll(msg, "\n", "; ")
	for _, p := range []string{"feed: ", "swarm: ", "usersession: "} {
		msg = strings.TrimPrefix(msg, p)
		msg = strings.ReplaceAll(msg, ": "+p, ": ")
	}
	return msg
}

// corruption describes a feed.ErrCorrupt error as "DIR is corrupt: what",
// without the library's wording around it, and keeps its exit status.
func corruption(dir string, err error) error {
	_, what, ok := strings.Cut(err.Error(), feed.ErrCorrupt.Error()+": ")
	if !ok {
		what = tidy(err.Error())
	}
	return &corruptError{dir + " is corrupt: " + what}
}

type corruptError struct{ msg string }

func (c *corruptError) Error() string { return c.msg }
func (c *corruptError) Unwrap() error { return feed.ErrCorrupt }

// interruption returns why the command was interrupted, or nil: for loops
// that do not block on the context.
func (e *env) interruption() error {
	if e.ctx.Err() != nil {
		return context.Cause(e.ctx)
	}
	return nil
}

// stopped explains an interruption "what": the signal if there was one,
// else err.
func (e *env) stopped(err error, what string) error {
	if e.ctx.Err() == nil {
		return err
	}
	return fmt.Errorf("%w %s", context.Cause(e.ctx), what)
}
