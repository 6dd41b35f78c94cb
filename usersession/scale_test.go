package usersession

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/hyperfeed/hyperfeed/swarm"
)

// The scale test: scaleNodes nodes in this process, on loopback, each
// given the addresses of one or two nodes started before it.
const (
	scaleNodes = 50
	// scaleWave is how many nodes start at once, at most: a wave joins a
	// directory that has settled, as users join a running one.
	scaleWave = 8
	// scaleHeartbeat is the default: at testHeartbeat the keep-alives of
	// the 1,225 sessions of a full mesh would be most of the load, and a
	// loaded machine would time sessions out.
	scaleHeartbeat = DefaultHeartbeatInterval
	// scaleWait bounds each wait: long, since nothing should take it, so
	// that a slow machine (-race) does not fail the test; the test
	// reports what each took.
	scaleWait = 3 * time.Minute
)

// TestScale starts scaleNodes nodes and waits until every node lists every
// user online, all alike, each as that user's own node lists itself. Then
// half of them log out and a few close without logging out, all at once,
// and it checks that the nodes left show them offline within the times the
// package promises and come to list them alike again. It reports how long
// each took, the goroutines and heap at their peak, and the connections
// per node.
//
// It takes about a minute under -race on a 2-core machine; go test -short
// skips it.
func TestScale(t *testing.T) {
	if testing.Short() {
		t.Skip("50 nodes take about a minute; not with -short")
	}
	tn := newTestNet(t)
	rng := rand.New(rand.NewPCG(1, 2))
	var sessions sessionCounter
	t.Cleanup(sessions.wait) // after every node closed: cleanups run last in, first out
	var peak sampler

	// Node 0 starts alone. Then the others start in waves of 1, 2, 4, and
	// then scaleWave nodes, each wave at once once the one before it has
	// converged: node i knows node i/2 and one node at random of the waves
	// before. A sparse graph: most nodes are learnt of through the
	// directory, not from Config.Peers.
	nodes := make([]*Node, scaleNodes)
	begin := time.Now()
	var lastWave time.Duration
	var lastSize int
	for lo := 0; lo < scaleNodes; {
		hi := min(lo+min(max(lo, 1), scaleWave), scaleNodes)
		waveStart := time.Now()
		var wg sync.WaitGroup
		errs := make([]error, hi-lo)
		for i := lo; i < hi; i++ {
			var peers []*Node
			if i > 0 {
				peers = append(peers, nodes[i/2])
				if j := rng.IntN(lo); j != i/2 {
					peers = append(peers, nodes[j])
				}
			}
			alias := fmt.Sprintf("user%02d", i)
			cfg := tn.config(alias, peers...)
			cfg.HeartbeatInterval = scaleHeartbeat
			s := UserSession{Alias: alias, Metadata: map[string]string{"node": strconv.Itoa(i)}}
			wg.Go(func() {
				ctx, cancel := context.WithTimeout(context.Background(), scaleWait)
				defer cancel()
				n, err := StartUserSession(ctx, s, cfg)
				if err != nil {
					errs[i-lo] = err
					return
				}
				t.Cleanup(func() { n.Close() })
				nodes[i] = n
				sessions.watch(n.sw)
			})
		}
		wg.Wait()
		require.NoError(t, errors.Join(errs...))
		started := time.Since(waveStart)
		took := converge(t, nodes[:hi], nodes[:hi], &peak)
		t.Logf("scale: nodes %d to %d started in %v and the %d agree %v after", lo, hi-1,
			started.Round(time.Millisecond), hi, took.Round(time.Millisecond))
		lastWave, lastSize = time.Since(waveStart), hi-lo
		lo = hi
	}
	settled := time.Since(begin)
	t.Logf("scale: %d nodes started and converged in %v (the last wave, of %d, in %v)",
		scaleNodes, settled.Round(time.Millisecond), lastSize, lastWave.Round(time.Millisecond))
	for _, n := range nodes {
		for _, s := range n.GetUsers() {
			require.True(t, s.Online, "%s lists %s offline", n.alias, s.Alias)
		}
	}

	// Presence comes from direct connections: a full mesh, one session
	// per pair of nodes. It stays up: for a heartbeat the directory does
	// not change, and sessions do not come and go, but for the odd one
	// that a second connection between the same pair replaces (which the
	// directory does not show): no redial storm.
	for _, n := range nodes {
		require.Len(t, n.sw.Peers(), scaleNodes-1, "%s's connections", n.alias)
	}
	ups, downs := sessions.counts()
	t.Logf("scale: %d sessions started and %d ended on the way (a full mesh is %d, counted from both ends)",
		ups, downs, scaleNodes*(scaleNodes-1))
	sessions.reset()
	for steady := time.Now(); time.Since(steady) < scaleHeartbeat; {
		require.Empty(t, converged(nodes, nodes, &peak, 1), "the directory changed while nothing happened")
		time.Sleep(250 * time.Millisecond)
	}
	ups, downs = sessions.counts()
	require.Less(t, ups+downs, int64(scaleNodes), "sessions came and went in a converged directory: %d started, %d ended", ups, downs)
	t.Logf("scale: in a heartbeat at rest, %d sessions started and %d ended", ups, downs)
	t.Logf("scale: peak %d goroutines, %d MiB of heap in use; %d connections per node",
		peak.goroutines, peak.heap>>20, scaleNodes-1)

	// Half log out and a tenth close without logging out, all at once.
	half, tenth := scaleNodes/2, scaleNodes/10
	out, gone, live := nodes[:half], nodes[half:half+tenth], nodes[half+tenth:]
	ctx, cancel := context.WithTimeout(context.Background(), scaleWait)
	defer cancel()
	leave := time.Now()
	var wg sync.WaitGroup
	t.Cleanup(wg.Wait) // should the test fail before it waits: cancel, then this, then the nodes close
	errs := make([]error, len(out)+len(gone))
	var slowest atomic.Int64
	for i, n := range append(slices.Clone(out), gone...) {
		wg.Go(func() {
			start := time.Now()
			if i < len(out) {
				errs[i] = n.Logout(ctx)
			} else {
				errs[i] = n.Close()
			}
			took := int64(time.Since(start))
			for old := slowest.Load(); took > old && !slowest.CompareAndSwap(old, took); old = slowest.Load() {
			}
		})
	}
	// The promises: a node that logs out shows offline everywhere at once
	// when its peers take the logout, which Logout waits for, 2 s at
	// most, and on up to OfflineAfter if none has; then it closes. One
	// that closes shows offline as soon as its connections end (within
	// OfflineAfter if they just went silent). Another OfflineAfter on top
	// is room for a loaded machine: under -race, the 25 logouts at once
	// take the 50 nodes tens of seconds of work.
	offlineAfter := live[0].cfg.OfflineAfter
	bound := deliverTimeout + offlineAfter + offlineAfter
	offline := func() bool {
		for _, n := range live {
			for _, m := range nodes[:half+tenth] {
				if online(n, m.alias) {
					return false
				}
			}
		}
		return true
	}
	for !offline() {
		require.Less(t, time.Since(leave), bound, "not shown offline everywhere")
		time.Sleep(20 * time.Millisecond)
	}
	shown := time.Since(leave)
	wg.Wait()
	require.NoError(t, errors.Join(errs...))
	require.Less(t, time.Duration(slowest.Load()), bound, "Logout or Close took too long")
	took := converge(t, live, nodes, &peak)
	reconverged := time.Since(leave)
	t.Logf("scale: %d logged out and %d closed at once: offline everywhere after %v, all of them done after %v, the %d left agree %v after that",
		len(out), len(gone), shown.Round(time.Millisecond), time.Duration(slowest.Load()).Round(time.Millisecond),
		len(live), took.Round(time.Millisecond))
	for _, n := range live {
		users := n.GetUsers()
		require.Len(t, users, scaleNodes, "logging out is not leaving the directory")
		for _, m := range out {
			require.Empty(t, users[m.alias].IP, "%s lists %s's address after the logout", n.alias, m.alias)
		}
		for _, m := range gone {
			require.Equal(t, "127.0.0.1", users[m.alias].IP, "gone, not logged out: the address stays")
		}
		for _, m := range live {
			require.True(t, users[m.alias].Online, "%s lists %s offline", n.alias, m.alias)
		}
	}
	// And the sessions with the nodes gone have ended (each side sees its
	// end of a connection close in its own time).
	for _, n := range live {
		require.Eventually(t, func() bool { return len(n.sw.Peers()) == len(live)-1 }, scaleWait, 50*time.Millisecond,
			"%s keeps sessions with nodes gone", n.alias)
	}
	t.Logf("scale-figure: nodes=%d converge=%v last-wave=%v goroutines=%d heap=%dMiB conns/node=%d offline=%v reconverge=%v",
		scaleNodes, settled.Round(time.Millisecond), lastWave.Round(time.Millisecond), peak.goroutines, peak.heap>>20,
		scaleNodes-1, shown.Round(time.Millisecond), reconverged.Round(time.Millisecond))
}

