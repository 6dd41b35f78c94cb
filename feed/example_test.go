package feed_test

import (
	"context"
	"fmt"
	"log"
	"os"

	"github.com/hyperfeed/hyperfeed/feed"
)

func Example() {
	dir, _ := os.MkdirTemp("", "feed-example")
	defer os.RemoveAll(dir)

	f, err := feed.Open(dir, nil) // a new writable feed with a fresh key pair
	if err != nil {
		log.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Append([]byte("hello"), []byte("world")); err != nil {
		log.Fatal(err)
	}
	b, err := f.Get(context.Background(), 1)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%d blocks, block 1 is %q\n", f.Len(), b)
	// Output: 2 blocks, block 1 is "world"
}

// A replica takes blocks only through proofs; here the writer answers its
// requests directly, where package swarm would carry them over the network.
func ExampleFeed_ApplyProof() {
	wdir, _ := os.MkdirTemp("", "writer")
	rdir, _ := os.MkdirTemp("", "replica")
	defer os.RemoveAll(wdir)
	defer os.RemoveAll(rdir)

	w, _ := feed.Open(wdir, nil)
	defer w.Close()
	w.Append([]byte("a"), []byte("b"), []byte("c"))

	r, _ := feed.Open(rdir, &feed.Options{Key: w.Key()})
	defer r.Close()
	for i := range w.Len() {
		proof, data, err := w.Prove(r.BlockRequest(i))
		if err != nil {
			log.Fatal(err)
		}
		if err := r.ApplyProof(proof, data); err != nil {
			log.Fatal(err)
		}
	}
	b, _ := r.Get(context.Background(), 2)
	fmt.Println(r.Len(), string(b), r.Head().TreeHash == w.Head().TreeHash)
	// Output: 3 c true
}

func ExampleStore() {
	root, _ := os.MkdirTemp("", "store")
	defer os.RemoveAll(root)

	s, _ := feed.OpenStore(root, nil)
	log1, _ := s.Named("log") // writable; its key derives from the store's seed
	log1.Append([]byte("entry"))
	key := log1.Key()
	s.Close()

	s, _ = feed.OpenStore(root, nil) // a restart finds it again
	defer s.Close()
	log2, _ := s.Named("log")
	fmt.Println(log2.Key() == key, log2.Len(), log2.Writable())
	// Output: true 1 true
}
