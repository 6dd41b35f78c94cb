// Command chat is a small peer-to-peer chat with no server: each user's
// messages go to a feed of their own, one per room, which the others
// replicate; who is in a room, and where to reach them, comes from the
// users-and-sessions directory (package usersession). What was said stays
// readable after a restart, from the feeds on disk, before anyone else is
// online.
//
// Type a line to send it; /who lists who is in the room, /quit (or the end
// of input, or Ctrl-C) logs out and leaves. It prints
//
//	[lobby] bob: hello            a message, from anyone, this user's too
//	* bob joined                  bob came online in the room
//	* bob left                    bob logged out, or went away
//
// On two machines of one network (mDNS finds the peers; -iface pins it to
// an interface, or -no-mdns with -peer names them instead):
//
//	go run ./examples/chat -alias alice -room lobby
//	go run ./examples/chat -alias bob -room lobby
//
// How it works. A user's session publishes, in its metadata, the key of the
// user's feed for each room ("chat:ROOM" = key in hex). The feeds live in a
// store of the chat's own, apart from the session's, which takes every
// feed in its store for a device; they replicate over the session's swarm
// (usersession.Node.Swarm): the chat has no listener of its own, and the
// peers it chats with are the directory's, over the connections the
// directory made, with its network secret. Every chat reads the
// directory: it replicates the feeds that sessions publish for its room,
// and announces who joined and left as sessions come online and go. Block
// 0 of a room feed names the room and the device whose session publishes
// it, so that nobody can publish another's feed as their own; every later
// block is a message with its writer's time, and messages of all feeds are
// shown in time order. The chat keeps its data under -dir: the session's
// (session/), the feeds (feeds/), and the list of the others' feeds it has
// checked (known).
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/hyperfeed/hyperfeed/examples/internal/nodeflags"
	"github.com/hyperfeed/hyperfeed/feed"
	"github.com/hyperfeed/hyperfeed/usersession"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	var usage usageError
	if errors.As(err, &usage) {
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "chat:", err)
		os.Exit(1)
	}
}

// usageError is a command line that run refused, after saying why.
type usageError struct{ error }

// logoutTimeout bounds leaving: handing the last messages and the logout
// to the peers connected then.
const logoutTimeout = 10 * time.Second

func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("chat", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var nf nodeflags.Flags
	nf.Register(fs, os.Getenv("USER"))
	roomName := fs.String("room", "lobby", "the room to chat in")
	fs.Lookup("dir").Usage = "the data directory (default: the user's config directory, hyperfeed/chat/ALIAS)"
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: chat [flags]\n\nChat in a room; type lines to send, /who, /quit.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err}
	}
	fail := func(err error) error {
		fmt.Fprintln(stderr, err)
		fs.Usage()
		return usageError{err}
	}
	if fs.NArg() > 0 {
		return fail(fmt.Errorf("unexpected argument %q", fs.Arg(0)))
	}
	if !validRoom(*roomName) {
		return fail(fmt.Errorf("room %q: want 1 to %d bytes of UTF-8, no spaces or control characters", *roomName, maxRoom))
	}
	alias, err := usersession.NormalizeAlias(nf.Alias)
	if err != nil {
		return fail(err)
	}
	cfg, err := nf.Config(stderr)
	if err != nil {
		return fail(err)
	}
	dir := nf.Dir
	if dir == "" {
		conf, err := os.UserConfigDir()
		if err != nil {
			return fmt.Errorf("no -dir, and no config directory: %w", err)
		}
		dir = filepath.Join(conf, "hyperfeed", "chat", alias)
	}
	cfg.Dir = filepath.Join(dir, "session")

	// The room feeds, in a store of the chat's own: the user's feed is
	// needed before the session starts, since its login publishes the
	// feed's key. The store closes after the node, which replicates them.
	store, err := feed.OpenStore(filepath.Join(dir, "feeds"), nil)
	if err != nil {
		return err
	}
	defer store.Close()
	own, err := store.Named("chat/" + *roomName)
	if err != nil {
		return err
	}
	s := nf.Session()
	s.Metadata = map[string]string{"chat:" + *roomName: own.Key().String()}
	node, err := usersession.StartUserSession(ctx, s, cfg)
	if err != nil {
		return err
	}
	defer node.Close() // after Logout, which closes it, this does nothing

	r, err := openRoom(*roomName, store, own, filepath.Join(dir, "known"), node.Self(), stdout)
	if err != nil {
		return err
	}
	defer r.stop()
	if err := r.start(node.Swarm()); err != nil {
		return err
	}
	self := node.Self()
	r.printf("* %s in %s, at %s\n", self.Alias, *roomName, net.JoinHostPort(self.IP, strconv.Itoa(self.Port)))
	r.read(node)
	r.show() // the history, from disk
	r.printf("* in %s: %s\n", *roomName, r.who())

	// One goroutine follows the directory and the feeds and prints; this
	// one reads the user's lines.
	loopCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	events := node.Watch(loopCtx)
	loopDone := make(chan error, 1) // closed when the loop ends; an error first if the node stopped
	go func() {
		defer close(loopDone)
		for {
			select {
			case _, ok := <-events:
				if !ok {
					if loopCtx.Err() == nil {
						loopDone <- errors.New("the node stopped")
					}
					return
				}
				r.update(node)
			case <-r.kick:
				r.show()
			}
		}
	}()
	lines := make(chan string)
	go func() {
		// Ends with its input: at exit for a terminal, which is when
		// nothing waits on it any more.
		defer close(lines)
		sc := bufio.NewScanner(stdin)
		sc.Buffer(nil, 2*maxText)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()

read:
	for {
		select {
		case line, ok := <-lines:
			if !ok {
				break read
			}
			switch line = strings.TrimSpace(line); {
			case line == "":
			case line == "/quit":
				break read
			case line == "/who":
				r.printf("* in %s: %s\n", *roomName, r.who())
			case strings.HasPrefix(line, "/"):
				r.printf("! unknown command %s (/who, /quit)\n", line)
			default:
				if err := r.send(line); err != nil {
					r.printf("! not sent: %v\n", err)
				}
			}
		case <-ctx.Done():
			break read
		case err := <-loopDone:
			return err
		}
	}
	cancel()
	if err := <-loopDone; err != nil {
		return err
	}
	r.show() // what came in last, the user's own last lines too

	// Leave: let the peers have the last messages, then log out.
	lctx, lcancel := context.WithTimeout(context.Background(), logoutTimeout)
	defer lcancel()
	if rep, err := node.Swarm().Attach(own); err == nil {
		rep.Delivered(lctx, own.Len()) // best effort: a peer may be gone
	}
	if err := node.Logout(lctx); err != nil {
		return fmt.Errorf("logout: %w", err)
	}
	r.printf("* %s left %s\n", self.Alias, *roomName)
	return nil
}

// maxRoom is the longest room name: "chat:" and the name make a metadata
// key.
const maxRoom = usersession.MaxMetadataKey - len("chat:")

func validRoom(name string) bool {
	if name == "" || len(name) > maxRoom || !utf8.ValidString(name) {
		return false
	}
	return !strings.ContainsFunc(name, func(c rune) bool { return unicode.IsSpace(c) || unicode.IsControl(c) })
}
