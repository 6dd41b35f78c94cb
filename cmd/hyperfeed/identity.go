package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/hyperfeed/hyperfeed/swarm"
)

// errInUse: another process holds the lock.
var errInUse = errors.New("in use")

// identity returns this peer's key pair: the one kept in --key-file, or in
// peer.key under the user's config directory, created on first use
// (swarm.LoadOrCreateKeyPair makes the directory, and of two processes
// creating the file at once, both get the one saved first).
//
// Two processes must not run with one identity: mDNS ignores announcements
// carrying its own key (they are taken for its own echo), so a share and a
// clone in two terminals of one machine would never find each other. The
// key file is therefore locked while in use, and a second process runs with
// a fresh key that lasts as long as it does. release drops the lock.
func (e *env) identity() (kp swarm.KeyPair, release func(), err error) {
	path, explicit := e.g.keyFile, e.g.keyFile != ""
	if !explicit {
		dir, err := os.UserConfigDir()
		if err != nil {
			return kp, nil, fmt.Errorf("no config directory for the peer key (%v): give --key-file", err)
		}
		path = filepath.Join(dir, "hyperfeed", "peer.key")
	}
	kp, err = swarm.LoadOrCreateKeyPair(path)
	if err != nil {
		return kp, nil, fmt.Errorf("peer key: %w", err)
	}
	release, err = lockFile(path + ".lock")
	if errors.Is(err, errInUse) {
		level := e.log.Info
		if explicit {
			level = e.log.Warn
		}
		level("peer key is in use by another process; running with a temporary one", "file", path)
		kp, err = swarm.GenerateKeyPair()
		return kp, func() {}, err
	}
	if err != nil {
		return kp, nil, fmt.Errorf("peer key: %w", err)
	}
	return kp, release, nil
}
