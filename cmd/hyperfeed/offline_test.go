package main

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

func TestCreateAppendCatInfoVerify(t *testing.T) {
	cfg, dir := t.TempDir(), filepath.Join(t.TempDir(), "feed")
	key := strings.TrimSpace(ok(t, cfg, "", "create", dir))
	if !regexp.MustCompile(`^[0-9a-f]{64}$`).MatchString(key) {
		t.Fatalf("create printed %q, want a key", key)
	}

	// Lines: an empty one is a block, "\r" is kept, a last line without
	// "\n" counts.
	if got := ok(t, cfg, "one\ntwo\r\n\nfour", "append", dir); got != "4\n" {
		t.Fatalf("append printed %q, want the new length 4", got)
	}
	if got := ok(t, cfg, "five\n", "append", dir); got != "5\n" {
		t.Fatalf("second append printed %q, want 5", got)
	}
	if got, want := ok(t, cfg, "", "cat", dir), "one\ntwo\r\n\nfour\nfive\n"; got != want {
		t.Errorf("cat = %q, want %q", got, want)
	}
	if got, want := ok(t, cfg, "", "cat", "--start", "1", "--end", "3", dir), "two\r\n\n"; got != want {
		t.Errorf("cat 1..3 = %q, want %q", got, want)
	}
	// Flags may follow the operand.
	if got, want := ok(t, cfg, "", "cat", dir, "--raw", "--start=3"), "fourfive"; got != want {
		t.Errorf("cat --raw from 3 = %q, want %q", got, want)
	}

	text := ok(t, cfg, "", "info", dir)
	for _, want := range []string{"key            " + key, "length         5 blocks", "bytes          15 ", "writable", "downloaded     5 of 5 blocks"} {
		if !strings.Contains(text, want) {
			t.Errorf("info lacks %q:\n%s", want, text)
		}
	}
	var in struct {
		Key          string `json:"key"`
		DiscoveryKey string `json:"discovery_key"`
		TreeHash     string `json:"tree_hash"`
		Signature    string `json:"signature"`
		Writable     bool   `json:"writable"`
		Length       uint64 `json:"length"`
		Bytes        uint64 `json:"bytes"`
		Fork         uint64 `json:"fork"`
		Downloaded   uint64 `json:"downloaded"`
		DiskBytes    int64  `json:"disk_bytes"`
	}
	raw := ok(t, cfg, "", "info", "--json", dir)
	if err := json.Unmarshal([]byte(raw), &in); err != nil {
		t.Fatalf("info --json: %v\n%s", err, raw)
	}
	var names map[string]any
	json.Unmarshal([]byte(raw), &names)
	for _, k := range []string{"key", "discovery_key", "writable", "length", "bytes", "fork", "downloaded", "tree_hash", "signature", "disk_bytes"} {
		if _, ok := names[k]; !ok {
			t.Errorf("info --json lacks %q", k)
		}
	}
	if in.DiscoveryKey == "" || in.DiscoveryKey == key {
		t.Errorf("info --json discovery key %q", in.DiscoveryKey)
	}
	if in.Key != key || !in.Writable || in.Length != 5 || in.Bytes != 15 || in.Fork != 0 || in.Downloaded != 5 {
		t.Errorf("info --json = %+v", in)
	}
	if len(in.Signature) != 128 || len(in.TreeHash) != 64 || in.DiskBytes <= 0 {
		t.Errorf("info --json head or disk = %+v", in)
	}

	if got := ok(t, cfg, "", "verify", dir); !strings.HasPrefix(got, "ok: all 5 blocks match the signed head") {
		t.Errorf("verify printed %q", got)
	}
}

