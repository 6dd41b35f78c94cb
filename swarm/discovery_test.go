package swarm

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hyperfeed/hyperfeed/internal/netns"
	"github.com/libp2p/zeroconf/v2"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"golang.org/x/crypto/blake2b"
)

// These tests build no TestMain of their own (the package has one); each
// checks for leaks itself.

func discTopic(t testing.TB) Topic {
	var tp Topic
	_, err := rand.Read(tp[:])
	require.NoError(t, err)
	return tp
}

func discKey(t testing.TB) PeerKey {
	var k PeerKey
	_, err := rand.Read(k[:])
	require.NoError(t, err)
	return k
}

// discRecorder collects what a Discovery reports for one topic.
type discRecorder struct {
	mu    sync.Mutex
	found []Candidate
}

func (r *discRecorder) report(c Candidate) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.found = append(r.found, c)
}

func (r *discRecorder) addrs() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, c := range r.found {
		out = append(out, c.Addr.String())
	}
	return out
}

func (r *discRecorder) candidates() []Candidate {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.found)
}

func TestStaticReportsEveryAddressUnderEveryTopic(t *testing.T) {
	defer goleak.VerifyNone(t)
	s, err := NewStatic("127.0.0.1:7000", "[::1]:7001", "127.0.0.1:7000", "[::ffff:127.0.0.3]:7003")
	require.NoError(t, err)
	var d Discovery = s

	var r1, r2 discRecorder
	t1, t2 := discTopic(t), discTopic(t)
	require.NoError(t, d.Join(t1, 9000, r1.report))
	require.NoError(t, d.Join(t2, 9000, r2.report))
	want := []string{"127.0.0.1:7000", "[::1]:7001", "127.0.0.3:7003"}
	require.Equal(t, want, r1.addrs(), "duplicates dropped, v4-mapped unmapped")
	require.Equal(t, want, r2.addrs())
	for _, c := range r1.candidates() {
		require.True(t, c.Key.IsZero(), "Static cannot know keys")
	}

	require.NoError(t, d.Join(t1, 9000, r1.report), "joining twice")
	require.Equal(t, want, r1.addrs(), "joining twice reports nothing more")

	require.NoError(t, s.Add("127.0.0.2:7002"))
	want = append(want, "127.0.0.2:7002")
	require.Equal(t, want, r1.addrs())
	require.Equal(t, want, r2.addrs())
	require.NoError(t, s.Add("127.0.0.2:7002"))
	require.Equal(t, want, r1.addrs(), "adding a known address reports nothing")

	require.NoError(t, d.Leave(t1))
	require.NoError(t, s.Add("127.0.0.4:7004"))
	require.Equal(t, want, r1.addrs(), "nothing after Leave")
	require.Equal(t, append(want, "127.0.0.4:7004"), r2.addrs())

	var r3 discRecorder
	require.NoError(t, d.Join(t1, 9000, r3.report), "rejoining")
	require.Equal(t, append(want, "127.0.0.4:7004"), r3.addrs())

	require.NoError(t, d.Close())
	require.ErrorIs(t, d.Join(discTopic(t), 9000, r3.report), ErrDiscoveryClosed)
	require.ErrorIs(t, s.Add("127.0.0.5:7005"), ErrDiscoveryClosed)
	require.NoError(t, d.Leave(t2))
	require.NoError(t, d.Close(), "closing twice")
}

func TestStaticBadAddress(t *testing.T) {
	for _, addr := range []string{
		"",
		"127.0.0.1",
		"127.0.0.1:",
		"127.0.0.1:0",
		"127.0.0.1:65536",
		"127.0.0.1:-1",
		"127.0.0.1:http",
		":7000",
		"[::1:7000",
		"::1:7000",
		"0.0.0.0:7000",
		"[::]:7000",
		"224.0.0.251:7000",
		"[ff02::fb]:7000",
	} {
		_, err := NewStatic("127.0.0.1:7000", addr)
		require.Error(t, err, "NewStatic(%q)", addr)
		require.Contains(t, err.Error(), "swarm: static address")

		s, err := NewStatic()
		require.NoError(t, err)
		require.Error(t, s.Add(addr), "Add(%q)", addr)
	}
	_, err := NewStatic("127.0.0.1:7000")
	require.NoError(t, err)
}

