// Command demo shows users and sessions on one machine, with nothing to set
// up: two users, alice and bob, each start a session on a node of their own
// (StartUserSession), find each other by alias (FindUserSession), show each
// other a session token, and bob logs out, which alice sees at once. Each
// node keeps its data in its own directory under a temporary one, removed
// at the end.
//
//	go run ./examples/demo
//
// The nodes talk over loopback only. They find each other by mDNS on the
// loopback interface where it can multicast and a trial browse there finds
// a peer in time; elsewhere bob is given alice's address. (Linux's lo
// cannot multicast unless told to; where it can, the trial finds nothing
// today, since mDNS as the swarm uses it announces and dials no loopback
// address.) The demo never multicasts on any other interface. For two machines, see examples/alice and examples/bob; the
// feed demo that used to open the README is examples/feeddemo.
package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log"
	"maps"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hyperfeed/hyperfeed/swarm"
	"github.com/hyperfeed/hyperfeed/usersession"
)

func main() {
	log.SetFlags(0)
	if err := run(context.Background(), os.Stdout); err != nil {
		log.Fatal("demo: ", err)
	}
}

const (
	// demoTimeout bounds the whole demo, so that it fails rather than hangs
	// where the nodes cannot reach each other.
	demoTimeout = time.Minute
	// heartbeat is short so that a first start settles quickly: a node
	// that finds no peer within one heartbeat claims its alias.
	heartbeat = 250 * time.Millisecond
	// probeTimeout bounds the trial mDNS browse on loopback.
	probeTimeout = 2 * time.Second
)

func run(ctx context.Context, out io.Writer) error {
	ctx, cancel := context.WithTimeout(ctx, demoTimeout)
	defer cancel()
	tmp, err := os.MkdirTemp("", "hyperfeed-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	fmt.Fprintf(out, "two users on this machine, with their data in %s\n", tmp)

	// A topic of its own, so that the demo's nodes meet nobody else's.
	var nonce [8]byte
	rand.Read(nonce[:])
	base := usersession.Config{
		Topic:             "hyperfeed-demo-" + hex.EncodeToString(nonce[:]),
		ListenAddr:        "127.0.0.1:0",
		HeartbeatInterval: heartbeat,
	}
	lo, why := loopbackMDNS(ctx)
	if lo != "" {
		base.Interfaces = []string{lo}
		fmt.Fprintf(out, "discovery: mDNS on %s, the loopback interface only\n", lo)
	} else {
		base.NoMDNS = true
		fmt.Fprintf(out, "discovery: static peers on 127.0.0.1 (no mDNS: %s)\n", why)
	}

	start := func(alias string, peers ...string) (*usersession.Node, error) {
		cfg := base
		cfg.Dir = filepath.Join(tmp, alias)
		cfg.Peers = peers
		// Port 0 publishes the port the node listens on.
		n, err := usersession.StartUserSession(ctx, usersession.UserSession{Alias: alias, IP: "127.0.0.1"}, cfg)
		if err != nil {
			return nil, fmt.Errorf("start %s: %w", alias, err)
		}
		fmt.Fprintf(out, "%s started at %s\n", alias, addr(n.Self()))
		return n, nil
	}
	alice, err := start("alice")
	if err != nil {
		return err
	}
	defer alice.Close()
	var peers []string
	if base.NoMDNS {
		peers = []string{addr(alice.Self())}
	}
	bob, err := start("bob", peers...)
	if err != nil {
		return err
	}
	defer bob.Close()

	for _, p := range []struct {
		n     *usersession.Node
		who   string
		other string
	}{{alice, "alice", "bob"}, {bob, "bob", "alice"}} {
		if err := await(ctx, p.n, p.who+" finds "+p.other, func(n *usersession.Node) bool {
			s, err := n.FindUserSession(p.other)
			return err == nil && s.Online
		}); err != nil {
			return err
		}
		s, _ := p.n.FindUserSession(p.other)
		fmt.Fprintf(out, "%s found %s at %s\n", p.who, p.other, addr(s))
	}
	fmt.Fprintf(out, "alice's directory: %s\n", users(alice))

	// A token proves a session to whoever holds the directory.
	tok, err := bob.IssueToken(time.Minute)
	if err != nil {
		return err
	}
	t, err := alice.VerifyToken(tok)
	if err != nil {
		return fmt.Errorf("alice verifies bob's token: %w", err)
	}
	fmt.Fprintf(out, "bob shows alice a token (%s…); alice verifies it: %s, identity %s…\n", tok[:16], t.Name, t.Identity.String()[:16])

	if err := bob.Logout(ctx); err != nil {
		return fmt.Errorf("bob logs out: %w", err)
	}
	fmt.Fprintln(out, "bob logged out")
	if err := await(ctx, alice, "alice sees bob offline", func(n *usersession.Node) bool {
		s, err := n.FindUserSession("bob")
		return err == nil && !s.Online
	}); err != nil {
		return err
	}
	fmt.Fprintf(out, "alice sees bob offline: %s\n", users(alice))
	if _, err := alice.VerifyToken(tok); !errors.Is(err, usersession.ErrTokenRevoked) {
		return fmt.Errorf("bob's token after his logout: got %v, want %v", err, usersession.ErrTokenRevoked)
	}
	fmt.Fprintln(out, "bob's token is refused now: his logout revoked it")

	if err := alice.Logout(ctx); err != nil {
		return fmt.Errorf("alice logs out: %w", err)
	}
	fmt.Fprintln(out, "alice logged out; done")
	return nil
}

// await returns once cond holds for n, looking again after every change n
// reports, or fails when ctx ends.
func await(ctx context.Context, n *usersession.Node, what string, cond func(*usersession.Node) bool) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	events := n.Watch(ctx) // before the first look, so that no change slips between
	for !cond(n) {
		select {
		case _, ok := <-events:
			if !ok {
				return fmt.Errorf("%s: the node stopped", what)
			}
		case <-ctx.Done():
			return fmt.Errorf("%s: %w", what, ctx.Err())
		}
	}
	return nil
}

