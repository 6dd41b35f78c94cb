package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
)

// globals are the flags every command takes, before or after its name. Only
// share, clone, cat --live and users go on the network; the others ignore the
// network flags, so that a line of flags can be reused across commands.
type globals struct {
	ifaces     stringList
	noMDNS     bool
	peers      stringList
	listen     string
	secretFile string
	keyFile    string
	verbose    count
}

func defaultGlobals() globals { return globals{listen: ":0"} }

// define puts the global flags on fs. Defining a flag sets its variable to
// the default given, so the defaults are the current values: that keeps what
// was parsed before the command name when the command's own FlagSet defines
// the same flags again.
func (g *globals) define(fs *flag.FlagSet) {
	fs.Var(&g.ifaces, "iface", "announce and browse by mDNS on interface `NAME` only (repeatable; default: every multicast interface)")
	fs.BoolVar(&g.noMDNS, "no-mdns", g.noMDNS, "do not use mDNS: find peers only through --peer, or let them dial in")
	fs.Var(&g.peers, "peer", "keep connected to the peer at `ADDR` (host:port; repeatable)")
	fs.StringVar(&g.listen, "listen", g.listen, "accept peers on `ADDR`")
	fs.StringVar(&g.secretFile, "secret-file", g.secretFile, "read the network secret from `PATH` (64 hex digits or 32 bytes); also $HYPERFEED_SECRET_FILE, or $HYPERFEED_SECRET (hex)")
	fs.StringVar(&g.keyFile, "key-file", g.keyFile, "keep this peer's identity in `PATH` (default: peer.key in the user's config directory, created on first use)")
	fs.Var(&g.verbose, "v", "log more: once for progress of the network, twice for debugging")
}

// env is what a command runs with.
type env struct {
	ctx            context.Context
	stdin          io.Reader
	stdout, stderr io.Writer
	g              globals
	log            *slog.Logger
	cmd            *command
}

func newEnv(ctx context.Context, stdin io.Reader, stdout, stderr io.Writer) *env {
	e := &env{ctx: ctx, stdin: stdin, stdout: stdout, stderr: stderr, g: defaultGlobals()}
	e.setLogger()
	return e
}

// setLogger logs to stderr at the level -v asks for: warnings only by
// default, so a command that works says nothing but its result.
func (e *env) setLogger() {
	level := slog.LevelWarn
	switch {
	case e.g.verbose == 1:
		level = slog.LevelInfo
	case e.g.verbose >= 2:
		level = slog.LevelDebug
	}
	e.log = slog.New(slog.NewTextHandler(e.stderr, &slog.HandlerOptions{
		Level: level,
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey && len(groups) == 0 {
				return slog.Attr{} // a terminal has its own sense of time
			}
			return a
		},
	}))
}

// newFlagSet returns a FlagSet that reports nothing itself: errors come back
// to run, which prints them as one line.
func newFlagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	return fs
}

// parseGlobal parses the flags before the command name.
func (e *env) parseGlobal(args []string) ([]string, error) {
	fs := newFlagSet("hyperfeed")
	e.g.define(fs)
	err := fs.Parse(args)
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprint(e.stdout, mainUsage())
		return nil, errHelpShown
	}
	if err != nil {
		return nil, usageErrorf("%v (see hyperfeed help)", err)
	}
	e.setLogger()
	return fs.Args(), nil
}

// flags returns the FlagSet for the running command, with the global flags
// on it, bound to the same variables as before the command name.
func (e *env) flags() *flag.FlagSet {
	fs := newFlagSet(e.cmd.name)
	e.g.define(fs)
	return fs
}

// parse parses a command's arguments, flags and operands in any order (the
// argument "--" ends the flags), and checks that there are want operands.
// The flag package does not say why it stopped, so a flag given the value
// "--" (as in --peer --) is taken for the end of the flags too.
func (e *env) parse(fs *flag.FlagSet, args []string, want int) ([]string, error) {
	var operands []string
	for {
		err := fs.Parse(args)
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(e.stdout, commandUsage(e.cmd, fs))
			return nil, errHelpShown
		}
		if err != nil {
			return nil, usageErrorf("%v (see hyperfeed help %s)", err, e.cmd.name)
		}
		rest := fs.Args()
		if len(rest) == 0 {
			break
		}
		if used := args[:len(args)-len(rest)]; len(used) > 0 && used[len(used)-1] == "--" {
			operands = append(operands, rest...)
			break
		}
		operands, args = append(operands, rest[0]), rest[1:]
	}
	if len(operands) != want && want == 0 {
		return nil, usageErrorf("takes no operands, got %q (see hyperfeed help %s)", operands[0], e.cmd.name)
	}
	if len(operands) != want {
		return nil, usageErrorf("want %s, got %d operand(s) (see hyperfeed help %s)", e.cmd.args, len(operands), e.cmd.name)
	}
	if err := e.g.check(); err != nil {
		return nil, err
	}
	e.setLogger()
	return operands, nil
}

