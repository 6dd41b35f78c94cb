package main

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/hyperfeed/hyperfeed/examples/internal/exectest"
)

var chatBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "hyperfeed-chat-test-")
	if err == nil {
		chatBin, err = exectest.Build(dir, "chat", ".")
	}
	if err != nil {
		os.RemoveAll(dir)
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	goleak.VerifyTestMain(m, goleak.Cleanup(func(int) { os.RemoveAll(dir) }))
}

// TestChat runs two chats on loopback, each told the other's node address
// (no mDNS): alice and bob see each other join, talk, see each other leave;
// bob comes back and gets what he missed; and, once both are gone, bob
// alone still reads the whole conversation, in order, from his disk.
func TestChat(t *testing.T) {
	tmp := t.TempDir()
	aPort, bPort := freePort(t), freePort(t)
	pids := map[*exectest.Proc]int{}
	start := func(name, who string, port, peer int) *exectest.Proc {
		cmd := exec.Command(chatBin, "-alias", who, "-room", "lobby",
			"-no-mdns", "-ip", "127.0.0.1", "-listen", "127.0.0.1:"+strconv.Itoa(port),
			"-peer", "127.0.0.1:"+strconv.Itoa(peer), "-dir", filepath.Join(tmp, who), "-heartbeat", "200ms")
		p := exectest.Start(t, name, cmd)
		pids[p] = cmd.Process.Pid
		return p
	}
	// The chat replicates its feeds on the session's swarm: it publishes
	// the session's own address, and listens on no other port.
	oneListener := func(p *exectest.Proc, port int) {
		t.Helper()
		require.Equal(t, strconv.Itoa(port), p.Expect(`^\* \w+ in lobby, at 127\.0\.0\.1:(\d+)$`)[1])
		if ports, ok := listeningPorts(t, pids[p]); ok {
			require.Equal(t, []int{port}, ports, "%s's listening TCP ports", p.Name)
		}
	}
	alice := start("alice", "alice", aPort, bPort)
	oneListener(alice, aPort)
	bob := start("bob", "bob", bPort, aPort)
	oneListener(bob, bPort)
	alice.Expect(`^\* bob joined$`)
	// Alice is in the room when bob arrives, or joins just after.
	if bob.Expect(`^\* in lobby: bob(, alice)?$`)[1] == "" {
		bob.Expect(`^\* alice joined$`)
	}

	alice.Send("hello bob")
	alice.Expect(`^\[lobby\] alice: hello bob$`)
	bob.Expect(`^\[lobby\] alice: hello bob$`)
	bob.Send("hi alice")
	bob.Expect(`^\[lobby\] bob: hi alice$`)
	alice.Expect(`^\[lobby\] bob: hi alice$`)
	bob.Send("/who")
	bob.Expect(`^\* in lobby: bob, alice$`)

	// Bob leaves (end of input) and misses a message.
	bob.CloseInput()
	bob.Expect(`^\* bob left lobby$`)
	bob.ExitOK()
	alice.Expect(`^\* bob left$`)
	alice.Send("are you there?")
	alice.Expect(`^\[lobby\] alice: are you there\?$`)

	// Back, bob reads the history and what he missed, in order.
	bob = start("bob again", "bob", bPort, aPort)
	bob.Expect(`^\[lobby\] alice: hello bob$`)
	bob.Expect(`^\[lobby\] bob: hi alice$`)
	bob.Expect(`^\[lobby\] alice: are you there\?$`)
	alice.Expect(`^\* bob joined$`)
	bob.Send("back")
	alice.Expect(`^\[lobby\] bob: back$`)

	alice.Send("/quit")
	alice.Expect(`^\* alice left lobby$`)
	alice.ExitOK()
	bob.Expect(`^\* alice left$`)
	bob.CloseInput()
	bob.ExitOK()

	// Bob alone, nobody online: the conversation is on his disk.
	bob = start("bob alone", "bob", bPort, aPort)
	oneListener(bob, bPort)
	for _, line := range []string{"alice: hello bob", "bob: hi alice", "alice: are you there?", "bob: back"} {
		bob.Expect(`^\[lobby\] ` + regexp.QuoteMeta(line) + `$`)
	}
	bob.Expect(`^\* in lobby: bob$`)
	bob.CloseInput()
	bob.ExitOK()
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// listeningPorts returns the TCP ports the process pid listens on, sorted,
// from Linux's /proc; false where there is no /proc to read.
func listeningPorts(t *testing.T, pid int) ([]int, bool) {
	t.Helper()
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Logf("cannot list the process's sockets, not checking them: %v", err)
		return nil, false
	}
	sockets := map[string]bool{} // inodes
	for _, fd := range fds {
		link, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name()))
		if inode, ok := strings.CutPrefix(link, "socket:["); err == nil && ok {
			sockets[strings.TrimSuffix(inode, "]")] = true
		}
	}
	var ports []int
	for _, table := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(table)
		if err != nil {
			continue // no IPv6, say
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			// sl local rem st tx:rx tr:when retrnsmt uid timeout inode
			f := strings.Fields(line)
			if len(f) < 10 || f[3] != "0A" || !sockets[f[9]] { // 0A: LISTEN
				continue
			}
			_, hexPort, _ := strings.Cut(f[1], ":")
			port, err := strconv.ParseUint(hexPort, 16, 16)
			require.NoError(t, err, "%s: %q", table, line)
			ports = append(ports, int(port))
		}
	}
	slices.Sort(ports)
	return ports, true
}
