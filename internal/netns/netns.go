// Package netns builds throwaway Linux network namespaces for tests that
// need a real network between processes (multicast, two hosts) without
// sending a packet to any network the machine is on.
//
// A Pair is two namespaces joined by a veth cable and nothing else: traffic
// inside them cannot reach the host's interfaces, so a test may multicast
// there freely. Creating one needs root and iproute2; tests call Available
// first and skip with its reason when it fails.
package netns

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"sync"
	"testing"
	"time"
)

// Available reports nil if namespaces can be created here, or why not. It
// tries once per process: creates a namespace with a veth cable and deletes
// it, since being root does not mean the kernel allows it (containers,
// missing veth support).
func Available() error { return available() }

var available = sync.OnceValue(func() error {
	if runtime.GOOS != "linux" {
		return fmt.Errorf("netns: network namespaces need Linux, not %s", runtime.GOOS)
	}
	if os.Geteuid() != 0 {
		return errors.New("netns: creating network namespaces needs root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return fmt.Errorf("netns: no ip command (iproute2): %w", err)
	}
	id := newID()
	ns := fmt.Sprintf("hyperfeed-%08x-probe", id)
	if err := ip("netns", "add", ns); err != nil {
		return err
	}
	defer ip("netns", "del", ns)
	return ip("link", "add", fmt.Sprintf("hf%08xp", id), "netns", ns,
		"type", "veth", "peer", "name", fmt.Sprintf("hf%08xq", id), "netns", ns)
})

// Pair is two network namespaces, A and B, joined by a veth cable: AIface
// in A with address AAddr, BIface in B with BAddr, both in one private /24,
// up and multicast-capable. Each namespace has its loopback up and a route
// for multicast through its veth, so mDNS works between them.
type Pair struct {
	A, B           string // namespace names
	AIface, BIface string
	AAddr, BAddr   netip.Addr
}

// NewPair creates a Pair for t, which deletes it when t ends. Call it only
// after Available returns nil; it fails t on any error.
func NewPair(t testing.TB) *Pair {
	t.Helper()
	id := newID()
	prefix := freeSubnet(t)
	p := &Pair{
		A:      fmt.Sprintf("hyperfeed-%08x-a", id),
		B:      fmt.Sprintf("hyperfeed-%08x-b", id),
		AIface: fmt.Sprintf("hf%08xa", id),
		BIface: fmt.Sprintf("hf%08xb", id),
		AAddr:  prefix.Addr().Next(),
		BAddr:  prefix.Addr().Next().Next(),
	}
	must := func(args ...string) {
		t.Helper()
		if err := ip(args...); err != nil {
			t.Fatal(err)
		}
	}
	for _, ns := range []string{p.A, p.B} {
		must("netns", "add", ns)
		t.Cleanup(func() {
			// Processes a test left running keep the namespace alive
			// after this, but it is unreachable and goes when they end.
			if err := ip("netns", "del", ns); err != nil {
				t.Error(err)
			}
		})
	}
	// Created directly inside the namespaces, so the names never meet the
	// host's interfaces.
	must("link", "add", p.AIface, "netns", p.A, "type", "veth", "peer", "name", p.BIface, "netns", p.B)
	for _, end := range []struct {
		ns, iface string
		addr      netip.Addr
	}{{p.A, p.AIface, p.AAddr}, {p.B, p.BIface, p.BAddr}} {
		must("-n", end.ns, "link", "set", "lo", "up")
		must("-n", end.ns, "addr", "add", netip.PrefixFrom(end.addr, prefix.Bits()).String(), "dev", end.iface)
		must("-n", end.ns, "link", "set", end.iface, "multicast", "on", "up")
		must("-n", end.ns, "route", "add", "224.0.0.0/4", "dev", end.iface)
	}
	for _, end := range [][2]string{{p.A, p.AIface}, {p.B, p.BIface}} {
		waitUp(t, end[0], end[1])
	}
	return p
}

// Command returns a command that runs program name with args inside
// namespace ns, which is p.A or p.B. The program inherits the caller's
// environment, unless the caller sets the command's Env.
func (p *Pair) Command(ns string, name string, args ...string) *exec.Cmd {
	if ns != p.A && ns != p.B {
		panic(fmt.Sprintf("netns: %q is not a namespace of this pair (%s, %s)", ns, p.A, p.B))
	}
	return exec.Command("ip", append([]string{"netns", "exec", ns, name}, args...)...)
}

func ip(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("netns: ip %v: %w: %s", args, err, bytes.TrimSpace(out))
	}
	return nil
}

// newID names a pair: random, so that pairs of concurrent test processes
// do not collide, and short, since interface names hold 15 bytes.
func newID() uint32 {
	var b [4]byte
	rand.Read(b[:])
	return binary.LittleEndian.Uint32(b[:])
}

var (
	subnetMu   sync.Mutex
	subnetUsed = map[netip.Prefix]bool{}
)

// freeSubnet picks a /24 in 10.213.0.0/16 that no interface of the host is
// on, and that no other pair of this process has, so that an address seen
// in a test can only be the pair's.
func freeSubnet(t testing.TB) netip.Prefix {
	t.Helper()
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatalf("netns: list host addresses: %v", err)
	}
	subnetMu.Lock()
	defer subnetMu.Unlock()
	start := int(newID() % 256)
	for i := range 256 {
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 213, byte(start + i), 0}), 24)
		if subnetUsed[p] || hostUses(addrs, p) {
			continue
		}
		subnetUsed[p] = true
		t.Cleanup(func() {
			subnetMu.Lock()
			delete(subnetUsed, p)
			subnetMu.Unlock()
		})
		return p
	}
	t.Fatal("netns: no free /24 left in 10.213.0.0/16")
	return netip.Prefix{}
}

func hostUses(addrs []net.Addr, p netip.Prefix) bool {
	for _, a := range addrs {
		n, ok := a.(*net.IPNet)
		if !ok {
			continue
		}
		hp, err := netip.ParsePrefix(n.String())
		if err == nil && hp.Addr().Is4() && hp.Overlaps(p) {
			return true
		}
	}
	return false
}

// waitUp polls until the veth reports carrier, so that a test's first
// packets are not dropped by a link still coming up.
func waitUp(t testing.TB, ns, iface string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		out, err := exec.Command("ip", "-n", ns, "-j", "link", "show", "dev", iface).Output()
		if err != nil {
			t.Fatalf("netns: ip -n %s link show %s: %v", ns, iface, err)
		}
		var links []struct {
			Operstate string `json:"operstate"`
		}
		if err := json.Unmarshal(out, &links); err != nil {
			t.Fatalf("netns: parse ip -j output %q: %v", out, err)
		}
		if len(links) == 1 && links[0].Operstate == "UP" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("netns: %s in %s not up after 5s: %s", iface, ns, out)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
