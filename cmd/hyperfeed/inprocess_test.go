package main

import (
	"bytes"
	"context"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// These tests call run in the test process, so that goleak (in TestMain)
// sees any goroutine that a command, its swarm or its input reader leaves
// behind. A cancelled context stands in for the signal.

// lineWriter collects output from the goroutines of one run, and hands out
// complete lines.
type lineWriter struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	all   bytes.Buffer
	lines chan string
}

func newLineWriter() *lineWriter { return &lineWriter{lines: make(chan string, 1<<12)} }

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.all.Write(p)
	w.buf.Write(p)
	for {
		line, err := w.buf.ReadString('\n')
		if err != nil {
			w.buf.WriteString(line) // incomplete: keep it for the next write
			return len(p), nil
		}
		select {
		case w.lines <- strings.TrimSuffix(line, "\n"):
		default: // nobody reads this one; all keeps it
		}
	}
}

func (w *lineWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.all.String()
}

func (w *lineWriter) expect(t *testing.T, re string) []string {
	t.Helper()
	rx := regexp.MustCompile(re)
	timeout := time.After(deadline)
	for {
		select {
		case line := <-w.lines:
			if m := rx.FindStringSubmatch(line); m != nil {
				return m
			}
		case <-timeout:
			t.Fatalf("no line matching %q in:\n%s", re, w.String())
		}
	}
}

func runIn(t *testing.T, ctx context.Context, stdin string, args ...string) (stdout, stderr *lineWriter, code int) {
	t.Helper()
	checkArgs(t, args)
	stdout, stderr = newLineWriter(), newLineWriter()
	code = run(ctx, args, strings.NewReader(stdin), stdout, stderr)
	return stdout, stderr, code
}

func TestInProcessShareAndClone(t *testing.T) {
	tmp := t.TempDir()
	w, c := filepath.Join(tmp, "w"), filepath.Join(tmp, "c")
	for _, step := range []struct {
		stdin string
		args  []string
	}{{"", []string{"create", w}}, {lines("x", 500), []string{"append", w}}} {
		if _, stderr, code := runIn(t, context.Background(), step.stdin, step.args...); code != 0 {
			t.Fatalf("%q: exit %d: %s", step.args, code, stderr)
		}
	}

	ctx, stop := context.WithCancelCause(context.Background())
	defer stop(nil)
	shareOut, shareErr := newLineWriter(), newLineWriter()
	shareArgs := append([]string{"share", w, "--key-file", filepath.Join(tmp, "share.key")}, loopback...)
	checkArgs(t, shareArgs)
	done := make(chan int, 1)
	go func() { done <- run(ctx, shareArgs, strings.NewReader(""), shareOut, shareErr) }()
	key := shareOut.expect(t, `^key\s+([0-9a-f]{64})$`)[1]
	addr := shareOut.expect(t, `^listening\s+(127\.0\.0\.1:\d+)$`)[1]

	cloneArgs := append([]string{"clone", key, c, "--peer", addr, "--key-file", filepath.Join(tmp, "clone.key")}, loopback...)
	out, stderr, code := runIn(t, context.Background(), "", cloneArgs...)
	if code != 0 || !regexp.MustCompile(`^cloned .*: 500 blocks, 3\.9 KiB, verified\n$`).MatchString(out.String()) {
		t.Errorf("clone: exit %d, stdout %q, stderr:\n%s", code, out, stderr)
	}

	stop(interrupted{syscall.SIGINT})
	if code := <-done; code != 0 {
		t.Errorf("share: exit %d on interrupt; stderr:\n%s", code, shareErr)
	}
	got, _, _ := runIn(t, context.Background(), "", "cat", c)
	if got.String() != lines("x", 500) {
		t.Error("the clone's blocks differ from the writer's")
	}
}

// An interrupted clone stops its swarm and says how far it got.
func TestInProcessCloneInterrupted(t *testing.T) {
	tmp := t.TempDir()
	ctx, stop := context.WithCancelCause(context.Background())
	// Nobody listens on the peer's port: the clone keeps redialling it.
	args := append([]string{"clone", strings.Repeat("cd", 32), filepath.Join(tmp, "c"),
		"--key-file", filepath.Join(tmp, "k"), "--peer", "127.0.0.1:9"}, loopback...)
	checkArgs(t, args)
	stderr := newLineWriter()
	done := make(chan int, 1)
	go func() { done <- run(ctx, args, strings.NewReader(""), newLineWriter(), stderr) }()
	stop(interrupted{syscall.SIGINT})
	if code := <-done; code != 130 {
		t.Errorf("exit %d, want 130", code)
	}
	if got := stderr.String(); got != "hyperfeed: clone: interrupted while looking for peers\n" {
		t.Errorf("stderr %q", got)
	}
}
