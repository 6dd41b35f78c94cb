package main

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time          { return c.t }
func (c *fakeClock) advance(d time.Duration) { c.t = c.t.Add(d) }
func newFakeClock() *fakeClock               { return &fakeClock{time.Unix(1e9, 0)} }
func outputLines(b *bytes.Buffer) []string {
	return strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n")
}

func TestProgressPlain(t *testing.T) {
	var b bytes.Buffer
	clk := newFakeClock()
	p := &progress{w: &b, now: clk.now}
	p.update(0, 1000, 1<<20, false) // the first line comes at once
	clk.advance(500 * time.Millisecond)
	p.update(100, 1000, 1<<20, false) // too soon after it
	clk.advance(600 * time.Millisecond)
	p.update(100, 1000, 1<<20, false) // a second has passed
	clk.advance(2 * time.Second)
	p.update(100, 1000, 1<<20, false) // nothing changed: no line
	clk.advance(time.Second)
	p.update(1000, 1000, 1<<20, true) // the end, always
	p.update(1000, 1000, 1<<20, true) // said already
	want := []string{
		"0/1000 blocks  0 B/1.0 MiB",
		"100/1000 blocks  102.4 KiB/1.0 MiB  93.1 KiB/s  ETA 10s",
		"1000/1000 blocks  1.0 MiB/1.0 MiB  249.8 KiB/s  in 4s",
	}
	if got := outputLines(&b); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("lines:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestProgressTerminal(t *testing.T) {
	var b bytes.Buffer
	clk := newFakeClock()
	p := &progress{w: &b, tty: true, now: clk.now}
	p.update(0, 10, 100, false)
	clk.advance(300 * time.Millisecond)
	p.update(5, 10, 100, false)
	p.done()
	if got, want := b.String(), "\r0/10 blocks  0 B/100 B\x1b[K\r5/10 blocks  50 B/100 B  167 B/s  ETA <1s\x1b[K\n"; got != want {
		t.Errorf("terminal output %q, want %q", got, want)
	}
}
