package main

import (
	"context"
	"flag"
	"io"
	"os"
	"slices"
	"strings"
	"testing"
)

func TestParseInterleaved(t *testing.T) {
	for _, c := range []struct {
		args     []string
		operands []string
		start    uint64
		peers    []string
	}{
		{[]string{"d"}, []string{"d"}, 0, nil},
		{[]string{"--start", "3", "d"}, []string{"d"}, 3, nil},
		{[]string{"d", "--start=4", "--peer", "127.0.0.1:1"}, []string{"d"}, 4, []string{"127.0.0.1:1"}},
		{[]string{"--", "--start"}, []string{"--start"}, 0, nil},
		{[]string{"-start", "5", "--", "-d"}, []string{"-d"}, 5, nil},
	} {
		e := newEnv(context.Background(), nil, io.Discard, io.Discard)
		e.cmd = lookup("cat")
		fs := e.flags()
		start := fs.Uint64("start", 0, "")
		ops, err := e.parse(fs, c.args, 1)
		if err != nil || !slices.Equal(ops, c.operands) || *start != c.start || !slices.Equal(e.g.peers, c.peers) {
			t.Errorf("%q: operands %q, start %d, peers %q, %v", c.args, ops, *start, e.g.peers, err)
		}
	}
}

// Global flags given before the command name survive the command's own
// FlagSet, which defines them again.
func TestGlobalFlagsBeforeCommand(t *testing.T) {
	e := newEnv(context.Background(), nil, io.Discard, io.Discard)
	rest, err := e.parseGlobal([]string{"--no-mdns", "--listen", "127.0.0.1:7", "--peer", "127.0.0.1:1", "-v", "cat", "d", "--peer", "127.0.0.1:2"})
	if err != nil || rest[0] != "cat" {
		t.Fatal(rest, err)
	}
	e.cmd = lookup("cat")
	if _, err := e.parse(e.flags(), rest[1:], 1); err != nil {
		t.Fatal(err)
	}
	g := e.g
	if !g.noMDNS || g.listen != "127.0.0.1:7" || g.verbose != 1 || !slices.Equal(g.peers, []string{"127.0.0.1:1", "127.0.0.1:2"}) {
		t.Errorf("globals after the command = %+v", g)
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int{"1": 1, "4096": 4096, "4k": 4096, "4KiB": 4096, "2M": 2 << 20, "16MiB": 16 << 20} {
		if got, err := parseSize(in); err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "K", "-1", "1.5M", "4KB", "1G", "99999999999"} {
		if _, err := parseSize(in); err == nil {
			t.Errorf("parseSize(%q) accepted", in)
		}
	}
}

// The package documentation covers every command and every flag.
func TestDocCoversEveryFlag(t *testing.T) {
	doc, err := os.ReadFile("doc.go")
	if err != nil {
		t.Fatal(err)
	}
	text := string(doc)
	g := defaultGlobals()
	global := newFlagSet("")
	g.define(global)
	global.VisitAll(func(f *flag.Flag) {
		if !strings.Contains(text, "-"+f.Name+" ") {
			t.Errorf("doc.go lacks global flag -%s", f.Name)
		}
	})
	for _, c := range commands {
		if !strings.Contains(text, "hyperfeed "+c.name+" ") {
			t.Errorf("doc.go lacks a synopsis of %s", c.name)
		}
		// The command's flags, as it defines them: run it for its help.
		out := newLineWriter()
		if code := run(context.Background(), []string{"help", c.name}, nil, out, io.Discard); code != 0 {
			t.Fatalf("help %s: exit %d", c.name, code)
		}
		for _, line := range strings.Split(out.String(), "\n") {
			if name, ok := strings.CutPrefix(line, "  --"); ok {
				name, _, _ = strings.Cut(name, " ")
				if !strings.Contains(text, "--"+name) {
					t.Errorf("doc.go lacks %s --%s", c.name, name)
				}
			}
		}
	}
}