// discOfflineResolver answers from the hosts file and fails every DNS query
// without sending it, so that tests resolve names without a network.
func discOfflineResolver(dialled *int) *net.Resolver {
	var mu sync.Mutex
	return &net.Resolver{
		PreferGo: true,
		Dial: func(ctx context.Context, network, address string) (net.Conn, error) {
			mu.Lock()
			*dialled++
			mu.Unlock()
			return nil, errors.New("test: no DNS here")
		},
	}
}

func TestStaticResolvesNames(t *testing.T) {
	var dialled int
	r := discOfflineResolver(&dialled)
	hosts, err := os.ReadFile("/etc/hosts")
	if err != nil || !bytes.Contains(hosts, []byte("localhost")) {
		t.Skip("no /etc/hosts entry for localhost, and DNS is off limits in tests")
	}
	s, err := newStatic(r, "localhost:7000")
	require.NoError(t, err)
	var rec discRecorder
	require.NoError(t, s.Join(discTopic(t), 9000, rec.report))
	require.NotEmpty(t, rec.addrs())
	for _, c := range rec.candidates() {
		require.True(t, c.Addr.Addr().IsLoopback(), "localhost resolved to %v", c.Addr)
		require.Equal(t, uint16(7000), c.Addr.Port())
	}

	_, err = newStatic(r, "no-such-host.invalid:7000")
	require.Error(t, err, "a name that resolves to nothing")
	require.Contains(t, err.Error(), "no-such-host.invalid")
	require.Error(t, s.Add("no-such-host.invalid:7000"))
	require.NotZero(t, dialled, "the lookup went to the (fake) DNS")
}

func TestMDNSTXT(t *testing.T) {
	topic, self := discTopic(t), discKey(t)
	h := mdnsTopicHash(topic)
	txt := mdnsTXT(h, self)
	require.Len(t, txt, 2, "only the topic hash and the key")
	for _, s := range txt {
		require.Less(t, len(s), 255, "a TXT string holds at most 255 bytes")
	}

	mac, err := blake2b.New256([]byte("hyperfeed/mdns/v1"))
	require.NoError(t, err)
	mac.Write(topic[:])
	require.Equal(t, "t="+hex.EncodeToString(mac.Sum(nil)[:16]), txt[0])
	require.Equal(t, "k="+hex.EncodeToString(self[:]), txt[1])

	all := strings.Join(txt, "")
	require.NotContains(t, all, topic.String(), "topic in clear")
	require.NotContains(t, all, hex.EncodeToString(topic[:8]), "part of the topic in clear")
	require.NotContains(t, strings.ToLower(all), strings.ToLower(hex.EncodeToString(topic[len(topic)-8:])))
	require.False(t, bytes.Contains([]byte(all), topic[:8]), "topic bytes in clear")

	require.Equal(t, []string{"t=" + h}, mdnsTXT(h, PeerKey{}), "no key announced when Self is zero")
	require.NotEqual(t, h, mdnsTopicHash(discTopic(t)))

	// The instance name is one DNS label: at most 63 bytes.
	m, err := NewMDNS(MDNSConfig{Instance: strings.Repeat("x", 32)})
	require.NoError(t, err)
	require.LessOrEqual(t, len(m.prefix+h[:12]), 63)
	require.NoError(t, m.Close())
}

func TestMDNSConfig(t *testing.T) {
	defer goleak.VerifyNone(t)
	_, err := NewMDNS(MDNSConfig{Interfaces: []string{"hf-no-such-if"}})
	require.ErrorContains(t, err, `interface "hf-no-such-if"`)

	ifaces, err := net.Interfaces()
	require.NoError(t, err)
	for _, ifi := range ifaces {
		if ifi.Flags&net.FlagMulticast == 0 {
			_, err := NewMDNS(MDNSConfig{Interfaces: []string{ifi.Name}})
			require.ErrorContains(t, err, "cannot multicast")
			break
		}
	}

	for _, inst := range []string{"a.b", "a b", "é", strings.Repeat("x", 33)} {
		_, err := NewMDNS(MDNSConfig{Instance: inst})
		require.Error(t, err, "Instance %q", inst)
	}
	_, err = NewMDNS(MDNSConfig{BrowseInterval: time.Millisecond})
	require.Error(t, err)

	// Nothing below touches the network: Join fails before announcing.
	m, err := NewMDNS(MDNSConfig{})
	require.NoError(t, err)
	require.Error(t, m.Join(discTopic(t), 0, func(Candidate) {}), "port 0")
	require.Error(t, m.Join(discTopic(t), 7000, nil), "nil found")
	require.NoError(t, m.Leave(discTopic(t)), "leaving a topic never joined")
	require.NoError(t, m.Close())
	require.ErrorIs(t, m.Join(discTopic(t), 7000, func(Candidate) {}), ErrDiscoveryClosed)
	require.NoError(t, m.Close(), "closing twice")
}

