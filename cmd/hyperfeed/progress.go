package main

import (
	"fmt"
	"io"
	"os"
	"time"
)

// progress shows a download on stderr: on a terminal, one line redrawn in
// place a few times a second; otherwise (a log file, a pipe) a plain line
// when the counts changed and a second has passed, and one at the end.
type progress struct {
	w   io.Writer
	tty bool
	now func() time.Time // time.Now, but for tests

	started time.Time
	base    uint64 // blocks held when counting started: the rate is of this run
	lastAt  time.Time
	lastHad uint64
	lastLen uint64
	printed bool
	dirty   bool // a terminal line is drawn without its newline
}

func newProgress(w io.Writer) *progress {
	return &progress{w: w, tty: isTerminal(w), now: time.Now}
}

// isTerminal reports whether w is a character device, as a terminal is,
// without asking the terminal driver: that would need golang.org/x/term.
// /dev/null is one too, and gets the terminal form unseen.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok || os.Getenv("TERM") == "dumb" {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// update shows have of total blocks held, of a feed of byteLen bytes.
// final forces a line out and ends it.
func (p *progress) update(have, total, byteLen uint64, final bool) {
	now := p.now()
	if p.started.IsZero() {
		p.started, p.base = now, have
	}
	changed := !p.printed || have != p.lastHad || total != p.lastLen
	gap := time.Second
	if p.tty {
		gap = 200 * time.Millisecond
	}
	if !final && (!changed || now.Sub(p.lastAt) < gap) {
		return
	}
	if final && !changed && !p.dirty && p.printed {
		return // the last line said it all
	}
	p.lastAt, p.lastHad, p.lastLen, p.printed = now, have, total, true
	line := p.line(have, total, byteLen, now)
	switch {
	case !p.tty:
		fmt.Fprintln(p.w, line)
	case final:
		fmt.Fprintf(p.w, "\r%s\x1b[K\n", line)
		p.dirty = false
	default:
		fmt.Fprintf(p.w, "\r%s\x1b[K", line)
		p.dirty = true
	}
}

// done ends a terminal line left open, before other output.
func (p *progress) done() {
	if p.dirty {
		fmt.Fprintln(p.w)
		p.dirty = false
	}
}

// line reads "1234/5000 blocks  1.2 MiB/4.9 MiB  310.5 KiB/s  ETA 12s".
// Bytes held are estimated from the mean block size: the feed tells how
// many blocks a replica holds, not how many bytes.
func (p *progress) line(have, total, byteLen uint64, now time.Time) string {
	mean := 0.0
	if total > 0 {
		mean = float64(byteLen) / float64(total)
	}
	s := fmt.Sprintf("%d/%d blocks  %s/%s", have, total, humanBytes(mean*float64(have)), humanBytes(float64(byteLen)))
	elapsed := now.Sub(p.started)
	if elapsed < 100*time.Millisecond || have < p.base {
		return s
	}
	rate := float64(have-p.base) / elapsed.Seconds() // blocks per second
	s += fmt.Sprintf("  %s/s", humanBytes(rate*mean))
	switch {
	case have >= total:
		s += "  in " + humanDuration(elapsed)
	case rate > 0:
		s += "  ETA " + humanDuration(time.Duration(float64(total-have)/rate*float64(time.Second)))
	default:
		s += "  ETA ?"
	}
	return s
}