// users lists n's directory: every name, online or not.
func users(n *usersession.Node) string {
	us := n.GetUsers()
	var parts []string
	for _, name := range slices.Sorted(maps.Keys(us)) {
		s := us[name]
		if s.Online {
			parts = append(parts, fmt.Sprintf("%s (online at %s)", name, addr(s)))
		} else {
			parts = append(parts, name+" (offline)")
		}
	}
	return strings.Join(parts, ", ")
}

func addr(s usersession.UserSession) string {
	return net.JoinHostPort(s.IP, strconv.Itoa(s.Port))
}

// loopbackMDNS returns the name of the loopback interface if mDNS can be
// used there, and kept there, else "" and why not. It requires the
// interface to be up and multicast-capable, and a trial: two browsers on
// it, under a topic of their own, must find each other within probeTimeout.
func loopbackMDNS(ctx context.Context) (name, why string) {
	ifaces, err := net.Interfaces()
	if err != nil {
		return "", fmt.Sprintf("cannot list interfaces: %v", err)
	}
	i := slices.IndexFunc(ifaces, func(ifi net.Interface) bool {
		return ifi.Flags&net.FlagLoopback != 0 && ifi.Flags&net.FlagUp != 0
	})
	if i < 0 {
		return "", "no loopback interface is up"
	}
	lo := ifaces[i]
	if lo.Flags&net.FlagMulticast == 0 {
		return "", lo.Name + " cannot multicast"
	}
	if runtime.GOOS == "linux" {
		if dev, err := mdnsListenerElsewhere(lo.Name); err != nil {
			return "", err.Error()
		} else if dev != "" {
			return "", "this machine listens for mDNS on " + dev + " too, and on Linux the demo's responder would hear and answer it there"
		}
	}
	if err := probeMDNS(ctx, lo.Name); err != nil {
		return "", err.Error()
	}
	return lo.Name, ""
}

// mdnsListenerElsewhere returns a network device other than lo on which
// some program of this machine has joined an mDNS group, or "". Linux
// hands a multicast datagram to every socket bound to its port, whichever
// interface the socket joined the group on (IP_MULTICAST_ALL), and the
// mDNS responder answers a query on the interface it came in on: with such
// a listener, a responder pinned to lo would still answer the network.
func mdnsListenerElsewhere(lo string) (string, error) {
	for _, file := range []string{"/proc/net/igmp", "/proc/net/igmp6"} {
		f, err := os.Open(file)
		if errors.Is(err, os.ErrNotExist) {
			continue // no IPv4, or no IPv6
		}
		if err != nil {
			return "", fmt.Errorf("cannot tell who listens for mDNS: %v", err)
		}
		dev, err := scanGroups(f, file == "/proc/net/igmp6", lo)
		f.Close()
		if err != nil || dev != "" {
			return dev, err
		}
	}
	return "", nil
}

// scanGroups reads /proc/net/igmp (or igmp6) and returns a device other
// than lo that has joined 224.0.0.251 (or ff02::fb). In igmp, a device's
// line starts with its index and its groups' lines with a tab, each group
// in host byte order; igmp6 has a line per device and group.
func scanGroups(r io.Reader, v6 bool, lo string) (string, error) {
	sc := bufio.NewScanner(r)
	dev := ""
	for sc.Scan() {
		line := sc.Text()
		fields := strings.Fields(line)
		if len(fields) < 3 {
			continue
		}
		var group string
		if v6 {
			dev, group = fields[1], fields[2]
		} else if strings.HasPrefix(line, "\t") {
			group = fields[0]
		} else {
			dev = strings.TrimSuffix(fields[1], ":")
			continue
		}
		switch strings.ToLower(group) {
		case "fb0000e0", "e00000fb", "ff0200000000000000000000000000fb":
			if dev != lo {
				return dev, nil
			}
		}
	}
	if err := sc.Err(); err != nil {
		return "", fmt.Errorf("cannot tell who listens for mDNS: %v", err)
	}
	return "", nil
}

// probeMDNS runs two mDNS browsers on iface under a fresh topic and waits
// for one to find the other.
func probeMDNS(ctx context.Context, iface string) error {
	var topic swarm.Topic
	rand.Read(topic[:])
	found := make(chan struct{}, 1)
	var ms []*swarm.MDNS
	defer func() {
		for _, m := range ms {
			m.Close()
		}
	}()
	for i := range 2 {
		kp, err := swarm.GenerateKeyPair()
		if err != nil {
			return err
		}
		m, err := swarm.NewMDNS(swarm.MDNSConfig{Interfaces: []string{iface}, Self: kp.Public, Instance: "hyperfeed-demo-probe"})
		if err != nil {
			return fmt.Errorf("mDNS on %s: %v", iface, err)
		}
		ms = append(ms, m)
		report := func(swarm.Candidate) {}
		if i == 0 {
			report = func(swarm.Candidate) {
				select {
				case found <- struct{}{}:
				default:
				}
			}
		}
		// The port is announced but never dialled: only the finding counts.
		if err := m.Join(topic, 9, report); err != nil {
			return fmt.Errorf("mDNS on %s: %v", iface, err)
		}
	}
	t := time.NewTimer(probeTimeout)
	defer t.Stop()
	select {
	case <-found:
		return nil
	case <-t.C:
		return fmt.Errorf("a trial browse on %s found nothing in %v", iface, probeTimeout)
	case <-ctx.Done():
		return ctx.Err()
	}
}