// TestMDNSEntryFilter feeds announcements to the filter directly: which are
// reported, under which key, with which addresses.
func TestMDNSEntryFilter(t *testing.T) {
	self, peer := discKey(t), discKey(t)
	m, err := NewMDNS(MDNSConfig{Self: self})
	require.NoError(t, err)
	joined, other := discTopic(t), discTopic(t)
	var rec discRecorder
	h := mdnsTopicHash(joined)
	// Joined without announcing: the test has no network to announce on.
	m.topics[h] = &mdnsTopic{found: rec.report}
	defer delete(m.topics, h)

	entry := func(instance string, port int, txt []string, ips ...string) *zeroconf.ServiceEntry {
		e := &zeroconf.ServiceEntry{ServiceRecord: zeroconf.ServiceRecord{Instance: instance, Service: mdnsService, Domain: mdnsDomain}}
		e.Port = port
		e.Text = txt
		for _, s := range ips {
			ip := net.ParseIP(s)
			if ip.To4() != nil {
				e.AddrIPv4 = append(e.AddrIPv4, ip)
			} else {
				e.AddrIPv6 = append(e.AddrIPv6, ip)
			}
		}
		return e
	}
	seen := make(map[mdnsSeen]bool)
	good := entry("peer-1", 7000, mdnsTXT(h, peer),
		"192.168.1.7", "fd00::7", "fe80::7", "127.0.0.1", "::1", "192.168.1.7", "::", "ff02::fb")
	m.handleEntry(good, seen)
	m.handleEntry(good, seen) // again within the browse
	require.Equal(t, []Candidate{
		{Addr: netip.MustParseAddrPort("192.168.1.7:7000"), Key: peer},
		{Addr: netip.MustParseAddrPort("[fd00::7]:7000"), Key: peer},
	}, rec.candidates(), "usable addresses once each, link-local IPv6 skipped")

	for name, e := range map[string]*zeroconf.ServiceEntry{
		"other topic":  entry("peer-2", 7000, mdnsTXT(mdnsTopicHash(other), peer), "192.168.1.8"),
		"own key":      entry("peer-3", 7000, mdnsTXT(h, self), "192.168.1.9"),
		"own instance": entry(m.prefix+h[:12], 7000, mdnsTXT(h, PeerKey{}), "192.168.1.10"),
		"bad key":      entry("peer-4", 7000, []string{"t=" + h, "k=xyz"}, "192.168.1.11"),
		"no topic":     entry("peer-5", 7000, []string{"k=" + peer.String()}, "192.168.1.12"),
		"no address":   entry("peer-6", 7000, mdnsTXT(h, peer), "fe80::1"),
		"port 0":       entry("peer-7", 0, mdnsTXT(h, peer), "192.168.1.13"),
	} {
		m.handleEntry(e, seen)
		require.Len(t, rec.candidates(), 2, name)
	}

	// A key is optional, and a fresh browse reports again.
	m.handleEntry(entry("peer-8", 7001, []string{"t=" + h, "x=ignored"}, "192.168.1.14"), seen)
	require.Equal(t, Candidate{Addr: netip.MustParseAddrPort("192.168.1.14:7001")}, rec.candidates()[2])
	m.handleEntry(good, make(map[mdnsSeen]bool))
	require.Len(t, rec.candidates(), 5)
}

// The real mDNS test runs nodes as child processes in a pair of network
// namespaces joined by a veth cable, pinned to their veth: loopback cannot
// multicast, and the host's networks are off limits.
const discChildEnv = "HYPERFEED_MDNS_CHILD"

