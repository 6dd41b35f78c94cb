// Package nodeflags holds the command-line flags that the examples share to
// start a usersession node: who the user is, where the node is reachable,
// how it finds peers, and where it keeps its data.
package nodeflags

import (
	"bytes"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/hyperfeed/hyperfeed/usersession"
)

// Flags are the values of the shared flags, once parsed.
type Flags struct {
	Alias        string
	IP           string
	Port         int
	Listen       string
	Dir          string
	Interfaces   List
	Peers        List
	NoMDNS       bool
	SecretFile   string
	Heartbeat    time.Duration
	OfflineAfter time.Duration
	Verbose      bool
}

// Register defines the flags on fs, with alias as the default user.
func (f *Flags) Register(fs *flag.FlagSet, alias string) {
	fs.StringVar(&f.Alias, "alias", alias, "the user's alias")
	fs.StringVar(&f.IP, "ip", "", "the IP address to publish (default: -listen's, else the first IPv4 address of the -iface interfaces, else 127.0.0.1)")
	fs.IntVar(&f.Port, "port", 0, "the port to publish (default: the port the node listens on)")
	fs.StringVar(&f.Listen, "listen", "", `the address the node listens on for peers (default ":0", any free port)`)
	fs.StringVar(&f.Dir, "dir", "", "the data directory (default: the user's config directory, hyperfeed/usersession/ALIAS)")
	fs.Var(&f.Interfaces, "iface", "a network interface to find peers on by mDNS (repeatable; default: every multicast interface)")
	fs.Var(&f.Peers, "peer", "a peer's address, host:port, to connect to (repeatable)")
	fs.BoolVar(&f.NoMDNS, "no-mdns", false, "do not use mDNS: reach peers through -peer, and the peers that connect")
	fs.StringVar(&f.SecretFile, "secret-file", "", "a file holding the network secret (64 hex digits, or 32 bytes); peers without it cannot connect")
	fs.DurationVar(&f.Heartbeat, "heartbeat", 0, "the keep-alive interval between peers (default 5s)")
	fs.DurationVar(&f.OfflineAfter, "offline-after", 0, "how long a silent peer stays online (default 3 heartbeats)")
	fs.BoolVar(&f.Verbose, "v", false, "log what the node does to standard error")
}

// Session returns the session to start: the alias, the IP and the port.
func (f *Flags) Session() usersession.UserSession {
	return usersession.UserSession{Alias: f.Alias, IP: f.IP, Port: f.Port}
}

// Config returns the node's configuration. Logs go to stderr if -v was
// given.
func (f *Flags) Config(stderr io.Writer) (usersession.Config, error) {
	if f.NoMDNS && len(f.Interfaces) > 0 {
		return usersession.Config{}, errors.New("-iface and -no-mdns contradict each other")
	}
	cfg := usersession.Config{
		Dir:               f.Dir,
		Peers:             f.Peers,
		Interfaces:        f.Interfaces,
		NoMDNS:            f.NoMDNS,
		ListenAddr:        f.Listen,
		HeartbeatInterval: f.Heartbeat,
		OfflineAfter:      f.OfflineAfter,
	}
	if f.SecretFile != "" {
		s, err := ReadSecret(f.SecretFile)
		if err != nil {
			return usersession.Config{}, err
		}
		cfg.Secret = s
	}
	if f.Verbose {
		cfg.Logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return cfg, nil
}

// ReadSecret reads a network secret from a file: 64 hex digits (with
// surrounding space allowed), or 32 raw bytes, as the hyperfeed command
// takes it.
func ReadSecret(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("network secret: %w", err)
	}
	if t := bytes.TrimSpace(b); len(t) == 64 {
		s := make([]byte, 32)
		if _, err := hex.Decode(s, t); err == nil {
			return s, nil
		}
	}
	if len(b) == 32 {
		return b, nil
	}
	return nil, fmt.Errorf("network secret in %s: want 64 hex digits or 32 bytes, got %d bytes", path, len(b))
}

// List is a repeatable string flag.
type List []string

// String returns the values joined by commas.
func (l *List) String() string { return strings.Join(*l, ",") }

// Set adds a value.
func (l *List) Set(v string) error {
	if v == "" {
		return errors.New("empty value")
	}
	*l = append(*l, v)
	return nil
}
