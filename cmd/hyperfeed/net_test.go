//go:build unix

package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// lines returns "prefix 0\nprefix 1\n..." for n lines.
func lines(prefix string, n int) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "%s %06d\n", prefix, i)
	}
	return b.String()
}

type infoJSON struct {
	Key        string `json:"key"`
	Writable   bool   `json:"writable"`
	Length     uint64 `json:"length"`
	Downloaded uint64 `json:"downloaded"`
}

func info(t *testing.T, cfg, dir string) infoJSON {
	t.Helper()
	var in infoJSON
	if err := json.Unmarshal([]byte(ok(t, cfg, "", "info", "--json", dir)), &in); err != nil {
		t.Fatal(err)
	}
	return in
}

func TestShareAndClone(t *testing.T) {
	cfg, tmp := t.TempDir(), t.TempDir()
	w, c := filepath.Join(tmp, "writer"), filepath.Join(tmp, "clone")
	ok(t, cfg, "", "create", w)
	content := lines("entry", 3000)
	ok(t, cfg, content, "append", w)

	sh, key, addr := share(t, cfg, nil, w)
	// The share took the default identity, in the config directory.
	st, err := os.Stat(filepath.Join(cfg, "hyperfeed", "peer.key"))
	if err != nil || st.Mode().Perm() != 0o600 || st.Size() != 32 {
		t.Errorf("default peer key: %v, %v", st, err)
	}
	// While shared, the feed is locked.
	oneLine(t, hf(t, cfg, "", "info", w), exitFailure, "is in use by another process")

	// The clone runs with the same config directory, so it must fall back to
	// a temporary identity (-v says so) rather than share the sharer's.
	r := hf(t, cfg, "", append([]string{"clone", key, c, "--peer", addr, "-v"}, loopback...)...)
	if r.code != 0 {
		t.Fatalf("clone: exit %d\n%s", r.code, r.stderr)
	}
	if want := fmt.Sprintf("cloned %s: 3000 blocks, ", c); !strings.HasPrefix(r.stdout, want) || !strings.HasSuffix(r.stdout, ", verified\n") {
		t.Errorf("clone printed %q, want %q...verified", r.stdout, want)
	}
	if !strings.Contains(r.stderr, `msg="peer connected"`) {
		t.Errorf("clone -v did not log its peer:\n%s", r.stderr)
	}
	if !strings.Contains(r.stderr, "running with a temporary one") {
		t.Errorf("clone did not fall back to a temporary identity:\n%s", r.stderr)
	}
	// Not a terminal: plain progress lines, the last one complete.
	if !strings.Contains(r.stderr, "\n3000/3000 blocks  ") || strings.Contains(r.stderr, "\r") {
		t.Errorf("clone progress:\n%q", r.stderr)
	}

	if got := ok(t, cfg, "", "cat", c); got != content {
		t.Errorf("the clone's cat differs from what was appended (%d bytes, want %d)", len(got), len(content))
	}
	if in := info(t, cfg, c); in.Key != key || in.Writable || in.Length != 3000 || in.Downloaded != 3000 {
		t.Errorf("clone info = %+v", in)
	}
	ok(t, cfg, "", "verify", c)
	oneLine(t, hf(t, cfg, "x\n", "append", c), exitFailure, "is a replica of "+key)

	sh.signal(syscall.SIGINT)
	if code := sh.wait(); code != 0 {
		t.Errorf("share ended with %d on SIGINT, want 0; output:\n%s", code, sh.output())
	}
	if got := ok(t, cfg, "", "cat", w); got != content {
		t.Error("the writer's cat changed")
	}

	// Damage in the clone's data: verify names it and exits 1.
	data := filepath.Join(c, "data")
	b, err := os.ReadFile(data)
	if err != nil {
		t.Fatal(err)
	}
	b[2000*len("entry 002000")+len("entry ")] ^= 1 // lines are stored without "\n"
	if err := os.WriteFile(data, b, 0o600); err != nil {
		t.Fatal(err)
	}
	oneLine(t, hf(t, cfg, "", "verify", c), exitCorrupt, c+" is corrupt: block 2000 does not match")
}