// converge waits until every node of live lists every node of all as that
// node lists itself, and returns how long it took.
func converge(t *testing.T, live, all []*Node, peak *sampler) time.Duration {
	t.Helper()
	start := time.Now()
	for time.Since(start) < scaleWait {
		if len(converged(live, all, peak, 1)) == 0 {
			return time.Since(start)
		}
		time.Sleep(100 * time.Millisecond)
	}
	diffs := converged(live, all, nil, -1)
	require.FailNow(t, "no convergence", "after %v, %d differences, for instance:\n%s",
		scaleWait, len(diffs), strings.Join(diffs[:min(len(diffs), 10)], "\n"))
	return 0
}

// converged returns how the nodes of live list the nodes of all otherwise
// than those list themselves, up to limit differences (all if limit < 0):
// nothing once they agree. LastSeen is left out: it is when each node last
// heard of the user.
func converged(live, all []*Node, peak *sampler, limit int) []string {
	want := map[string]UserSession{}
	for _, n := range all {
		s := n.Self()
		s.LastSeen = time.Time{}
		want[s.Alias] = s
	}
	var diffs []string
	for _, n := range live {
		if peak != nil {
			peak.sample()
		}
		got := n.GetUsers()
		for _, name := range slices.Sorted(maps.Keys(got)) {
			s := got[name]
			s.LastSeen = time.Time{}
			if w, ok := want[name]; !ok {
				diffs = append(diffs, fmt.Sprintf("%s lists %s, which is nobody", n.alias, name))
			} else if !sameShown(s, w) {
				diffs = append(diffs, fmt.Sprintf("%s lists %s as %+v, not %+v", n.alias, name, s, w))
			}
		}
		for _, name := range slices.Sorted(maps.Keys(want)) {
			if _, ok := got[name]; !ok {
				diffs = append(diffs, fmt.Sprintf("%s does not list %s", n.alias, name))
			}
		}
		if limit >= 0 && len(diffs) >= limit {
			break
		}
	}
	return diffs
}