// TestMDNSChild is one mDNS node, run by TestMDNSNamespaces. It joins a
// topic, prints "READY", then "FOUND <addr> <key>" for each candidate and
// its debug log, until its standard input closes; then it closes and
// checks that no goroutine is left. Failure shows in its exit status.
func TestMDNSChild(t *testing.T) {
	if os.Getenv(discChildEnv) == "" {
		t.Skip("a node of TestMDNSNamespaces, run by it inside a network namespace")
	}
	env := func(name string) string {
		v := os.Getenv("HYPERFEED_MDNS_" + name)
		if v == "" {
			t.Fatalf("HYPERFEED_MDNS_%s not set", name)
		}
		return v
	}
	var topic Topic
	require.NoError(t, topic.UnmarshalText([]byte(env("TOPIC"))))
	var key PeerKey
	require.NoError(t, key.UnmarshalText([]byte(env("KEY"))))
	port, err := strconv.Atoi(env("PORT"))
	require.NoError(t, err)

	log := slog.New(slog.NewTextHandler(os.Stdout, &slog.HandlerOptions{Level: slog.LevelDebug}))
	m, err := NewMDNS(MDNSConfig{
		Interfaces:     []string{env("IFACE")},
		Self:           key,
		Instance:       env("NAME"),
		BrowseInterval: time.Second,
		Logger:         log,
	})
	require.NoError(t, err)
	found := make(chan Candidate, 256)
	report := func(c Candidate) {
		select {
		case found <- c:
		default: // reported again next browse
		}
	}
	require.NoError(t, m.Join(topic, port, report))
	// A second topic, left at once: Leave must release its server, and
	// the browse goes on for the first.
	extra := discTopic(t)
	require.NoError(t, m.Join(extra, port+1, report))
	require.NoError(t, m.Leave(extra))
	fmt.Println("READY")

	stdinClosed := make(chan struct{})
	go func() {
		io.Copy(io.Discard, os.Stdin)
		close(stdinClosed)
	}()
	for done := false; !done; {
		select {
		case c := <-found:
			fmt.Printf("FOUND %s %s\n", c.Addr, c.Key)
		case <-stdinClosed:
			done = true
		}
	}
	require.NoError(t, m.Close())
	fmt.Println("CLOSED")

	require.NoError(t, goleak.Find())
	fmt.Println("NO GOROUTINES LEFT")
}

type discChild struct {
	name   string
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	out    []string
	ended  bool
	waited bool
}

type discLine struct {
	c    *discChild
	text string
	eof  bool
}

