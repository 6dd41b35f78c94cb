// Command feeddemo shows what a feed does, on defaults and with no network:
// a writer appends to a signed feed, a replica copies it through proofs,
// a tampered proof is refused, and a truncation reaches the replica as a new
// fork. Everything lives in a temporary directory that is removed at the end.
//
//	go run ./examples/feeddemo
package main

import (
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"time"

	"github.com/hyperfeed/hyperfeed/feed"
)

func main() {
	log.SetFlags(0)
	if err := run(); err != nil {
		log.Fatal("feeddemo: ", err)
	}
}

func run() error {
	tmp, err := os.MkdirTemp("", "hyperfeed-feeddemo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	ctx := context.Background()

	w, err := feed.Open(filepath.Join(tmp, "writer"), nil)
	if err != nil {
		return err
	}
	defer w.Close()
	fmt.Printf("writer   key %s\n         discovery key %s\n", w.Key(), w.DiscoveryKey())

	const n = 10000
	start := time.Now()
	batch := make([][]byte, 0, 1000)
	for i := range n {
		batch = append(batch, fmt.Appendf(nil, "entry %05d: %s", i, time.Now().Format(time.RFC3339Nano)))
		if len(batch) == cap(batch) {
			if _, err := w.Append(batch...); err != nil {
				return err
			}
			batch = batch[:0]
		}
	}
	fmt.Printf("appended %d blocks (%d bytes) in %v, one signature per 1,000\n", w.Len(), w.ByteLen(), time.Since(start).Round(time.Millisecond))

	r, err := feed.Open(filepath.Join(tmp, "replica"), &feed.Options{Key: w.Key()})
	if err != nil {
		return err
	}
	defer r.Close()
	start = time.Now()
	for i := range w.Len() {
		proof, data, err := w.Prove(r.BlockRequest(i))
		if err != nil {
			return err
		}
		if err := r.ApplyProof(proof, data); err != nil {
			return err
		}
	}
	fmt.Printf("replica  verified and stored %d blocks in %v\n", r.Downloaded(), time.Since(start).Round(time.Millisecond))
	if err := r.Verify(ctx); err != nil {
		return err
	}
	last, err := r.Get(ctx, r.Len()-1)
	if err != nil {
		return err
	}
	fmt.Printf("replica  block %d: %q\n", r.Len()-1, last)

	// A peer that alters a block is caught, and nothing it sent is kept.
	if _, err := w.Append([]byte("the real next entry")); err != nil {
		return err
	}
	proof, data, err := w.Prove(r.BlockRequest(w.Len() - 1))
	if err != nil {
		return err
	}
	err = r.ApplyProof(proof, []byte("a forged next entry"))
	fmt.Printf("tampered block refused: %v\n", err)
	if err := r.ApplyProof(proof, data); err != nil {
		return err
	}

	// Truncation starts a new fork; the replica follows and drops the rest.
	if err := w.Truncate(5000); err != nil {
		return err
	}
	if _, err := w.Append([]byte("fork 1 begins here")); err != nil {
		return err
	}
	proof, data, err = w.Prove(r.UpgradeRequest())
	if err != nil {
		return err
	}
	if err := r.ApplyProof(proof, data); err != nil {
		return err
	}
	fmt.Printf("writer truncated to 5000 and appended: replica now at fork %d, length %d, holding %d blocks\n", r.Fork(), r.Len(), r.Downloaded())
	if r.Head().TreeHash != w.Head().TreeHash {
		return fmt.Errorf("replica head differs from the writer's")
	}
	fmt.Println("replica and writer agree on the signed head: ok")
	return nil
}
