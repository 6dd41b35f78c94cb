// Package seeddemo is the program that examples/alice and examples/bob run:
// the user-session demo hyperfeed grew from, a user who starts a session
// and looks another up by alias, as one binary per machine.
//
// It starts the user's session (StartUserSession), prints the directory
// (GetUsers) and every change to it (Watch), and looks the other user up
// (FindUserSession) after each change, printing their address once found.
// It runs until SIGINT or SIGTERM, then logs out (a friendly leave, which
// the others see at once) and exits 0.
//
// What it prints, one line each, meant to be read by people and by tests:
//
//	started alice at 192.0.2.1:4977
//	users: alice bob(offline)
//	bob online at 192.0.2.2:4977
//	found bob at 192.0.2.2:4977
//	bob offline
//	bob unregistered
//	alice is over the session limit: offline until another of its sessions ends
//	logged out
package seeddemo

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hyperfeed/hyperfeed/examples/internal/nodeflags"
	"github.com/hyperfeed/hyperfeed/usersession"
)

// logoutTimeout bounds the friendly leave: appending the logout and
// handing it to the peers connected then.
const logoutTimeout = 10 * time.Second

// Main runs the program as user alias looking for user other, with the
// command line's flags, and exits: 0 after a logout on SIGINT or SIGTERM,
// 1 on a failure, 2 on a usage error.
func Main(alias, other string) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr, alias, other)
	stop()
	var usage usageError
	switch {
	case err == nil:
	case errors.As(err, &usage):
		if usage.err != flag.ErrHelp {
			os.Exit(2)
		}
	default:
		fmt.Fprintf(os.Stderr, "%s: %v\n", alias, err)
		os.Exit(1)
	}
}

// usageError is a command line that run refused, after telling the user
// why.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }

// run is Main without the exits and the signals: it returns when ctx ends,
// after logging out, or on a failure.
func run(ctx context.Context, args []string, stdout, stderr io.Writer, alias, other string) error {
	fs := flag.NewFlagSet(alias, flag.ContinueOnError)
	fs.SetOutput(stderr)
	var nf nodeflags.Flags
	nf.Register(fs, alias)
	find := fs.String("find", other, "the alias of the user to look for")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: %s [flags]\n\nStarts %s's session and looks for %s; stop it with Ctrl-C.\n\n", alias, alias, other)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return usageError{err}
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "unexpected argument %q\n", fs.Arg(0))
		fs.Usage()
		return usageError{errors.New("unexpected argument")}
	}
	cfg, err := nf.Config(stderr)
	if err != nil {
		fmt.Fprintln(stderr, err)
		fs.Usage()
		return usageError{err}
	}

	node, err := usersession.StartUserSession(ctx, nf.Session(), cfg)
	if err != nil {
		return err
	}
	defer node.Close() // after Logout, which closes it, this does nothing
	self := node.Self()
	fmt.Fprintf(stdout, "started %s at %s\n", self.Alias, addr(self))

	// The directory answers from disk at once; then every change comes
	// as an event, after which the whole directory is read again, so
	// what is printed is the state itself, not a replay of the events.
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	events := node.Watch(wctx)
	p := printer{out: stdout, self: self.Alias, find: *find, shown: map[string]string{}}
	p.update(node)
	for {
		select {
		case e, ok := <-events:
			if !ok {
				if ctx.Err() != nil {
					return logout(node, stdout)
				}
				return errors.New("the node stopped")
			}
			switch e.Kind {
			case usersession.EventUnregistered:
				fmt.Fprintf(stdout, "%s unregistered\n", e.Session.Alias)
			case usersession.EventSessionLimit:
				fmt.Fprintf(stdout, "%s is over the session limit: offline until another of its sessions ends\n", e.Session.Alias)
			}
			p.update(node)
		case <-ctx.Done():
			return logout(node, stdout)
		}
	}
}

func logout(node *usersession.Node, stdout io.Writer) error {
	ctx, cancel := context.WithTimeout(context.Background(), logoutTimeout)
	defer cancel()
	if err := node.Logout(ctx); err != nil {
		return fmt.Errorf("logout: %w", err)
	}
	fmt.Fprintln(stdout, "logged out")
	return nil
}

// printer prints what changed in the directory since it last looked.
type printer struct {
	out   io.Writer
	self  string
	find  string
	shown map[string]string // name -> its state as last printed
	found string            // the address last printed as found
	users string            // the users line last printed
}

func (p *printer) update(node *usersession.Node) {
	users := node.GetUsers()
	names := slices.Sorted(maps.Keys(users))
	for _, name := range names {
		if name == p.self {
			continue
		}
		state := "offline"
		if s := users[name]; s.Online {
			state = "online at " + addr(s)
		}
		if p.shown[name] != state {
			p.shown[name] = state
			fmt.Fprintf(p.out, "%s %s\n", name, state)
		}
	}
	for name := range p.shown {
		if _, ok := users[name]; !ok {
			delete(p.shown, name)
		}
	}

	var b strings.Builder
	b.WriteString("users:")
	for _, name := range names {
		b.WriteString(" " + name)
		if !users[name].Online {
			b.WriteString("(offline)")
		}
	}
	if b.String() != p.users {
		p.users = b.String()
		fmt.Fprintln(p.out, p.users)
	}

	s, err := node.FindUserSession(p.find)
	switch {
	case err != nil || !s.Online:
		p.found = ""
	case addr(s) != p.found:
		p.found = addr(s)
		fmt.Fprintf(p.out, "found %s at %s\n", p.find, p.found)
	}
}

func addr(s usersession.UserSession) string {
	return net.JoinHostPort(s.IP, strconv.Itoa(s.Port))
}
