package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// The tests drive the built binary as a user would. It is built once, with
// the race detector when the tests run with it, so that -race covers the
// command's own goroutines too.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "hyperfeed-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "hyperfeed")
	args := []string{"build", "-o", binary}
	if raceEnabled {
		args = append(args, "-race")
	}
	build := exec.Command("go", append(args, ".")...)
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		os.RemoveAll(dir)
		fmt.Fprintln(os.Stderr, "building hyperfeed:", err)
		os.Exit(1)
	}
	goleak.VerifyTestMain(m, goleak.Cleanup(func(int) { os.RemoveAll(dir) }))
}

// Every wait in these tests polls or reads with this deadline: generous,
// because the machine may be slow and shared, and the binary built -race.
const deadline = 2 * time.Minute

// loopback are the flags every networked invocation must carry: no mDNS,
// and a listener on loopback only. checkArgs enforces it.
var loopback = []string{"--no-mdns", "--listen", "127.0.0.1:0"}

// checkArgs fails the test before it sends a packet anywhere but loopback:
// mDNS must never run in tests.
func checkArgs(t *testing.T, args []string) {
	t.Helper()
	var name string // the command: the first operand (no global flag here takes a value but those below)
	for i := 0; i < len(args); i++ {
		if a := args[i]; !strings.HasPrefix(a, "-") {
			name = a
			break
		} else if a == "--listen" || a == "--peer" || a == "--iface" || a == "--key-file" || a == "--secret-file" {
			i++
		}
	}
	asksHelp := slices.ContainsFunc(args, func(a string) bool { return a == "-h" || a == "--help" || a == "-help" })
	networked := (name == "share" || name == "clone" || name == "users") && !asksHelp || slices.Contains(args, "--live")
	if !networked {
		return
	}
	if !slices.Contains(args, "--no-mdns") {
		t.Fatalf("networked command without --no-mdns: %q", args)
	}
	if i := slices.Index(args, "--listen"); i < 0 || i+1 >= len(args) || !strings.HasPrefix(args[i+1], "127.0.0.1:") {
		t.Fatalf("networked command not listening on loopback: %q", args)
	}
	for i, a := range args {
		if a == "--peer" && (i+1 >= len(args) || !strings.HasPrefix(args[i+1], "127.0.0.1:")) {
			t.Fatalf("peer not on loopback: %q", args)
		}
	}
}

// testEnv is the environment of a child: its own config and cache
// directories, so that the user's identity and the user's observer data
// are never read or created, and no secret from the environment of the test
// run.
func testEnv(t *testing.T, config string, extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "HYPERFEED_") && !strings.HasPrefix(kv, "XDG_CONFIG_HOME=") && !strings.HasPrefix(kv, "XDG_CACHE_HOME=") && !strings.HasPrefix(kv, "HOME=") {
			env = append(env, kv)
		}
	}
	return append(env, append([]string{"XDG_CONFIG_HOME=" + config, "HOME=" + config}, extra...)...)
}

// result is a finished invocation.
type result struct {
	stdout, stderr string
	code           int
}

// hf runs the binary to completion with stdin as input.
func hf(t *testing.T, config, stdin string, args ...string) result {
	t.Helper()
	return hfEnv(t, config, nil, stdin, args...)
}

func hfEnv(t *testing.T, config string, env []string, stdin string, args ...string) result {
	t.Helper()
	checkArgs(t, args)
	cmd := exec.Command(binary, args...)
	cmd.Env = testEnv(t, config, env...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Start()
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(deadline):
		cmd.Process.Kill()
		<-done
		t.Fatalf("hyperfeed %q did not finish; stderr:\n%s", args, errb.String())
	}
	return result{out.String(), errb.String(), cmd.ProcessState.ExitCode()}
}

// ok runs the binary and fails the test unless it exits 0.
func ok(t *testing.T, config, stdin string, args ...string) string {
	t.Helper()
	r := hf(t, config, stdin, args...)
	if r.code != 0 {
		t.Fatalf("hyperfeed %q: exit %d, stderr:\n%s", args, r.code, r.stderr)
	}
	return r.stdout
}