func TestMDNSNamespaces(t *testing.T) {
	if err := netns.Available(); err != nil {
		t.Skipf("mDNS needs two network namespaces here, and cannot have them: %v", err)
	}
	defer goleak.VerifyNone(t)
	exe, err := os.Executable()
	require.NoError(t, err)
	p := netns.NewPair(t)
	topic, other := discTopic(t), discTopic(t)
	keyA, keyB, keyC := discKey(t), discKey(t), discKey(t)

	lines := make(chan discLine)
	var children []*discChild
	start := func(name, ns, iface string, topic Topic, key PeerKey, port int) *discChild {
		cmd := p.Command(ns, exe, "-test.run=^TestMDNSChild$", "-test.v", "-test.count=1", "-test.timeout=60s")
		cmd.Env = append(os.Environ(),
			discChildEnv+"=1",
			"HYPERFEED_MDNS_IFACE="+iface,
			"HYPERFEED_MDNS_TOPIC="+topic.String(),
			"HYPERFEED_MDNS_KEY="+key.String(),
			"HYPERFEED_MDNS_PORT="+strconv.Itoa(port),
			"HYPERFEED_MDNS_NAME="+name,
		)
		out, err := cmd.StdoutPipe()
		require.NoError(t, err)
		cmd.Stderr = cmd.Stdout // the same pipe, so exec copies nothing
		stdin, err := cmd.StdinPipe()
		require.NoError(t, err)
		require.NoError(t, cmd.Start())
		c := &discChild{name: name, cmd: cmd, stdin: stdin}
		children = append(children, c)
		go func() {
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				lines <- discLine{c: c, text: sc.Text()}
			}
			lines <- discLine{c: c, eof: true}
		}()
		return c
	}
	dump := func() string {
		var b strings.Builder
		for _, c := range children {
			fmt.Fprintf(&b, "--- %s:\n%s\n", c.name, strings.Join(c.out, "\n"))
		}
		return b.String()
	}
	// next returns the next line of any child, failing the test at the
	// deadline or if a child ends early.
	deadline := time.NewTimer(20 * time.Second)
	defer deadline.Stop()
	next := func() discLine {
		select {
		case l := <-lines:
			if l.eof {
				l.c.ended = true
			} else {
				l.c.out = append(l.c.out, l.text)
			}
			return l
		case <-deadline.C:
			t.Fatalf("mDNS nodes did not find each other in 20s\n%s", dump())
			return discLine{}
		}
	}
	// finish ends the children: politely (closing their input, so they
	// close and check for leaks) or not, and reaps them.
	finish := func(kill bool) {
		for _, c := range children {
			if kill {
				c.cmd.Process.Kill()
			} else {
				c.stdin.Close()
			}
		}
		timeout := time.NewTimer(20 * time.Second)
		defer timeout.Stop()
		for _, c := range children {
			for !c.ended {
				select {
				case l := <-lines:
					if l.eof {
						l.c.ended = true
					} else {
						l.c.out = append(l.c.out, l.text)
					}
				case <-timeout.C:
					t.Errorf("mDNS nodes did not end in 20s; killing them\n%s", dump())
					kill = true
					for _, c := range children {
						c.cmd.Process.Kill()
					}
				}
			}
		}
		for _, c := range children {
			if !c.waited {
				c.waited = true
				c.stdin.Close()
				err := c.cmd.Wait()
				if !kill {
					require.NoError(t, err, "node %s failed\n%s", c.name, dump())
				}
			}
		}
	}
	defer func() {
		if t.Failed() {
			finish(true)
		}
	}()

	// C announces another topic, from B's namespace. It starts first, so
	// that A and B hear it while they look for each other: they must log
	// that they ignored it, and never report it.
	c := start("nodeC", p.B, p.BIface, other, keyC, 41003)
	for l := next(); l.c != c || l.text != "READY"; l = next() {
		require.False(t, l.eof, "node C ended early\n%s", dump())
	}
	a := start("nodeA", p.A, p.AIface, topic, keyA, 41001)
	b := start("nodeB", p.B, p.BIface, topic, keyB, 41002)

	foundLine := func(addr netip.Addr, port int, key PeerKey) string {
		return fmt.Sprintf("FOUND %s %s", netip.AddrPortFrom(addr, uint16(port)), key)
	}
	// Each browse reports anew: A reports B once per browse, and three
	// reports show that browses follow one another (each 1s).
	want := map[*discChild]map[string]int{
		a: {foundLine(p.BAddr, 41002, keyB): 3, "ignored C": 1},
		b: {foundLine(p.AAddr, 41001, keyA): 1, "ignored C": 1},
	}
	begin := time.Now()
	var firstFound time.Duration
	for pending := 6; pending > 0; {
		l := next()
		require.False(t, l.eof, "node %s ended early\n%s", l.c.name, dump())
		text := l.text
		if strings.Contains(text, "instance=nodeC-") && strings.Contains(text, `reason="other topic"`) {
			text = "ignored C"
		}
		if strings.HasPrefix(text, "FOUND") && firstFound == 0 {
			firstFound = time.Since(begin)
		}
		if n := want[l.c][text]; n > 0 {
			want[l.c][text] = n - 1
			pending--
		}
	}
	t.Logf("first peer found in %v; A and B found each other, and saw and ignored C, in %v",
		firstFound.Round(time.Millisecond), time.Since(begin).Round(time.Millisecond))

	finish(false)
	for _, c := range children {
		require.Contains(t, c.out, "NO GOROUTINES LEFT", "node %s\n%s", c.name, dump())
		for _, l := range c.out {
			if c == a || c == b {
				require.NotContains(t, l, keyC.String(), "C's key reported by %s", c.name)
			} else {
				require.False(t, strings.HasPrefix(l, "FOUND"), "C found a peer under a topic nobody else joined: %s", l)
			}
		}
	}
	t.Logf("nodes closed cleanly %v after start", time.Since(begin).Round(time.Millisecond))
}
