//go:build unix

package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"net"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hyperfeed/hyperfeed/usersession"
)

// userNet is a usersession directory of its own (a random topic) whose
// nodes run in the test process, on loopback, without mDNS.
type userNet struct {
	t     *testing.T
	topic string
	base  string
}

func newUserNet(t *testing.T) *userNet {
	var b [8]byte
	rand.Read(b[:])
	return &userNet{t: t, topic: "test-" + hex.EncodeToString(b[:]), base: t.TempDir()}
}

// start starts alias's session on the device named "laptop", knowing
// peers, and closes it when the test ends.
func (un *userNet) start(alias string, peers ...*usersession.Node) *usersession.Node {
	un.t.Helper()
	cfg := usersession.Config{
		Dir:               filepath.Join(un.base, alias),
		Topic:             un.topic,
		ListenAddr:        "127.0.0.1:0",
		NoMDNS:            true,
		HeartbeatInterval: 100 * time.Millisecond,
	}
	for _, p := range peers {
		cfg.Peers = append(cfg.Peers, sessionAddr(p.Self()))
	}
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	n, err := usersession.StartUserSession(ctx, usersession.UserSession{Alias: alias, DeviceName: "laptop"}, cfg)
	if err != nil {
		un.t.Fatal(err)
	}
	un.t.Cleanup(func() { n.Close() })
	return n
}

// args returns the arguments of a users command that observes un through
// peer, with its data in dir.
func (un *userNet) args(peer *usersession.Node, dir string, extra ...string) []string {
	args := []string{"users", "--topic", un.topic, "--peer", sessionAddr(peer.Self()), "--dir", dir}
	return append(append(args, loopback...), extra...)
}

// sessionAddr is where a session says it is; a node started with port 0
// publishes its swarm port, so it is also where peers dial it.
func sessionAddr(s usersession.UserSession) string {
	return net.JoinHostPort(s.IP, strconv.Itoa(s.Port))
}

// rowPattern matches the table row of n's device, with the online column.
func rowPattern(n *usersession.Node, online string) string {
	s := n.Self()
	return `^` + s.Alias + `\s+laptop \(` + s.Device.String()[:8] + `\)\s+` + regexp.QuoteMeta(sessionAddr(s)) + `\s+` + online + `\s+now$`
}

func TestUsers(t *testing.T) {
	un := newUserNet(t)
	alice := un.start("alice")
	cfg, obs := t.TempDir(), filepath.Join(t.TempDir(), "observer")

	out := ok(t, cfg, "", un.args(alice, obs)...)
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != 2 || !regexp.MustCompile(`^ALIAS\s+DEVICE\s+ADDRESS\s+ONLINE\s+LAST SEEN$`).MatchString(lines[0]) ||
		!regexp.MustCompile(rowPattern(alice, "yes")).MatchString(lines[1]) {
		t.Errorf("users printed:\n%s\nwant the header and a row matching %s", out, rowPattern(alice, "yes"))
	}

	var rows []struct {
		Alias    string  `json:"alias"`
		Identity string  `json:"identity"`
		Device   string  `json:"device"`
		Primary  bool    `json:"primary"`
		Address  string  `json:"address"`
		Online   bool    `json:"online"`
		LastSeen *string `json:"last_seen"`
	}
	if err := json.Unmarshal([]byte(ok(t, cfg, "", un.args(alice, obs, "--json")...)), &rows); err != nil {
		t.Fatal(err)
	}
	self := alice.Self()
	if len(rows) != 1 || rows[0].Alias != "alice" || rows[0].Identity != self.Identity.String() || rows[0].Device != self.Device.String() ||
		!rows[0].Primary || rows[0].Address != sessionAddr(self) || !rows[0].Online || rows[0].LastSeen == nil {
		t.Errorf("users --json = %+v", rows)
	}
	// The observer is in nobody's directory.
	if users := alice.GetUsers(); len(users) != 1 {
		t.Errorf("alice lists %v", users)
	}
}

// With --watch, and output that is no terminal, users prints the table,
// then a line per change, until interrupted, which ends it with status 0.
func TestUsersWatch(t *testing.T) {
	un := newUserNet(t)
	alice := un.start("alice")
	bob := un.start("bob", alice)
	p := start(t, t.TempDir(), nil, un.args(alice, filepath.Join(t.TempDir(), "observer"), "--watch")...)
	p.expect(p.stdout, `^ALIAS\s+DEVICE`)
	p.expect(p.stdout, rowPattern(alice, "yes"))
	p.expect(p.stdout, rowPattern(bob, "yes"))

	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	if err := bob.Logout(ctx); err != nil {
		t.Fatal(err)
	}
	// He is shown offline, without an address; if his connection ended
	// before his logout came in, the address goes in a later update.
	p.expect(p.stdout, `^\d{4}-\d\d-\d\dT\S+ (left|updated) bob - laptop \(`+bob.Self().Device.String()[:8]+`\)$`)

	p.signal(syscall.SIGINT)
	if code := p.wait(); code != 0 {
		t.Errorf("users --watch ended with %d on SIGINT, want 0; output:\n%s", code, p.output())
	}
	if out := p.output(); strings.Contains(out, "\x1b") {
		t.Errorf("users --watch drew on a pipe as on a terminal:\n%q", out)
	}
}

