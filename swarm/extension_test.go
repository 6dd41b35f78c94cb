package swarm

import (
	"bytes"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/hyperfeed/hyperfeed/feed"
	"github.com/hyperfeed/hyperfeed/internal/wire"
	"github.com/stretchr/testify/require"
)

// extValue is an extension value a handler was called with.
type extValue struct {
	from    PeerKey
	name    string
	payload []byte
}

// handleAll registers handlers for names on r that pass what they get to
// the channel returned, which holds enough for any test here: the handlers
// never block.
func handleAll(r *Replicator, names ...string) <-chan extValue {
	ch := make(chan extValue, 1000)
	for _, name := range names {
		r.HandleExtension(name, func(from PeerKey, payload []byte) { ch <- extValue{from, name, payload} })
	}
	return ch
}

func nextExt(t testing.TB, ch <-chan extValue) extValue {
	t.Helper()
	timer := time.NewTimer(30 * time.Second)
	defer timer.Stop()
	select {
	case v := <-ch:
		return v
	case <-timer.C:
		t.Fatal("no extension value for 30 s")
		return extValue{}
	}
}

// extFeeds returns a writer's feed and a replica of it, each with its
// Replicator.
func extFeeds(t testing.TB) (w, r *Replicator) {
	f := openTestFeed(t, nil)
	appendBlocks(t, f, 0, 3)
	return replicator(t, f), replicator(t, openTestFeed(t, &feed.Options{Key: f.Key()}))
}

// TestExtensionPublish: a value published before the channel opens, and
// one published after, both reach the peer; a value replaced reaches it as
// the new one, and a peer that connects later gets only the latest.
func TestExtensionPublish(t *testing.T) {
	rw, rr := extFeeds(t)
	got := handleAll(rr, "presence", "mark")
	value := []byte("before")
	require.NoError(t, rw.Publish("presence", value))
	copy(value, "BEFORE") // Publish keeps its own copy
	sa, sb := sessionPair(t, false, SessionConfig{}, SessionConfig{})
	sa.Replicate(rw)
	sb.Replicate(rr)
	require.Equal(t, extValue{sa.cfg.KeyPair.Public, "presence", []byte("before")}, nextExt(t, got))

	require.NoError(t, rw.Publish("presence", []byte("after")))
	require.Equal(t, "after", string(nextExt(t, got).payload))

	// Replaced in a row: the peer may miss a value replaced before it was
	// sent, but never sees an older value after a newer one, and ends with
	// the newest.
	order := []string{"one", "two", "three"}
	for _, v := range order {
		require.NoError(t, rw.Publish("presence", []byte(v)))
	}
	var seen []string
	for len(seen) == 0 || seen[len(seen)-1] != "three" {
		seen = append(seen, string(nextExt(t, got).payload))
	}
	for k := 1; k < len(seen); k++ {
		require.LessOrEqual(t, slices.Index(order, seen[k-1]), slices.Index(order, seen[k]), "values seen: %q", seen)
	}
	require.NoError(t, rw.Publish("mark", []byte("end")))
	require.Equal(t, "end", string(nextExt(t, got).payload))

	// A third peer, connected now, gets the latest value of each name,
	// once, in the order they were published.
	rw2 := replicator(t, openTestFeed(t, &feed.Options{Key: rw.Feed().Key()}))
	got2 := handleAll(rw2, "presence", "mark")
	sc, sd := sessionPair(t, false, SessionConfig{}, SessionConfig{})
	sc.Replicate(rw)
	sd.Replicate(rw2)
	require.Equal(t, extValue{sc.cfg.KeyPair.Public, "presence", []byte("three")}, nextExt(t, got2))
	require.Equal(t, extValue{sc.cfg.KeyPair.Public, "mark", []byte("end")}, nextExt(t, got2))
	require.NoError(t, rw.Publish("presence", []byte("four")))
	require.Equal(t, "four", string(nextExt(t, got2).payload), "a value sent twice")
}

// TestExtensionOrder: values of several names, published before and after
// the channel opens, reach the peer in the order they were published.
func TestExtensionOrder(t *testing.T) {
	rw, rr := extFeeds(t)
	names := []string{"e", "d", "c", "b", "a"}
	got := handleAll(rr, names...)
	for i, name := range names {
		require.NoError(t, rw.Publish(name, []byte{byte(i)}))
	}
	sa, sb := sessionPair(t, false, SessionConfig{}, SessionConfig{})
	sa.Replicate(rw)
	sb.Replicate(rr)
	for i, name := range names {
		v := nextExt(t, got)
		require.Equal(t, name, v.name)
		require.Equal(t, []byte{byte(i)}, v.payload)
	}
	for i, name := range names {
		require.NoError(t, rw.Publish(name, []byte{byte(10 + i)}))
	}
	var seen []string
	for len(seen) == 0 || seen[len(seen)-1] != names[len(names)-1] {
		v := nextExt(t, got)
		seen = append(seen, v.name)
	}
	// Each name once at most, in order; a value may be left out only by
	// being replaced, which none was.
	require.Equal(t, names, seen)
}

