package main

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"syscall"
	"testing"
	"time"

	"github.com/hyperfeed/hyperfeed/examples/internal/exectest"
	"github.com/hyperfeed/hyperfeed/internal/netns"
	"go.uber.org/goleak"
)

// The tests run the alice and bob binaries as a user would, on loopback
// with mDNS off, and in two network namespaces (two hosts) with mDNS on
// the cable between them and nowhere else.
var aliceBin, bobBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "hyperfeed-alice-test-")
	if err == nil {
		aliceBin, err = exectest.Build(dir, "alice", ".")
	}
	if err == nil {
		bobBin, err = exectest.Build(dir, "bob", "../bob")
	}
	if err != nil {
		os.RemoveAll(dir)
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	goleak.VerifyTestMain(m, goleak.Cleanup(func(int) { os.RemoveAll(dir) }))
}

// TestLoopback: alice and bob on 127.0.0.1, bob given alice's address, find
// each other; bob leaves friendly (SIGTERM), comes back as the same user,
// and is killed, and alice sees each step.
func TestLoopback(t *testing.T) {
	tmp := t.TempDir()
	args := func(who string, peers ...string) []string {
		a := []string{"-no-mdns", "-listen", "127.0.0.1:0", "-ip", "127.0.0.1",
			"-dir", filepath.Join(tmp, who), "-heartbeat", "200ms"}
		for _, p := range peers {
			a = append(a, "-peer", p)
		}
		return a
	}
	alice := exectest.Start(t, "alice", exec.Command(aliceBin, args("alice")...))
	aAddr := alice.Expect(`^started alice at (127\.0\.0\.1:\d+)$`)[1]
	bob := exectest.Start(t, "bob", exec.Command(bobBin, args("bob", aAddr)...))
	bAddr := bob.Expect(`^started bob at (127\.0\.0\.1:\d+)$`)[1]
	alice.Expect(`^bob online at ` + regexp.QuoteMeta(bAddr) + `$`)
	alice.Expect(`^users: alice bob$`)
	alice.Expect(`^found bob at ` + regexp.QuoteMeta(bAddr) + `$`)
	bob.Expect(`^found alice at ` + regexp.QuoteMeta(aAddr) + `$`)

	// A friendly leave: bob logs out, exits 0, and alice sees it.
	bob.Signal(syscall.SIGTERM)
	bob.Expect(`^logged out$`)
	bob.ExitOK()
	alice.Expect(`^bob offline$`)
	alice.Expect(`^users: alice bob\(offline\)$`)

	// Bob again, from his data: the same user, who knows alice before
	// anyone answers, found anew at his new address.
	bob = exectest.Start(t, "bob again", exec.Command(bobBin, args("bob", aAddr)...))
	bAddr = bob.Expect(`^started bob at (127\.0\.0\.1:\d+)$`)[1]
	bob.Expect(`^users: alice(?:\(offline\))? bob$`)
	alice.Expect(`^found bob at ` + regexp.QuoteMeta(bAddr) + `$`)
	bob.Expect(`^found alice at ` + regexp.QuoteMeta(aAddr) + `$`)

	// An unfriendly leave: killed, bob goes offline all the same.
	bob.Signal(syscall.SIGKILL)
	alice.Expect(`^bob offline$`)
	if err := bob.Wait(); !killed(err) {
		t.Fatalf("bob, killed, exited with %v", err)
	}

	alice.Signal(syscall.SIGTERM)
	alice.Expect(`^logged out$`)
	alice.ExitOK()
}

// TestTwoHosts runs alice and bob on two hosts: two network namespaces
// joined by a veth cable and nothing else. Nobody tells them where the
// other is: they find each other by mDNS, pinned to the veth ends, so no
// packet reaches any network the machine is on. Then bob's cable is cut
// and bob killed, so that nothing of his end reaches alice, and alice must
// notice by the silence alone, within the offline interval.
func TestTwoHosts(t *testing.T) {
	if err := netns.Available(); err != nil {
		t.Skipf("two hosts need two network namespaces here, and cannot have them: %v", err)
	}
	const heartbeat = 300 * time.Millisecond
	const offlineAfter = 3 * heartbeat
	p := netns.NewPair(t)
	tmp := t.TempDir()
	args := func(who, iface string, addr netip.Addr) []string {
		return []string{"-iface", iface, "-ip", addr.String(), "-listen", net.JoinHostPort(addr.String(), "0"),
			"-dir", filepath.Join(tmp, who), "-heartbeat", heartbeat.String(), "-offline-after", offlineAfter.String()}
	}
	start := time.Now()
	alice := exectest.Start(t, "alice", p.Command(p.A, aliceBin, args("alice", p.AIface, p.AAddr)...))
	bob := exectest.Start(t, "bob", p.Command(p.B, bobBin, args("bob", p.BIface, p.BAddr)...))
	aAddr := alice.Expect(`^started alice at (` + regexp.QuoteMeta(p.AAddr.String()) + `:\d+)$`)[1]
	bAddr := bob.Expect(`^started bob at (` + regexp.QuoteMeta(p.BAddr.String()) + `:\d+)$`)[1]
	alice.Expect(`^found bob at ` + regexp.QuoteMeta(bAddr) + `$`)
	bob.Expect(`^found alice at ` + regexp.QuoteMeta(aAddr) + `$`)
	t.Logf("alice and bob found each other by mDNS %v after they were started", time.Since(start).Round(time.Millisecond))

	out, err := exec.Command("ip", "-n", p.B, "link", "set", "dev", p.BIface, "down").CombinedOutput()
	if err != nil {
		t.Fatalf("cutting bob's cable: %v: %s", err, out)
	}
	bob.Signal(syscall.SIGKILL)
	killedAt := time.Now()
	alice.Expect(`^bob offline$`)
	took := time.Since(killedAt)
	// The node promises offline within the offline interval of the last
	// word heard, which came before the kill; a second more is for the
	// news to reach the output, on a slow machine under -race.
	limit := offlineAfter + time.Second
	t.Logf("alice saw bob offline %v after he was cut off and killed (offline interval %v)", took.Round(time.Millisecond), offlineAfter)
	if took > limit {
		t.Errorf("alice saw bob offline %v after he was killed: more than %v", took, limit)
	}
	if err := bob.Wait(); !killed(err) {
		t.Fatalf("bob, killed, exited with %v", err)
	}

	alice.Signal(syscall.SIGTERM)
	alice.Expect(`^logged out$`)
	alice.ExitOK()
}

// killed reports whether err says that the process died of SIGKILL.
func killed(err error) bool {
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return false
	}
	ws, ok := ee.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL
}