// Without --dir, a users running at the same time as another takes a
// temporary directory rather than fail on the default one, which is locked.
func TestUsersSecondRunTakesATemporaryDir(t *testing.T) {
	un := newUserNet(t)
	alice := un.start("alice")
	cfg := t.TempDir()
	args := func(extra ...string) []string {
		return append([]string{"users", "--topic", un.topic, "--peer", sessionAddr(alice.Self()), "--no-mdns", "--listen", "127.0.0.1:0"}, extra...)
	}
	first := start(t, cfg, nil, args("--watch")...)
	first.expect(first.stdout, rowPattern(alice, "yes"))
	r := hf(t, cfg, "", args("-v")...)
	if r.code != 0 || !regexp.MustCompile(`(?m)`+rowPattern(alice, "yes")).MatchString(r.stdout) {
		t.Errorf("second users: exit %d, stdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
	if !strings.Contains(r.stderr, "running with a temporary one") {
		t.Errorf("the second users did not say it took a temporary directory:\n%s", r.stderr)
	}
	first.signal(syscall.SIGINT)
	if code := first.wait(); code != 0 {
		t.Errorf("users --watch ended with %d on SIGINT", code)
	}
}

func TestUsersUsage(t *testing.T) {
	cfg, obs := t.TempDir(), filepath.Join(t.TempDir(), "observer")
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"users", "extra"}, `takes no operands, got "extra"`},
		{[]string{"users", "--wait", "-1s"}, "--wait -1s is negative"},
		{[]string{"users", "--heartbeat", "1ms"}, "HeartbeatInterval 1ms is under 10ms"},
		{[]string{"users", "--offline-after", "1s", "--heartbeat", "2s"}, "OfflineAfter 1s is under HeartbeatInterval 2s"},
	} {
		oneLine(t, hf(t, cfg, "", append(append(c.args, "--dir", obs), loopback...)...), exitUsage, c.want)
	}
	r := hfEnv(t, cfg, []string{"HYPERFEED_SECRET=abc"}, "", append([]string{"users", "--dir", obs}, loopback...)...)
	oneLine(t, r, exitUsage, "$HYPERFEED_SECRET: want 64 hex digits")
}

// An interrupted users says what it was waiting for and exits 130; with
// --watch, interrupting is its usual end. In-process, so that goleak sees
// whatever the observer leaves running.
func TestInProcessUsersInterrupted(t *testing.T) {
	tmp := t.TempDir()
	// Nobody listens on the peer's port: users waits for a peer.
	args := append([]string{"users", "--dir", filepath.Join(tmp, "observer"), "--peer", "127.0.0.1:9", "--wait", "1h"}, loopback...)
	for _, c := range []struct {
		extra  []string
		code   int
		stderr string
	}{
		{nil, 130, "hyperfeed: users: interrupted while waiting for peers\n"},
		{[]string{"--watch"}, 0, ""},
	} {
		ctx, stop := context.WithCancelCause(context.Background())
		done := make(chan struct{})
		var stdout, stderr *lineWriter
		var code int
		go func() {
			defer close(done)
			stdout, stderr, code = runIn(t, ctx, "", append(args, c.extra...)...)
		}()
		stop(interrupted{syscall.SIGINT})
		<-done
		if code != c.code || stderr.String() != c.stderr || stdout.String() != "" {
			t.Errorf("%q: exit %d, stdout %q, stderr %q; want exit %d, stderr %q", c.extra, code, stdout, stderr, c.code, c.stderr)
		}
	}
}

// In-process, the whole run: goleak sees the observer's goroutines, and the
// race detector the command's.
func TestInProcessUsersWatch(t *testing.T) {
	un := newUserNet(t)
	alice := un.start("alice")
	ctx, stop := context.WithCancelCause(context.Background())
	defer stop(nil)
	args := un.args(alice, filepath.Join(t.TempDir(), "observer"), "--watch")
	checkArgs(t, args)
	stdout, stderr := newLineWriter(), newLineWriter()
	done := make(chan int, 1)
	go func() { done <- run(ctx, args, strings.NewReader(""), stdout, stderr) }()
	stdout.expect(t, rowPattern(alice, "yes"))
	if err := alice.Close(); err != nil {
		t.Fatal(err)
	}
	// Gone, not logged out: the address stays.
	stdout.expect(t, `^\S+ left alice `+regexp.QuoteMeta(sessionAddr(alice.Self()))+` laptop \(`)
	stop(interrupted{syscall.SIGINT})
	if code := <-done; code != 0 {
		t.Errorf("exit %d on interrupt; stderr:\n%s", code, stderr)
	}
}