func TestAppendChunksAndWhole(t *testing.T) {
	cfg, dir := t.TempDir(), filepath.Join(t.TempDir(), "feed")
	ok(t, cfg, "", "create", dir)
	// 9 MiB in 4 KiB chunks: more than one batch, and a short last block.
	file := make([]byte, 9<<20+123)
	rand.Read(file)
	if got := ok(t, cfg, string(file), "append", "--chunk", "4KiB", dir); got != "2305\n" {
		t.Fatalf("append --chunk printed %q, want 2305", got)
	}
	whole := []byte("a block\nwith lines\n")
	if got := ok(t, cfg, string(whole), "append", "--whole", "--sync", dir); got != "2306\n" {
		t.Fatalf("append --whole printed %q, want 2306", got)
	}
	if got := ok(t, cfg, "", "cat", "--raw", "--end", "2305", dir); !bytes.Equal([]byte(got), file) {
		t.Errorf("cat --raw of the chunks differs from the file (%d bytes, want %d)", len(got), len(file))
	}
	if got := ok(t, cfg, "", "cat", "--raw", "--start", "2305", dir); got != string(whole) {
		t.Errorf("cat --raw of the whole block = %q", got)
	}
	if got := ok(t, cfg, "", "cat", "--start", "2303", "--end", "2304", dir); len(got) != 4096+1 {
		t.Errorf("a chunk with its newline is %d bytes, want 4097", len(got))
	}
	if got := ok(t, cfg, "", "append", dir); got != "2306\n" {
		t.Errorf("empty input: append printed %q, want the length unchanged", got)
	}
	ok(t, cfg, "", "verify", dir)
}

func TestVerifyFindsDamage(t *testing.T) {
	cfg, dir := t.TempDir(), filepath.Join(t.TempDir(), "feed")
	ok(t, cfg, "", "create", dir)
	ok(t, cfg, "alpha\nbravo\ncharlie\n", "append", dir)
	data := filepath.Join(dir, "data")
	b, err := os.ReadFile(data)
	if err != nil {
		t.Fatal(err)
	}
	b[len("alphabr")] ^= 0x20 // in block 1
	if err := os.WriteFile(data, b, 0o600); err != nil {
		t.Fatal(err)
	}
	oneLine(t, hf(t, cfg, "", "verify", dir), exitCorrupt, dir+" is corrupt: block 1 ")
	// cat writes the good block before it and stops at the damaged one.
	r := hf(t, cfg, "", "cat", dir)
	oneLine(t, r, exitCorrupt, "block 1")
	if r.stdout != "alpha\n" {
		t.Errorf("cat of a damaged feed wrote %q, want only the block before the damage", r.stdout)
	}
}

func TestUsageAndFailures(t *testing.T) {
	cfg, tmp := t.TempDir(), t.TempDir()
	dir := filepath.Join(tmp, "feed")
	ok(t, cfg, "", "create", dir)
	ok(t, cfg, "x\ny\n", "append", dir)
	if err := os.WriteFile(filepath.Join(tmp, "file"), []byte("not a dir"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(tmp, "stuff"), 0o700); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(tmp, "stuff", "x"), nil, 0o600)
	missing := filepath.Join(tmp, "missing")
	for _, c := range []struct {
		name  string
		args  []string
		stdin string
		code  int
		want  string
	}{
		{"bad flag", []string{"cat", "--bogus", dir}, "", exitUsage, "flag provided but not defined: -bogus"},
		{"bad flag value", []string{"cat", "--start", "x", dir}, "", exitUsage, `invalid value "x" for flag -start`},
		{"unknown command", []string{"frobnicate"}, "", exitUsage, `unknown command "frobnicate"`},
		{"missing operand", []string{"cat"}, "", exitUsage, "want DIR, got 0 operand(s)"},
		{"extra operand", []string{"info", dir, dir}, "", exitUsage, "want DIR, got 2 operand(s)"},
		{"missing dir", []string{"info", missing}, "", exitFailure, missing + ": no such directory"},
		{"not a dir", []string{"verify", filepath.Join(tmp, "file")}, "", exitFailure, "is not a directory"},
		{"no feed", []string{"cat", filepath.Join(tmp, "stuff")}, "", exitFailure, "holds no feed"},
		{"create over a feed", []string{"create", dir}, "", exitFailure, "already holds a feed"},
		{"create in a full dir", []string{"create", filepath.Join(tmp, "stuff")}, "", exitFailure, "is not empty"},
		{"short key", []string{"clone", "abc", missing, "--no-mdns", "--listen", "127.0.0.1:0"}, "", exitUsage, `bad key "abc": key must be 64 hex digits`},
		{"bad key", []string{"clone", strings.Repeat("g", 64), missing, "--no-mdns", "--listen", "127.0.0.1:0"}, "", exitUsage, "bad key"},
		{"chunk and whole", []string{"append", "--chunk", "1K", "--whole", dir}, "", exitUsage, "--chunk and --whole exclude each other"},
		{"zero chunk", []string{"append", "--chunk", "0", dir}, "", exitUsage, "is not between 1 byte"},
		{"bad size", []string{"append", "--chunk", "12KB", dir}, "", exitUsage, `size "12KB"`},
		{"end past length", []string{"cat", "--end", "3", dir}, "", exitUsage, "--end 3 is past the feed's length, 2"},
		{"start past end", []string{"cat", "--start", "2", "--end", "1", dir}, "", exitUsage, "--start 2 is past the end, 1"},
		{"live on the writer", []string{"cat", "--live", dir, "--no-mdns", "--listen", "127.0.0.1:0"}, "", exitUsage, "--live follows a replica"},
		{"iface without mdns", []string{"info", "--iface", "lo", "--no-mdns", dir}, "", exitUsage, "--iface chooses mDNS interfaces"},
		{"chunk without append", []string{"share", "--chunk", "1K", dir, "--no-mdns", "--listen", "127.0.0.1:0"}, "", exitUsage, "--chunk and --whole say how to cut the input of --append"},
		{"bad peer", []string{"clone", strings.Repeat("a", 64), missing, "--no-mdns", "--listen", "127.0.0.1:0", "--peer", "127.0.0.1:99999"}, "", exitUsage, `--peer "127.0.0.1:99999": want host:port`},
		{"clone into another feed", []string{"clone", strings.Repeat("a", 64), dir, "--no-mdns", "--listen", "127.0.0.1:0"}, "", exitFailure, "holds another feed"},
		{"clone into a full dir", []string{"clone", strings.Repeat("a", 64), filepath.Join(tmp, "stuff"), "--no-mdns", "--listen", "127.0.0.1:0"}, "", exitFailure, "is not empty and holds no feed"},
		{"help for nothing", []string{"help", "frobnicate"}, "", exitUsage, `unknown command "frobnicate"`},
	} {
		t.Run(c.name, func(t *testing.T) {
			oneLine(t, hf(t, cfg, c.stdin, c.args...), c.code, c.want)
		})
	}
	if _, err := os.Stat(missing); err == nil {
		t.Errorf("a failed command created %s", missing)
	}
}