// sameShown compares what every node should show alike: all but LastSeen.
func sameShown(a, b UserSession) bool {
	return a.Alias == b.Alias && a.IP == b.IP && a.Port == b.Port && a.Identity == b.Identity &&
		a.Device == b.Device && a.DeviceName == b.DeviceName && a.Started.Equal(b.Started) &&
		a.Online == b.Online && maps.Equal(a.Metadata, b.Metadata)
}

// sampler keeps the most goroutines and heap in use seen.
type sampler struct {
	goroutines int
	heap       uint64
	last       time.Time
}

func (s *sampler) sample() {
	s.goroutines = max(s.goroutines, runtime.NumGoroutine())
	if time.Since(s.last) < 100*time.Millisecond {
		return // ReadMemStats stops the world
	}
	s.last = time.Now()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	s.heap = max(s.heap, m.HeapInuse)
}

// sessionCounter counts the sessions that start and end on some swarms.
type sessionCounter struct {
	wg       sync.WaitGroup
	up, down atomic.Int64
}

// watch counts sw's sessions until it closes.
func (c *sessionCounter) watch(sw *swarm.Swarm) {
	events := sw.Watch(context.Background())
	c.wg.Go(func() {
		for e := range events {
			if e.Up {
				c.up.Add(1)
			} else {
				c.down.Add(1)
			}
		}
	})
}

func (c *sessionCounter) counts() (up, down int64) { return c.up.Load(), c.down.Load() }

func (c *sessionCounter) reset() { c.up.Store(0); c.down.Store(0) }

func (c *sessionCounter) wait() { c.wg.Wait() }
