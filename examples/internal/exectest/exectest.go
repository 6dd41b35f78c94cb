// Package exectest runs the examples' binaries in tests, as a user would:
// it builds them (with the race detector when the tests run with it, so
// that -race covers the programs' goroutines too), starts them, and reads
// their output line by line with deadlines, never sleeping.
package exectest

import (
	"bufio"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Timeout is how long Expect and Wait wait by default: generous, because
// the machine may be slow and shared, and the binaries built with -race.
const Timeout = 90 * time.Second

// Build compiles package pkg (an import path, or a directory such as ".")
// into dir/name and returns the binary's path.
func Build(dir, name, pkg string) (string, error) {
	bin := filepath.Join(dir, name)
	args := []string{"build", "-o", bin}
	if raceEnabled {
		args = append(args, "-race")
	}
	out, err := exec.Command("go", append(args, pkg)...).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build %s: %v\n%s", pkg, err, out)
	}
	return bin, nil
}

// Proc is a running program: its output is collected as it comes, and read
// by Expect.
type Proc struct {
	Name  string
	t     testing.TB
	cmd   *exec.Cmd
	stdin io.WriteCloser

	mu     sync.Mutex
	lines  []string // standard output
	next   int      // the first line Expect has not looked at
	log    []string // both outputs, for failure reports
	eof    bool
	notify chan struct{} // a line or the end arrived

	done    chan struct{} // closed once the program has exited and been reaped
	waitErr error
}

// Start starts cmd, whose output must not be set yet, under name. The
// program is killed, if still running, when t ends.
func Start(t testing.TB, name string, cmd *exec.Cmd) *Proc {
	t.Helper()
	p := &Proc{Name: name, t: t, cmd: cmd, notify: make(chan struct{}, 1), done: make(chan struct{})}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if p.stdin, err = cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = stderrLog{p}
	t.Logf("%s: %s", name, strings.Join(cmd.Args, " "))
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(p.done)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			p.add(sc.Text(), true)
		}
		io.Copy(io.Discard, stdout) // after a line too long: reach the end anyway
		p.mu.Lock()
		p.eof = true
		p.mu.Unlock()
		p.wake()
		p.waitErr = cmd.Wait()
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("--- %s's output:\n%s", name, p.Output())
		}
	})
	return p
}

func (p *Proc) add(line string, stdout bool) {
	p.mu.Lock()
	if stdout {
		p.lines = append(p.lines, line)
		p.log = append(p.log, line)
	} else {
		p.log = append(p.log, "stderr: "+line)
	}
	p.mu.Unlock()
	p.wake()
}

func (p *Proc) wake() {
	select {
	case p.notify <- struct{}{}:
	default:
	}
}

// stderrLog keeps the program's standard error for the report.
type stderrLog struct{ p *Proc }

func (w stderrLog) Write(b []byte) (int, error) {
	for _, l := range strings.Split(strings.TrimRight(string(b), "\n"), "\n") {
		w.p.add(l, false)
	}
	return len(b), nil
}

// Output returns everything the program printed so far.
func (p *Proc) Output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.log, "\n")
}

// Lines returns the lines of standard output so far.
func (p *Proc) Lines() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.lines...)
}

// Expect reads the program's output from where the last Expect stopped
// until a line matches pattern, and returns the line's submatches; it
// fails the test if the program ends first or after Timeout.
func (p *Proc) Expect(pattern string) []string {
	p.t.Helper()
	return p.ExpectWithin(pattern, Timeout)
}

// ExpectWithin is Expect with another timeout.
func (p *Proc) ExpectWithin(pattern string, timeout time.Duration) []string {
	p.t.Helper()
	re := regexp.MustCompile(pattern)
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		p.mu.Lock()
		for ; p.next < len(p.lines); p.next++ {
			if m := re.FindStringSubmatch(p.lines[p.next]); m != nil {
				p.next++
				p.mu.Unlock()
				return m
			}
		}
		eof := p.eof
		p.mu.Unlock()
		if eof {
			p.t.Fatalf("%s ended without printing a line matching %q\n%s", p.Name, pattern, p.Output())
		}
		select {
		case <-p.notify:
		case <-deadline.C:
			p.t.Fatalf("%s printed no line matching %q in %v\n%s", p.Name, pattern, timeout, p.Output())
		}
	}
}

// Send writes a line to the program's standard input.
func (p *Proc) Send(line string) {
	p.t.Helper()
	if _, err := io.WriteString(p.stdin, line+"\n"); err != nil {
		p.t.Fatalf("%s: write %q: %v", p.Name, line, err)
	}
}

// CloseInput closes the program's standard input.
func (p *Proc) CloseInput() { p.stdin.Close() }

// Signal sends sig to the program.
func (p *Proc) Signal(sig syscall.Signal) {
	p.t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		p.t.Fatalf("%s: %v: %v", p.Name, sig, err)
	}
}

// Wait waits, at most Timeout, for the program to exit and returns how it
// did: nil for status 0.
func (p *Proc) Wait() error {
	p.t.Helper()
	t := time.NewTimer(Timeout)
	defer t.Stop()
	select {
	case <-p.done:
		return p.waitErr
	case <-t.C:
		p.t.Fatalf("%s did not exit in %v\n%s", p.Name, Timeout, p.Output())
		return nil
	}
}

// ExitOK waits for the program to exit and fails the test unless its
// status is 0.
func (p *Proc) ExitOK() {
	p.t.Helper()
	if err := p.Wait(); err != nil {
		p.t.Fatalf("%s: %v\n%s", p.Name, err, p.Output())
	}
}

// Contains reports whether the program printed line, exactly, on its
// standard output.
func (p *Proc) Contains(line string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, l := range p.lines {
		if l == line {
			return true
		}
	}
	return false
}
