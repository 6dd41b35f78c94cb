//go:build !torture

package torture

import "time"

// The short run, inside go test ./...: every test, a few trials each.
var scale = scales{
	killTrials:    12,
	killReplica:   8,
	powerTrials:   30,
	replicaPower:  30,
	faultBlocks:   12,
	netReplicas:   3,
	netRounds:     6,
	loadPeers:     4,
	loadFeeds:     6,
	loadBlocks:    30,
	fanoutReaders: 4,
	fanoutBlocks:  2000,
	floodRequests: 20_000,
	openFlood:     2000,
	crashSeeds:    8,
	stallWait:     10 * time.Second, // a deadline only: CI machines are loaded
}
