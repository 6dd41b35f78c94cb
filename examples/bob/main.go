// Command bob is the other half of examples/alice: it starts bob's session
// and looks alice up. It takes the same flags; see examples/alice for how
// to run the two on two machines.
//
//	go run ./examples/bob
package main

import "github.com/hyperfeed/hyperfeed/examples/internal/seeddemo"

func main() { seeddemo.Main("bob", "alice") }