// TestExtensionThreePeers: one peer's value reaches both others, and each
// handler learns which peer a value came from.
func TestExtensionThreePeers(t *testing.T) {
	rw, rb := extFeeds(t)
	rc := replicator(t, openTestFeed(t, &feed.Options{Key: rw.Feed().Key()}))
	// a is connected to b and c, on two sessions sharing rw.
	sab, sba := sessionPair(t, false, SessionConfig{}, SessionConfig{})
	sac, sca := sessionPair(t, false, SessionConfig{}, SessionConfig{})
	atA, atB, atC := handleAll(rw, "hello"), handleAll(rb, "hello"), handleAll(rc, "hello")
	sab.Replicate(rw)
	sac.Replicate(rw)
	sba.Replicate(rb)
	sca.Replicate(rc)

	require.NoError(t, rw.Publish("hello", []byte("from a")))
	require.Equal(t, extValue{sab.cfg.KeyPair.Public, "hello", []byte("from a")}, nextExt(t, atB))
	require.Equal(t, extValue{sac.cfg.KeyPair.Public, "hello", []byte("from a")}, nextExt(t, atC))

	require.NoError(t, rb.Publish("hello", []byte("from b")))
	require.NoError(t, rc.Publish("hello", []byte("from c")))
	fromA := map[PeerKey]string{}
	for range 2 {
		v := nextExt(t, atA)
		fromA[v.from] = string(v.payload)
	}
	require.Equal(t, map[PeerKey]string{sba.cfg.KeyPair.Public: "from b", sca.cfg.KeyPair.Public: "from c"}, fromA)
	// a does not pass on what it hears: what b and c hear next is a's own
	// new value, which a relayed value would have come before.
	require.NoError(t, rw.Publish("hello", []byte("from a, again")))
	require.Equal(t, "from a, again", string(nextExt(t, atB).payload))
	require.Equal(t, "from a, again", string(nextExt(t, atC).payload))
}

// TestExtensionPayloadsKept: the payloads a handler gets are its own, intact
// however many messages come after them.
func TestExtensionPayloadsKept(t *testing.T) {
	const n = 200
	rw, rr := extFeeds(t)
	got := handleAll(rr, "seq")
	sa, sb := sessionPair(t, false, SessionConfig{}, SessionConfig{})
	sa.Replicate(rw)
	sb.Replicate(rr)
	var kept [][]byte
	for i := range n {
		want := bytes.Repeat([]byte{byte(i)}, 1000+i)
		require.NoError(t, rw.Publish("seq", want))
		// Waiting for each value makes every one of them arrive.
		v := nextExt(t, got)
		for !bytes.Equal(v.payload, want) {
			v = nextExt(t, got) // the value published when the channel opened
		}
		kept = append(kept, v.payload)
	}
	for i, p := range kept {
		require.Equal(t, bytes.Repeat([]byte{byte(i)}, 1000+i), p, "payload %d", i)
	}
}

// syncBuffer is a bytes.Buffer safe for a logger and a test to share.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestExtensionUnknownName: a value of an extension the peer has no
// handler for is ignored, with a debug log, and the session carries on.
func TestExtensionUnknownName(t *testing.T) {
	rw, rr := extFeeds(t)
	got := handleAll(rr, "known")
	var log syncBuffer
	logger := slog.New(slog.NewTextHandler(&log, &slog.HandlerOptions{Level: slog.LevelDebug}))
	sa, sb := sessionPair(t, false, SessionConfig{}, SessionConfig{Logger: logger})
	sa.Replicate(rw)
	sb.Replicate(rr)
	require.NoError(t, rw.Publish("unknown/v2", []byte("from the future")))
	require.NoError(t, rw.Publish("known", []byte("hi")))
	require.Equal(t, "hi", string(nextExt(t, got).payload))
	require.Contains(t, log.String(), "name=unknown/v2")

	// A handler removed is no handler.
	rr.HandleExtension("known", nil)
	require.NoError(t, rw.Publish("known", []byte("again")))
	waitFor(t, "the value without a handler logged", func() bool {
		return bytes.Count([]byte(log.String()), []byte("name=known")) == 1
	})
	select {
	case v := <-got:
		t.Fatalf("a removed handler got %q", v.payload)
	default:
	}
	select {
	case <-sb.Done():
		t.Fatalf("the session ended: %v", sb.Err())
	default:
	}
}

// TestExtensionTooLarge: Publish refuses what the peer would refuse, and a
// peer that sends it anyway breaks the protocol.
func TestExtensionTooLarge(t *testing.T) {
	rw, rr := extFeeds(t)
	require.ErrorIs(t, rw.Publish("big", make([]byte, MaxExtensionPayload+1)), ErrExtension)
	require.ErrorIs(t, rw.Publish("", nil), ErrExtension)
	require.ErrorIs(t, rw.Publish(string(make([]byte, MaxExtensionName+1)), nil), ErrExtension)
	require.NoError(t, rw.Publish("fits", make([]byte, MaxExtensionPayload)))

	for _, m := range []*wire.Extension{
		{Channel: 1, Name: "big", Payload: make([]byte, MaxExtensionPayload+1)},
		{Channel: 1, Name: "", Payload: []byte("x")},
	} {
		t.Run(fmt.Sprintf("name %q payload %d", m.Name, len(m.Payload)), func(t *testing.T) {
			got := handleAll(rr, "fits", "big")
			sa, sb := sessionPair(t, false, SessionConfig{}, SessionConfig{})
			sa.Replicate(rw)
			sb.Replicate(rr)
			require.Len(t, nextExt(t, got).payload, MaxExtensionPayload)
			sb.send(m) // as a peer that does not check would
			<-sa.Done()
			require.ErrorIs(t, sa.Err(), ErrProtocol)
		})
	}
}
