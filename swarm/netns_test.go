package swarm

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/hyperfeed/hyperfeed/feed"
	"github.com/hyperfeed/hyperfeed/internal/netns"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

// TestNetnsReplication runs two swarms as child processes in two network
// namespaces joined by a veth cable: a writer in one, a replica in the
// other. They know nothing of each other but the feed key; mDNS, pinned to
// the veth, brings them together, and the replica downloads and verifies
// the whole feed. Namespaces keep the multicast off every network the
// machine is on.

const (
	netnsChildEnv = "HYPERFEED_NETNS_CHILD" // "writer" or "reader"
	netnsBlocks   = 500
)

// netnsSecret is the writer's key, from a fixed seed, so that the parent
// can compute the head the replica must end with.
func netnsSecret() ed25519.PrivateKey {
	return ed25519.NewKeyFromSeed(bytes.Repeat([]byte("hyperfeed netns!"), 2))
}

func netnsBlockData() [][]byte {
	bs := make([][]byte, netnsBlocks)
	for i := range bs {
		bs[i] = fmt.Appendf(nil, "netns block %d", i)
	}
	return bs
}

func netnsHeadLine(word string, h feed.Head) string {
	return fmt.Sprintf("%s %d %s", word, h.Length, hex.EncodeToString(h.TreeHash[:]))
}

// TestNetnsChild is one node of TestNetnsReplication, run by it inside a
// network namespace. The writer appends the blocks, replicates the feed and
// prints "HEAD <length> <tree hash>" and "READY"; the reader downloads the
// feed, verifies it and prints "DONE <length> <tree hash>". Both then run
// until their standard input closes, close everything, and print "NO
// GOROUTINES LEFT" if nothing is left running. Failure shows in the exit
// status.
func TestNetnsChild(t *testing.T) {
	role := os.Getenv(netnsChildEnv)
	if role == "" {
		t.Skip("a node of TestNetnsReplication, run by it inside a network namespace")
	}
	env := func(name string) string {
		v := os.Getenv("HYPERFEED_NETNS_" + name)
		if v == "" {
			t.Fatalf("HYPERFEED_NETNS_%s not set", name)
		}
		return v
	}
	log := slog.New(slog.NewTextHandler(os.Stdout, &slog.HandlerOptions{Level: slog.LevelDebug})).With("node", role)
	kp, err := GenerateKeyPair()
	require.NoError(t, err)
	m, err := NewMDNS(MDNSConfig{
		Interfaces:     []string{env("IFACE")},
		Self:           kp.Public,
		Instance:       role,
		BrowseInterval: time.Second,
		Logger:         log,
	})
	require.NoError(t, err)

	var f *feed.Feed
	switch role {
	case "writer":
		f, err = feed.Open(t.TempDir(), &feed.Options{SecretKey: netnsSecret()})
		require.NoError(t, err)
		_, err = f.Append(netnsBlockData()...)
		require.NoError(t, err)
	case "reader":
		var key feed.Key
		require.NoError(t, key.UnmarshalText([]byte(env("KEY"))))
		f, err = feed.Open(t.TempDir(), &feed.Options{Key: key})
		require.NoError(t, err)
	default:
		t.Fatalf("unknown role %q", role)
	}
	fclosed := false
	t.Cleanup(func() {
		if !fclosed {
			f.Close()
		}
	})

	sw, err := New(nil, Config{
		KeyPair:      kp,
		ListenAddr:   net.JoinHostPort(env("ADDR"), "0"),
		Discovery:    []Discovery{m},
		ReconnectMin: 50 * time.Millisecond,
		Logger:       log,
	})
	if err != nil {
		m.Close()
	}
	require.NoError(t, err)
	t.Cleanup(func() { sw.Close() }) // for a failure below; closing twice is fine

	if role == "writer" {
		_, err := sw.Replicate(f)
		require.NoError(t, err)
		fmt.Println(netnsHeadLine("HEAD", f.Head()))
		fmt.Println("READY")
	} else {
		start := time.Now()
		d, err := sw.Download(f, 0, netnsBlocks)
		require.NoError(t, err)
		ctx, cancel := context.WithTimeout(context.Background(), 25*time.Second)
		defer cancel()
		require.NoError(t, d.Wait(ctx))
		require.NoError(t, f.Verify(ctx))
		require.Equal(t, uint64(netnsBlocks), f.Downloaded())
		log.Info("downloaded", "took", time.Since(start))
		fmt.Println(netnsHeadLine("DONE", f.Head()))
	}

	// Run until the parent is done with this node.
	io.Copy(io.Discard, os.Stdin)
	require.NoError(t, sw.Close())
	require.NoError(t, f.Close())
	fclosed = true
	fmt.Println("CLOSED")
	require.NoError(t, goleak.Find())
	fmt.Println("NO GOROUTINES LEFT")
}

