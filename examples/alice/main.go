// Command alice is one half of the users-and-sessions demo, for two
// machines on one network: it starts alice's session, prints the users it
// finds as they come and go, and looks bob up by alias, printing his
// address once found. Its other half is examples/bob. Stop it with Ctrl-C:
// it logs out, and bob sees alice go offline at once.
//
// On the first machine, and on the second:
//
//	go run ./examples/alice
//	go run ./examples/bob
//
// They find each other by mDNS on every multicast interface. Pin it to one
// with -iface eth0, or where multicast does not pass between the machines,
// name the other's address instead (the node listens where -listen says):
//
//	go run ./examples/alice -no-mdns -listen :4977 -peer 192.0.2.2:4977
//	go run ./examples/bob -no-mdns -listen :4977 -peer 192.0.2.1:4977
//
// A shared -secret-file keeps everyone else out. Each user's data (identity,
// feeds) lives under -dir, by default in the user's configuration
// directory, so a restart is the same user. -help lists every flag.
package main

import "github.com/hyperfeed/hyperfeed/examples/internal/seeddemo"

func main() { seeddemo.Main("alice", "bob") }