// check refuses contradictory or malformed global flags, before a command
// creates anything.
func (g *globals) check() error {
	if len(g.ifaces) > 0 && g.noMDNS {
		return usageErrorf("--iface chooses mDNS interfaces and --no-mdns turns mDNS off: give one of them")
	}
	for _, p := range g.peers {
		_, port, err := net.SplitHostPort(p)
		if n, perr := strconv.ParseUint(port, 10, 16); err != nil || perr != nil || n == 0 {
			return usageErrorf("--peer %q: want host:port", p)
		}
	}
	return nil
}

// stringList is a repeatable flag.
type stringList []string

func (s *stringList) String() string { return strings.Join(*s, ",") }

func (s *stringList) Set(v string) error {
	if v == "" {
		return errors.New("empty value")
	}
	*s = append(*s, v)
	return nil
}

// count is a boolean flag that counts how often it is given: -v -v.
type count int

func (c *count) String() string   { return strconv.Itoa(int(*c)) }
func (c *count) IsBoolFlag() bool { return true }

func (c *count) Set(v string) error {
	b, err := strconv.ParseBool(v)
	if err != nil {
		return err
	}
	if b {
		*c++
	} else {
		*c = 0
	}
	return nil
}

// mainUsage is the text of the command list; doc.go holds the long form.
func mainUsage() string {
	var b strings.Builder
	b.WriteString("usage: hyperfeed [global flags] COMMAND [flags] OPERANDS\n\ncommands:\n")
	for _, c := range commands {
		fmt.Fprintf(&b, "  %-8s %-8s %s\n", c.name, c.args, c.summary)
	}
	b.WriteString("  help     [COMMAND] show this, or a command's flags\n\nglobal flags (also after the command name):\n")
	fs := newFlagSet("hyperfeed")
	g := defaultGlobals()
	g.define(fs)
	printFlags(&b, fs, nil)
	b.WriteString("\nexit status: 0 done, 1 verification failed (corrupt data), 2 usage,\n3 any other failure, 128+N ended early by signal N.\n")
	return b.String()
}

func commandUsage(c *command, fs *flag.FlagSet) string {
	var b strings.Builder
	fmt.Fprintf(&b, "usage: %s\n\n%s%s.\n", strings.TrimSpace("hyperfeed "+c.name+" [flags] "+c.args), strings.ToUpper(c.summary[:1]), c.summary[1:])
	if c.details != "" {
		fmt.Fprintf(&b, "%s\n", c.details)
	}
	global := newFlagSet("")
	g := defaultGlobals()
	g.define(global)
	var own strings.Builder
	printFlags(&own, fs, func(f *flag.Flag) bool { return global.Lookup(f.Name) == nil })
	if own.Len() > 0 {
		b.WriteString("\nflags:\n")
		b.WriteString(own.String())
	}
	b.WriteString("\nGlobal flags (hyperfeed help lists them) may come before or after the command.\n")
	return b.String()
}

// printFlags prints fs's flags in the style of flag.PrintDefaults, but with
// the double dash that the documentation uses.
func printFlags(w io.Writer, fs *flag.FlagSet, keep func(*flag.Flag) bool) {
	fs.VisitAll(func(f *flag.Flag) {
		if keep != nil && !keep(f) {
			return
		}
		name, usage := flag.UnquoteUsage(f)
		dash := "--"
		if len(f.Name) == 1 {
			dash = "-"
		}
		fmt.Fprintf(w, "  %s%s", dash, f.Name)
		if name != "" {
			fmt.Fprintf(w, " %s", name)
		}
		fmt.Fprintf(w, "\n      %s", usage)
		if f.DefValue != "" && f.DefValue != "false" && f.DefValue != "0" && f.DefValue != "0s" {
			fmt.Fprintf(w, " (default %q)", f.DefValue)
		}
		fmt.Fprintln(w)
	})
}