// A clone interrupted midway keeps what it has, and the same command
// resumes it.
func TestCloneResumes(t *testing.T) {
	cfg, tmp := t.TempDir(), t.TempDir()
	w, c := filepath.Join(tmp, "writer"), filepath.Join(tmp, "clone")
	ok(t, cfg, "", "create", w)
	// Big enough that the download outlasts the few milliseconds between blocks
	// reaching the data file and the sharer stopping, small enough for -race.
	const n = 50000
	content := lines("block", n)
	ok(t, cfg, content, "append", w)
	sh, key, addr := share(t, cfg, nil, w, "--key-file", filepath.Join(tmp, "share.key"))
	args := append([]string{"clone", key, c, "--peer", addr, "--key-file", filepath.Join(tmp, "clone.key")}, loopback...)

	cl := start(t, cfg, nil, args...)
	// Freeze the sharer as soon as blocks reach the clone's data file, so the
	// clone is caught partway however fast the machine is.
	poll(t, "blocks in the clone's data file", func() bool {
		st, err := os.Stat(filepath.Join(c, "data"))
		return err == nil && st.Size() > 0
	})
	sh.signal(syscall.SIGSTOP)
	m := cl.expect(cl.stderr, `^([1-9]\d*)/(\d+) blocks  `)
	if m[2] != strconv.Itoa(n) {
		t.Fatalf("progress %q: want a total of %d blocks", m[0], n)
	}
	cl.signal(syscall.SIGINT)
	m = cl.expect(cl.stderr, `^hyperfeed: clone: interrupted with (\d+) of (\d+) blocks; run the same command again to resume$`)
	if code := cl.wait(); code != 130 {
		t.Errorf("interrupted clone exit %d, want 130", code)
	}
	had, _ := strconv.ParseUint(m[1], 10, 64)
	in := info(t, cfg, c)
	if in.Length != n || in.Downloaded == 0 || in.Downloaded >= n || in.Downloaded != had {
		t.Fatalf("after the interrupt the clone holds %d of %d blocks (it said %d): want part of %d", in.Downloaded, in.Length, had, n)
	}
	ok(t, cfg, "", "verify", c) // what a partial clone holds verifies too

	sh.signal(syscall.SIGCONT)
	cl = start(t, cfg, nil, args...)
	m = cl.expect(cl.stderr, `^(\d+)/(\d+) blocks  `)
	if first, _ := strconv.ParseUint(m[1], 10, 64); first < had {
		t.Errorf("resumed clone starts at %d blocks, below the %d it had", first, had)
	}
	cl.expect(cl.stdout, fmt.Sprintf(`^cloned %s: %d blocks, .*, verified$`, c, n))
	if code := cl.wait(); code != 0 {
		t.Fatalf("resumed clone exit %d:\n%s", code, cl.output())
	}
	sh.signal(syscall.SIGINT)
	sh.wait()
	if got := ok(t, cfg, "", "cat", c); got != content {
		t.Errorf("the resumed clone's cat differs from what was appended")
	}
}

// share --append publishes blocks as they are written; clone --live and
// cat --live follow them.
func TestLive(t *testing.T) {
	cfg, tmp := t.TempDir(), t.TempDir()
	w, a, b := filepath.Join(tmp, "writer"), filepath.Join(tmp, "a"), filepath.Join(tmp, "b")
	ok(t, cfg, "", "create", w)
	sh, key, addr := share(t, cfg, nil, w, "--append", "-v")
	io := func(s string) {
		if _, err := sh.stdin.Write([]byte(s)); err != nil {
			t.Fatal(err)
		}
	}
	io("first\nsecond\n")
	sh.expect(sh.stderr, `msg=appended length=2$`)

	peer := append([]string{"--peer", addr}, loopback...)
	live := start(t, cfg, nil, append([]string{"clone", "--live", key, a}, peer...)...)
	live.expect(live.stdout, `^cloned .*: 2 blocks, .*, verified$`)
	ok(t, cfg, "", append([]string{"clone", key, b}, peer...)...)
	cat := start(t, cfg, nil, append([]string{"cat", "--live", b}, peer...)...)
	for _, want := range []string{"first", "second"} {
		cat.expect(cat.stdout, "^"+want+"$")
	}

	io("third\n")
	cat.expect(cat.stdout, "^third$")
	live.expect(live.stderr, `^3/3 blocks  `)

	for _, p := range []*proc{cat, live} {
		p.signal(syscall.SIGINT)
		if code := p.wait(); code != 0 {
			t.Errorf("%q ended with %d on SIGINT, want 0; output:\n%s", p.args, code, p.output())
		}
	}
	if got := ok(t, cfg, "", "cat", a); got != "first\nsecond\nthird\n" {
		t.Errorf("clone --live holds %q", got)
	}

	sh.stdin.Close() // the end of input does not end the share
	sh.expect(sh.stderr, `input ended; still sharing`)
	sh.signal(syscall.SIGTERM)
	if code := sh.wait(); code != 0 {
		t.Errorf("share ended with %d on SIGTERM, want 0", code)
	}
}