type netnsChild struct {
	name   string
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	out    []string
	ended  bool
	waited bool
}

type netnsLine struct {
	c    *netnsChild
	text string
	eof  bool
}

func TestNetnsReplication(t *testing.T) {
	if err := netns.Available(); err != nil {
		t.Skipf("replication over mDNS needs two network namespaces here, and cannot have them: %v", err)
	}
	defer goleak.VerifyNone(t)
	exe, err := os.Executable()
	require.NoError(t, err)

	// The head the replica must end with, computed here from the same seed
	// and blocks.
	w, err := feed.Open(t.TempDir(), &feed.Options{SecretKey: netnsSecret()})
	require.NoError(t, err)
	_, err = w.Append(netnsBlockData()...)
	require.NoError(t, err)
	want := w.Head()
	require.NoError(t, w.Close())

	p := netns.NewPair(t)
	lines := make(chan netnsLine)
	var children []*netnsChild
	start := func(role, ns, iface string, addr string) *netnsChild {
		cmd := p.Command(ns, exe, "-test.run=^TestNetnsChild$", "-test.v", "-test.count=1", "-test.timeout=60s")
		cmd.Env = append(os.Environ(),
			netnsChildEnv+"="+role,
			"HYPERFEED_NETNS_IFACE="+iface,
			"HYPERFEED_NETNS_ADDR="+addr,
			"HYPERFEED_NETNS_KEY="+feed.KeyOf(netnsSecret()).String(),
		)
		out, err := cmd.StdoutPipe()
		require.NoError(t, err)
		cmd.Stderr = cmd.Stdout // the same pipe, so exec copies nothing
		stdin, err := cmd.StdinPipe()
		require.NoError(t, err)
		require.NoError(t, cmd.Start())
		c := &netnsChild{name: role, cmd: cmd, stdin: stdin}
		children = append(children, c)
		go func() {
			sc := bufio.NewScanner(out)
			sc.Buffer(nil, 1<<20)
			for sc.Scan() {
				lines <- netnsLine{c: c, text: sc.Text()}
			}
			lines <- netnsLine{c: c, eof: true}
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
	take := func(l netnsLine) netnsLine {
		if l.eof {
			l.c.ended = true
		} else {
			l.c.out = append(l.c.out, l.text)
		}
		return l
	}
	deadline := time.NewTimer(30 * time.Second)
	defer deadline.Stop()
	// next returns the next line of any child, failing the test at the
	// deadline.
	next := func() netnsLine {
		select {
		case l := <-lines:
			return take(l)
		case <-deadline.C:
			t.Fatalf("no replication between the namespaces in 30 s\n%s", dump())
			return netnsLine{}
		}
	}
	// finish ends the children, politely (closing their input, so that they
	// close and check for leaks) or not, and reaps them; every line is read,
	// so that the goroutines reading them end.
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
					take(l)
				case <-timeout.C:
					t.Errorf("nodes did not end in 20 s; killing them\n%s", dump())
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

	begin := time.Now()
	a := start("writer", p.A, p.AIface, p.AAddr.String())
	var head string
	for l := next(); l.c != a || l.text != "READY"; l = next() {
		require.False(t, l.eof, "the writer ended early\n%s", dump())
		if strings.HasPrefix(l.text, "HEAD ") {
			head = l.text
		}
	}
	require.Equal(t, netnsHeadLine("HEAD", want), head, "the writer's head\n%s", dump())
	ready := time.Now()
	b := start("reader", p.B, p.BIface, p.BAddr.String())
	var done string
	for done == "" {
		l := next()
		require.False(t, l.eof, "node %s ended early\n%s", l.c.name, dump())
		if l.c == b && strings.HasPrefix(l.text, "DONE ") {
			done = l.text
		}
	}
	t.Logf("the writer was ready %v after start; the replica found it, downloaded %d blocks and verified them %v later",
		ready.Sub(begin).Round(time.Millisecond), netnsBlocks, time.Since(ready).Round(time.Millisecond))
	require.Equal(t, netnsHeadLine("DONE", want), done, "the replica's head\n%s", dump())
	// Nothing but mDNS told the replica where the writer is.
	found := false
	for _, l := range b.out {
		found = found || strings.Contains(l, `msg="mdns: found"`) && strings.Contains(l, "addr="+p.AAddr.String()+":")
	}
	require.True(t, found, "the replica did not log finding the writer by mDNS\n%s", dump())

	finish(false)
	for _, c := range children {
		require.Contains(t, c.out, "NO GOROUTINES LEFT", "node %s\n%s", c.name, dump())
	}
	t.Logf("nodes closed cleanly %v after start", time.Since(begin).Round(time.Millisecond))
}