// proc is a running hyperfeed whose output the test reads line by line.
type proc struct {
	t      *testing.T
	args   []string
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	stdout chan string
	stderr chan string
	done   chan struct{}

	mu  sync.Mutex
	all []string // every line, for failure messages
}

func start(t *testing.T, config string, env []string, args ...string) *proc {
	t.Helper()
	checkArgs(t, args)
	p := &proc{t: t, args: args, stdout: make(chan string, 1<<14), stderr: make(chan string, 1<<14), done: make(chan struct{})}
	p.cmd = exec.Command(binary, args...)
	p.cmd.Env = testEnv(t, config, env...)
	var err error
	if p.stdin, err = p.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	outPipe, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	errPipe, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var readers sync.WaitGroup
	for _, x := range []struct {
		r  io.Reader
		ch chan string
	}{{outPipe, p.stdout}, {errPipe, p.stderr}} {
		readers.Go(func() {
			defer close(x.ch)
			sc := bufio.NewScanner(x.r)
			sc.Buffer(nil, 1<<20)
			for sc.Scan() {
				p.mu.Lock()
				p.all = append(p.all, sc.Text())
				p.mu.Unlock()
				x.ch <- sc.Text() // the buffer is far larger than any test's output
			}
		})
	}
	go func() {
		readers.Wait() // Wait must not run before the pipes are drained
		p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.cmd.Process.Signal(syscall.SIGCONT) // in case a test stopped it
		p.cmd.Process.Kill()
		p.stdin.Close()
		<-p.done
	})
	return p
}

func (p *proc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.all, "\n")
}

// expect reads lines from ch until one matches re, and returns its
// submatches.
func (p *proc) expect(ch chan string, re string) []string {
	p.t.Helper()
	rx := regexp.MustCompile(re)
	timeout := time.After(deadline)
	for {
		select {
		case line, open := <-ch:
			if !open {
				p.t.Fatalf("hyperfeed %q ended its output without a line matching %q; output:\n%s", p.args, re, p.output())
			}
			if m := rx.FindStringSubmatch(line); m != nil {
				return m
			}
		case <-timeout:
			p.t.Fatalf("hyperfeed %q: no line matching %q; output:\n%s", p.args, re, p.output())
		}
	}
}

func (p *proc) signal(sig syscall.Signal) {
	p.t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		p.t.Fatal(err)
	}
}

// wait waits for the process to end and returns its exit status.
func (p *proc) wait() int {
	p.t.Helper()
	select {
	case <-p.done:
	case <-time.After(deadline):
		p.t.Fatalf("hyperfeed %q did not end; output:\n%s", p.args, p.output())
	}
	return p.cmd.ProcessState.ExitCode()
}

// share starts "hyperfeed share" on dir and returns it with its key and the
// address it listens on.
func share(t *testing.T, config string, env []string, dir string, extra ...string) (p *proc, key, addr string) {
	t.Helper()
	p = start(t, config, env, append(append([]string{"share", dir}, loopback...), extra...)...)
	key = p.expect(p.stdout, `^key\s+([0-9a-f]{64})$`)[1]
	addr = p.expect(p.stdout, `^listening\s+(127\.0\.0\.1:\d+)$`)[1]
	return p, key, addr
}

// oneLine checks that a failure was reported as exactly one line.
func oneLine(t *testing.T, r result, code int, want string) {
	t.Helper()
	if r.code != code {
		t.Errorf("exit status %d, want %d; stderr:\n%s", r.code, code, r.stderr)
	}
	lines := strings.Split(strings.TrimRight(r.stderr, "\n"), "\n")
	if len(lines) != 1 || !strings.HasPrefix(lines[0], "hyperfeed: ") || !strings.Contains(lines[0], want) {
		t.Errorf("stderr %q: want one line starting \"hyperfeed: \" containing %q", r.stderr, want)
	}
}
