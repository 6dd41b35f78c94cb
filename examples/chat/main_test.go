package main

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"

	"github.com/hyperfeed/hyperfeed/examples/internal/exectest"
	"go.uber.org/goleak"
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
	start := func(name, who string, port, peer int) *exectest.Proc {
		return exectest.Start(t, name, exec.Command(chatBin, "-alias", who, "-room", "lobby",
			"-no-mdns", "-ip", "127.0.0.1", "-listen", "127.0.0.1:"+strconv.Itoa(port),
			"-peer", "127.0.0.1:"+strconv.Itoa(peer), "-dir", filepath.Join(tmp, who), "-heartbeat", "200ms"))
	}
	alice := start("alice", "alice", aPort, bPort)
	alice.Expect(`^\* alice in lobby, at 127\.0\.0\.1:\d+$`)
	bob := start("bob", "bob", bPort, aPort)
	bob.Expect(`^\* bob in lobby, at 127\.0\.0\.1:\d+$`)
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
	bob.Expect(`^\* bob in lobby, at 127\.0\.0\.1:\d+$`)
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
