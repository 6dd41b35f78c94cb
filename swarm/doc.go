// Package swarm replicates feeds between peers: Noise-encrypted connections,
// discovery of peers on the local network (mDNS) or from a list, and the
// replication protocol. It is the only package of hyperfeed that owns
// goroutines and sockets.
package swarm
