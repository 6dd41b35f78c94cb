package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// A command is one subcommand. run defines its flags on the FlagSet that
// env.flags gives it and parses args itself, so that "hyperfeed help NAME"
// can show its flags by running it with -h.
type command struct {
	name    string
	args    string // the synopsis after the name, e.g. "KEY DIR"
	summary string // one line for the command list
	details string // more for "hyperfeed help NAME"; doc.go has it all
	run     func(e *env, args []string) error
}

// commands in the order help lists them.
var commands = []*command{
	{"create", "DIR", "create a new writable feed in DIR and print its key",
		"DIR must be missing or empty. It will hold the feed's secret key: only it can append.",
		cmdCreate},
	{"append", "DIR", "append blocks read from stdin and print the new length",
		"Each line is a block (without its newline) unless --chunk or --whole says otherwise.\nBlocks are at most 16 MiB and go in batches, each signed once.",
		cmdAppend},
	{"cat", "DIR", "write the feed's blocks to stdout",
		"Without --live, only what DIR holds: cat fails at a block a partial clone lacks.",
		cmdCat},
	{"info", "DIR", "show the feed's key, head and size", "", cmdInfo},
	{"verify", "DIR", "check every stored block and node against the signed head",
		"Exits 0 if all is well, 1 naming the first damage found.",
		cmdVerify},
	{"share", "DIR", "serve the feed to peers until interrupted",
		"Prints the key to give to others and the address it listens on. Peers find it by\nmDNS, or by --peer. SIGINT or SIGTERM ends it cleanly, with status 0.",
		cmdShare},
	{"clone", "KEY DIR", "download the feed with KEY from peers into DIR",
		"Finds peers by mDNS or --peer, downloads every block of the newest head a peer\nshows, verifies and exits 0. Run it again on an interrupted clone to resume it.",
		cmdClone},
	{"users", "", "show the users and sessions of a usersession directory",
		"Observes the directory without joining it (no identity, nothing appended): waits until\nits peers and their devices are found, at most --wait, and prints a line per device.\nWith --watch it keeps the table up to date until interrupted, which ends it with status 0.",
		cmdUsers},
}

func lookup(name string) *command {
	for _, c := range commands {
		if c.name == name {
			return c
		}
	}
	return nil
}

func main() {
	ctx, stop := signalContext()
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// signalContext returns a context cancelled, with an interrupted cause, by
// the first SIGINT or SIGTERM. The handler is removed after that first
// signal, so a second Ctrl-C kills the process even if shutting down hangs.
func signalContext() (context.Context, func()) {
	ctx, cancel := context.WithCancelCause(context.Background())
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGINT, syscall.SIGTERM)
	done := make(chan struct{})
	go func() {
		select {
		case s := <-ch:
			signal.Stop(ch)
			cancel(interrupted{s.(syscall.Signal)})
		case <-done:
		}
	}()
	return ctx, func() {
		signal.Stop(ch)
		close(done)
		cancel(nil)
	}
}

// run is the whole program but for the process: tests call it in-process
// and cancel ctx (with an interrupted cause) instead of sending a signal.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	e := newEnv(ctx, stdin, stdout, stderr)
	rest, err := e.parseGlobal(args)
	if err != nil {
		return e.fail("", err)
	}
	if len(rest) == 0 {
		fmt.Fprint(stderr, mainUsage())
		return exitUsage
	}
	name, rest := rest[0], rest[1:]
	if name == "help" {
		return e.fail("help", help(e, rest))
	}
	c := lookup(name)
	if c == nil {
		return e.fail("", usageErrorf("unknown command %q (see hyperfeed help)", name))
	}
	e.cmd = c
	return e.fail(c.name, c.run(e, rest))
}

// help prints the main usage, or a command's with its flags.
func help(e *env, args []string) error {
	switch len(args) {
	case 0:
		fmt.Fprint(e.stdout, mainUsage())
		return nil
	case 1:
		c := lookup(args[0])
		if c == nil {
			return usageErrorf("unknown command %q", args[0])
		}
		e.cmd = c
		return c.run(e, []string{"-h"})
	default:
		return usageErrorf("help takes at most one command name")
	}
}
