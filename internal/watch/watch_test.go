package watch_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/hyperfeed/hyperfeed/internal/watch"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// start runs q into a new channel until ctx or owner ends; the returned
// channel is closed when Run has returned.
func start(ctx, owner context.Context, q *watch.Queue[int]) (<-chan int, <-chan struct{}) {
	out := make(chan int)
	done := make(chan struct{})
	go func() {
		defer close(done)
		q.Run(ctx, owner, out)
	}()
	return out, done
}

func requireDone(t *testing.T, done <-chan struct{}) {
	t.Helper()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return")
	}
}

// TestQueueKeepsOrder: items queued before Run starts, while it runs, and
// in batches or one by one all arrive once, in the order Add took them.
func TestQueueKeepsOrder(t *testing.T) {
	q := watch.NewQueue[int]()
	q.Add(0, 1, 2)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out, done := start(ctx, context.Background(), q)
	for i := 3; i < 100; i++ {
		q.Add(i)
	}
	q.Add(100, 101)
	for i := range 102 {
		require.Equal(t, i, <-out)
	}
	select {
	case v := <-out:
		t.Fatalf("unexpected item %d", v)
	case <-time.After(10 * time.Millisecond):
	}
	cancel()
	requireDone(t, done)
}

// TestQueueSlowReader: a reader that falls far behind a writer that never
// waits for it still gets every item, in order.
func TestQueueSlowReader(t *testing.T) {
	const n = 10000
	q := watch.NewQueue[int]()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out, done := start(ctx, context.Background(), q)
	added := make(chan struct{})
	go func() {
		defer close(added)
		for i := range n {
			q.Add(i)
		}
	}()
	for i := range n {
		if i%1000 == 0 {
			time.Sleep(time.Millisecond) // let the writer run ahead
		}
		require.Equal(t, i, <-out)
	}
	<-added
	cancel()
	requireDone(t, done)
}

// TestQueueRunEnds: Run returns when the caller's context ends and when
// the owner's does, whether it is waiting for items or for the reader.
func TestQueueRunEnds(t *testing.T) {
	for _, name := range []string{"ctx", "owner"} {
		for _, pending := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/pending=%v", name, pending), func(t *testing.T) {
				ctx, cancelCtx := context.WithCancel(context.Background())
				defer cancelCtx()
				owner, cancelOwner := context.WithCancel(context.Background())
				defer cancelOwner()
				q := watch.NewQueue[int]()
				if pending {
					q.Add(1, 2, 3) // nobody reads: Run waits on the send
				}
				_, done := start(ctx, owner, q)
				if name == "ctx" {
					cancelCtx()
				} else {
					cancelOwner()
				}
				requireDone(t, done)
			})
		}
	}
}

func ExampleQueue() {
	owner, closeOwner := context.WithCancel(context.Background())
	q := watch.NewQueue[string]()
	out := make(chan string)
	go func() {
		defer close(out)
		q.Run(context.Background(), owner, out)
	}()

	q.Add("up", "down")
	q.Add("up")
	for range 3 {
		fmt.Println(<-out)
	}
	closeOwner()
	_, open := <-out
	fmt.Println("open:", open)
	// Output:
	// up
	// down
	// up
	// open: false
}