func TestLongLineIsRefused(t *testing.T) {
	cfg, dir := t.TempDir(), filepath.Join(t.TempDir(), "feed")
	ok(t, cfg, "", "create", dir)
	long := "short\n" + strings.Repeat("x", 16<<20+1) + "\n"
	r := hf(t, cfg, long, "append", dir)
	oneLine(t, r, exitFailure, "line 2 is longer than the largest block (16.0 MiB): use --chunk")
	r = hf(t, cfg, strings.Repeat("x", 16<<20+1), "append", "--whole", dir)
	oneLine(t, r, exitFailure, "the input is larger than the largest block")
}

func TestHelp(t *testing.T) {
	cfg := t.TempDir()
	for _, args := range [][]string{{"help"}, {"-h"}, {"--help"}} {
		out := ok(t, cfg, "", args...)
		for _, c := range commands {
			if !strings.Contains(out, "  "+c.name+" ") {
				t.Errorf("%q lists no %s:\n%s", args, c.name, out)
			}
		}
	}
	for _, args := range [][]string{{"help", "clone"}, {"clone", "-h"}, {"-v", "clone", "--help"}} {
		out := ok(t, cfg, "", args...)
		if !strings.Contains(out, "usage: hyperfeed clone [flags] KEY DIR") || !strings.Contains(out, "--live") {
			t.Errorf("%q printed:\n%s", args, out)
		}
	}
	r := hf(t, cfg, "")
	if r.code != exitUsage || !strings.HasPrefix(r.stderr, "usage: hyperfeed") {
		t.Errorf("no arguments: exit %d, stderr %q", r.code, r.stderr)
	}
}

// A directory where creating a feed stopped before its header was written
// holds no feed: the commands that need one say so, and create or clone may
// take it up.
func TestUnfinishedFeed(t *testing.T) {
	cfg, dir := t.TempDir(), filepath.Join(t.TempDir(), "half")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "header"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	oneLine(t, hf(t, cfg, "", "info", dir), exitFailure, dir+" holds no feed")
	ok(t, cfg, "", "create", dir)
	if got := ok(t, cfg, "x\n", "append", dir); got != "1\n" {
		t.Errorf("append printed %q", got)
	}
}