// A network secret is read from a file or the environment, and both sides
// need it.
func TestSecret(t *testing.T) {
	cfg, tmp := t.TempDir(), t.TempDir()
	w, c := filepath.Join(tmp, "writer"), filepath.Join(tmp, "clone")
	secret := strings.Repeat("5a", 32)
	file := filepath.Join(tmp, "secret")
	if err := os.WriteFile(file, []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ok(t, cfg, "", "create", w)
	ok(t, cfg, "a\nb\n", "append", w)
	_, key, addr := share(t, cfg, nil, w, "--secret-file", file)
	r := hfEnv(t, cfg, []string{"HYPERFEED_SECRET=" + secret}, "", append([]string{"clone", key, c, "--peer", addr}, loopback...)...)
	if r.code != 0 {
		t.Fatalf("clone with the secret: exit %d\n%s", r.code, r.stderr)
	}
	fresh := filepath.Join(tmp, "fresh")
	oneLine(t, hfEnv(t, cfg, []string{"HYPERFEED_SECRET=nothex"}, "", append([]string{"clone", key, fresh, "--peer", addr}, loopback...)...),
		exitUsage, "$HYPERFEED_SECRET: want 64 hex digits")
	if _, err := os.Stat(fresh); err == nil {
		t.Error("a clone refused for its secret created its directory")
	}
	oneLine(t, hfEnv(t, cfg, []string{"HYPERFEED_SECRET_FILE=" + filepath.Join(tmp, "none")}, "", append([]string{"share", w}, loopback...)...),
		exitFailure, "network secret ($HYPERFEED_SECRET_FILE)")
}

// A feed nothing was appended to yet clones too: its peer's head, length 0,
// is all there is to hold.
func TestCloneEmptyFeed(t *testing.T) {
	cfg, tmp := t.TempDir(), t.TempDir()
	w, c := filepath.Join(tmp, "writer"), filepath.Join(tmp, "clone")
	ok(t, cfg, "", "create", w)
	_, key, addr := share(t, cfg, nil, w)
	got := ok(t, cfg, "", append([]string{"clone", key, c, "--peer", addr}, loopback...)...)
	if want := "cloned " + c + ": 0 blocks, 0 B, verified\n"; got != want {
		t.Errorf("clone printed %q, want %q", got, want)
	}
	if in := info(t, cfg, c); in.Key != key || in.Writable || in.Length != 0 {
		t.Errorf("clone info = %+v", in)
	}
}

// A clone run again on a complete replica does not stop at what it holds:
// it waits to hear the sharer's head, and fetches what was appended since.
func TestCloneAgainCatchesUp(t *testing.T) {
	cfg, tmp := t.TempDir(), t.TempDir()
	w, c := filepath.Join(tmp, "writer"), filepath.Join(tmp, "clone")
	ok(t, cfg, "", "create", w)
	sh, key, addr := share(t, cfg, nil, w, "--append", "-v")
	if _, err := sh.stdin.Write([]byte("one\ntwo\n")); err != nil {
		t.Fatal(err)
	}
	sh.expect(sh.stderr, `msg=appended length=2$`)
	args := append([]string{"clone", key, c, "--peer", addr}, loopback...)
	if got := ok(t, cfg, "", args...); !strings.HasPrefix(got, "cloned "+c+": 2 blocks, ") {
		t.Fatalf("first clone printed %q", got)
	}
	if _, err := sh.stdin.Write([]byte("three\n")); err != nil {
		t.Fatal(err)
	}
	sh.expect(sh.stderr, `msg=appended length=3$`)
	if got := ok(t, cfg, "", args...); !strings.HasPrefix(got, "cloned "+c+": 3 blocks, ") {
		t.Errorf("clone run again printed %q, want the 3 blocks the sharer has", got)
	}
	if got := ok(t, cfg, "", "cat", c); got != "one\ntwo\nthree\n" {
		t.Errorf("the clone holds %q", got)
	}
}

// An interrupted clone that never found a peer says so.
func TestCloneWithoutPeers(t *testing.T) {
	cfg, tmp := t.TempDir(), t.TempDir()
	cl := start(t, cfg, nil, append([]string{"clone", strings.Repeat("ab", 32), filepath.Join(tmp, "c")}, loopback...)...)
	cl.expect(cl.stderr, `no mDNS and no --peer: waiting for a peer to connect to this one`)
	cl.signal(syscall.SIGTERM)
	cl.expect(cl.stderr, `^hyperfeed: clone: terminated while looking for peers$`)
	if code := cl.wait(); code != 128+int(syscall.SIGTERM) {
		t.Errorf("exit %d, want %d", code, 128+int(syscall.SIGTERM))
	}
}

// poll waits for cond, checking often: for state the test cannot be told of.
func poll(t *testing.T, what string, cond func() bool) {
	t.Helper()
	end := time.Now().Add(deadline)
	for !cond() {
		if time.Now().After(end) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}
