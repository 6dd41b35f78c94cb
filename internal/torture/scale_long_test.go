//go:build torture

package torture

import "time"

// The long run: go test -tags torture ./internal/torture/...
var scale = scales{
	long:          true,
	killTrials:    200,
	killReplica:   100,
	powerTrials:   400,
	replicaPower:  200,
	faultBlocks:   40,
	netReplicas:   8,
	netRounds:     40,
	loadPeers:     20,
	loadFeeds:     100,
	loadBlocks:    100,
	fanoutReaders: 20,
	fanoutBlocks:  50_000,
	floodRequests: 200_000,
	openFlood:     5000,
	crashSeeds:    32,
	stallWait:     10 * time.Second,
}
