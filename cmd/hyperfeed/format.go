package main

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// parseSize reads a byte count: a number, optionally followed by K or KiB,
// M or MiB (case-insensitive). Units are binary; "KB" is refused rather
// than guessed at.
func parseSize(s string) (int, error) {
	num, mult := s, 1
	for _, u := range []struct {
		suffix string
		mult   int
	}{{"kib", 1 << 10}, {"mib", 1 << 20}, {"k", 1 << 10}, {"m", 1 << 20}} {
		if strings.HasSuffix(strings.ToLower(s), u.suffix) {
			num, mult = s[:len(s)-len(u.suffix)], u.mult
			break
		}
	}
	n, err := strconv.ParseUint(num, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("size %q: want a number of bytes, optionally with K, KiB, M or MiB", s)
	}
	return int(n) * mult, nil
}

// humanBytes formats n bytes with a binary unit.
func humanBytes(n float64) string {
	const units = "KMGTPE"
	if n < 1024 {
		return fmt.Sprintf("%.0f B", n)
	}
	i := -1
	for n >= 1024 && i < len(units)-1 {
		n /= 1024
		i++
	}
	return fmt.Sprintf("%.1f %ciB", n, units[i])
}

// humanDuration rounds d to what a progress line needs.
func humanDuration(d time.Duration) string {
	if d < time.Second {
		return "<1s"
	}
	if d < time.Hour {
		return d.Round(time.Second).String()
	}
	return d.Round(time.Minute).String()
}
