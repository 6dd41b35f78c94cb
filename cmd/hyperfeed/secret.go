package main

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"os"
)

// secret returns the network secret, or nil for an open network. It comes
// from a file (--secret-file, else $HYPERFEED_SECRET_FILE) or from
// $HYPERFEED_SECRET, never from a flag's value: command lines are visible to
// every user of the machine and kept in shell histories.
func (e *env) secret() ([]byte, error) {
	path, from := e.g.secretFile, "--secret-file"
	if path == "" {
		path, from = os.Getenv("HYPERFEED_SECRET_FILE"), "$HYPERFEED_SECRET_FILE"
	}
	if path != "" {
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("network secret (%s): %w", from, err)
		}
		if st, err := os.Stat(path); err == nil && st.Mode().Perm()&0o077 != 0 {
			e.log.Warn("the network secret file can be read by other users", "file", path, "mode", st.Mode().Perm())
		}
		s, err := parseSecret(b, true)
		if err != nil {
			return nil, usageErrorf("network secret in %s: %v", path, err)
		}
		return s, nil
	}
	if v := os.Getenv("HYPERFEED_SECRET"); v != "" {
		s, err := parseSecret([]byte(v), false)
		if err != nil {
			return nil, usageErrorf("$HYPERFEED_SECRET: %v", err)
		}
		return s, nil
	}
	return nil, nil
}

// parseSecret reads 64 hex digits (surrounding space allowed) or, from a
// file, 32 raw bytes.
func parseSecret(b []byte, rawOK bool) ([]byte, error) {
	if t := bytes.TrimSpace(b); len(t) == 64 {
		s := make([]byte, 32)
		if _, err := hex.Decode(s, t); err == nil {
			return s, nil
		}
	}
	if rawOK && len(b) == 32 {
		return b, nil
	}
	if rawOK {
		return nil, fmt.Errorf("want 64 hex digits or 32 bytes, got %d bytes", len(b))
	}
	return nil, fmt.Errorf("want 64 hex digits")
}
