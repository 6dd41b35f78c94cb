package main

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/hyperfeed/hyperfeed/examples/internal/exectest"
	"github.com/hyperfeed/hyperfeed/internal/netns"
	"go.uber.org/goleak"
)

var demoBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "hyperfeed-demo-test-")
	if err == nil {
		demoBin, err = exectest.Build(dir, "demo", ".")
	}
	if err != nil {
		os.RemoveAll(dir)
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	goleak.VerifyTestMain(m, goleak.Cleanup(func(int) { os.RemoveAll(dir) }))
}

// TestDemo runs the demo as the README says, built, and checks that it
// tells the story in order and exits 0, with whichever discovery this
// machine allows.
func TestDemo(t *testing.T) {
	p := exectest.Start(t, "demo", exec.Command(demoBin))
	d := checkDemo(t, p)
	if d != "" {
		// The demo must never multicast beyond loopback.
		ifi, err := net.InterfaceByName(d)
		if err != nil || ifi.Flags&net.FlagLoopback == 0 {
			t.Fatalf("the demo used mDNS on %s, which is not a loopback interface (%v)", d, err)
		}
	}
}

// TestDemoLoopbackMulticast runs the demo where loopback can multicast:
// in a network namespace of its own, whose lo is told to. The demo must
// then try mDNS there, with a trial browse, and either use it or fall back
// to static peers because the trial found nothing; it must finish either
// way. (Today it falls back: zeroconf announces no loopback address, and
// the swarm dials none.)
func TestDemoLoopbackMulticast(t *testing.T) {
	if err := netns.Available(); err != nil {
		t.Skipf("a loopback that multicasts needs a network namespace here, and cannot have one: %v", err)
	}
	pair := netns.NewPair(t)
	if out, err := exec.Command("ip", "-n", pair.A, "link", "set", "dev", "lo", "multicast", "on").CombinedOutput(); err != nil {
		t.Fatalf("lo multicast on: %v: %s", err, out)
	}
	p := exectest.Start(t, "demo", pair.Command(pair.A, demoBin))
	if d := checkDemo(t, p); d != "lo" && !slices.Contains(p.Lines(), "discovery: static peers on 127.0.0.1 (no mDNS: a trial browse on lo found nothing in 2s)") {
		t.Fatalf("the demo neither used mDNS on lo nor tried it\n%s", p.Output())
	}
}

// checkDemo reads the demo's story and its exit, and returns the
// interface it used mDNS on, or "" if it used static peers.
func checkDemo(t *testing.T, p *exectest.Proc) string {
	t.Helper()
	p.Expect(`^two users on this machine, with their data in \S+$`)
	d := p.Expect(`^discovery: (?:mDNS on (\S+), the loopback interface only|static peers on 127\.0\.0\.1 \(no mDNS: .+\))$`)
	alice := p.Expect(`^alice started at (127\.0\.0\.1:\d+)$`)[1]
	bob := p.Expect(`^bob started at (127\.0\.0\.1:\d+)$`)[1]
	if alice == bob {
		t.Fatalf("alice and bob both at %s", alice)
	}
	p.Expect(`^alice found bob at ` + bob + `$`)
	p.Expect(`^bob found alice at ` + alice + `$`)
	p.Expect(`^alice's directory: alice \(online at ` + alice + `\), bob \(online at ` + bob + `\)$`)
	p.Expect(`^bob shows alice a token \(hft1\.\S+…\); alice verifies it: bob, identity [0-9a-f]{16}…$`)
	p.Expect(`^bob logged out$`)
	p.Expect(`^alice sees bob offline: alice \(online at ` + alice + `\), bob \(offline\)$`)
	p.Expect(`^bob's token is refused now: his logout revoked it$`)
	p.Expect(`^alice logged out; done$`)
	p.ExitOK()

	// The temporary directory is gone.
	dir := strings.TrimPrefix(p.Lines()[0], "two users on this machine, with their data in ")
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("the demo left %s behind (%v)", dir, err)
	}
	return d[1]
}

// TestScanGroups: the demo refuses mDNS on loopback when another interface
// has joined an mDNS group, as read from Linux's /proc/net/igmp and igmp6.
func TestScanGroups(t *testing.T) {
	const igmp = "Idx\tDevice    : Count Querier\tGroup    Users Timer\tReporter\n" +
		"1\tlo        :     2      V3\n" +
		"\t\t\t\tFB0000E0     1 0:00000000\t\t0\n" +
		"\t\t\t\t010000E0     1 0:00000000\t\t0\n" +
		"4\teth0      :     2      V3\n" +
		"\t\t\t\t010000E0     1 0:00000000\t\t0\n"
	const igmp6 = "1    lo              ff0200000000000000000000000000fb     1 00000004 0\n" +
		"4    eth0            ff020000000000000000000000000001     1 0000000C 0\n"
	for _, c := range []struct {
		name, text string
		v6         bool
		want       string
	}{
		{"igmp, mDNS on lo only", igmp, false, ""},
		{"igmp, mDNS on eth0 too", igmp + "\t\t\t\tFB0000E0     1 0:00000000\t\t0\n", false, "eth0"},
		{"igmp6, mDNS on lo only", igmp6, true, ""},
		{"igmp6, mDNS on eth0 too", igmp6 + "4    eth0            ff0200000000000000000000000000fb     1 00000004 0\n", true, "eth0"},
	} {
		got, err := scanGroups(strings.NewReader(c.text), c.v6, "lo")
		if err != nil || got != c.want {
			t.Errorf("%s: got %q, %v; want %q", c.name, got, err, c.want)
		}
	}
}
