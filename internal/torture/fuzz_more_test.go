package torture

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/hyperfeed/hyperfeed/feed"
	"github.com/hyperfeed/hyperfeed/internal/faultfs"
	"github.com/hyperfeed/hyperfeed/merkle"
	"github.com/hyperfeed/hyperfeed/swarm"
)

// batchWorld is a writer of 64 blocks and, on a Mem, a replica that holds
// its head at 40 blocks and every fourth block of them.
type batchWorld struct {
	w    *feed.Feed
	base *faultfs.Mem
}

var batchFuzz = sync.OnceValue(func() *batchWorld {
	w, err := feed.Open("/w", &feed.Options{FS: faultfs.NewMem()})
	if err != nil {
		panic(err)
	}
	if _, err := w.Append(blocksFor(0, 0, 40)...); err != nil {
		panic(err)
	}
	m := faultfs.NewMem()
	r, err := feed.Open("/r", &feed.Options{FS: m, Key: w.Key()})
	if err != nil {
		panic(err)
	}
	for i := uint64(0); i < 40; i += 4 {
		p, d, err := w.Prove(r.BlockRequest(i))
		if err != nil {
			panic(err)
		}
		if err := r.ApplyProof(p, d); err != nil {
			panic(err)
		}
	}
	r.Close()
	if _, err := w.Append(blocksFor(0, 40, 24)...); err != nil {
		panic(err)
	}
	return &batchWorld{w: w, base: m}
})

// errClass names what an ApplyProof error means, for comparing two ways of
// applying the same proofs.
func errClass(err error) string {
	for _, c := range []struct {
		err  error
		name string
	}{{feed.ErrInvalidProof, "invalid"}, {feed.ErrStale, "stale"}, {feed.ErrStaleFork, "stale fork"},
		{feed.ErrNotAvailable, "not available"}, {feed.ErrBlockTooLarge, "too large"}} {
		if errors.Is(err, c.err) {
			return c.name
		}
	}
	if err != nil {
		return "other: " + err.Error()
	}
	return "ok"
}

// FuzzApplyProofsBatch is a differential target: proofs the writer made
// (for blocks and heads the fuzzer picks, some damaged on the way) are
// applied to one copy of a replica as one ApplyProofs batch, with leaves
// hashed ahead by Prepare as a session does, and to another one by one with
// ApplyProof. feed's documentation promises the same result: each proof
// must fare alike, and the replicas must end alike.
//
// The input is records of kind ‖ index ‖ nodes ‖ damage ‖ at: kind 0 asks
// for a block, 1 for a block and the head, 2 for the head; damage 0 leaves
// the proof as it is, 1 flips a byte of the block, 2 of a node's hash, 3
// drops a node, 4 sends another block's bytes, 5 changes the block's
// index, 6 replaces the bytes after Prepare hashed them.
func FuzzApplyProofsBatch(f *testing.F) {
	bw := batchFuzz()
	for _, seed := range [][]byte{
		{0, 1, 64, 0, 0},
		{0, 1, 64, 0, 0, 0, 2, 64, 0, 0, 0, 1, 64, 0, 0},
		{1, 45, 64, 0, 0, 0, 41, 64, 0, 0},
		{2, 0, 0, 0, 0, 0, 50, 64, 0, 0},
		{0, 5, 64, 1, 3, 0, 6, 64, 2, 0, 0, 7, 64, 3, 0},
		{0, 9, 64, 4, 0, 0, 10, 64, 5, 1, 0, 11, 64, 6, 0},
		{0, 13, 1, 0, 0, 0, 14, 2, 0, 0},
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		ma, mb := bw.base.Snapshot(), bw.base.Snapshot()
		a, err := feed.Open("/r", &feed.Options{FS: ma, Key: bw.w.Key()})
		if err != nil {
			t.Fatal(err)
		}
		defer a.Close()
		b, err := feed.Open("/r", &feed.Options{FS: mb, Key: bw.w.Key()})
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close()
		type proof struct {
			p       *merkle.Proof
			data    []byte
			replace []byte // bytes that replace data after Prepare
		}
		var proofs []proof
		for ; len(in) >= 5 && len(proofs) < 32; in = in[5:] {
			kind, index, nodes, dmg, at := in[0]%3, uint64(in[1]%70), uint64(in[2]%65), in[3]%7, int(in[4])
			req := a.UpgradeRequest()
			req.Upgrade = kind != 0
			if kind != 2 {
				req.Block = &feed.BlockRequest{Index: index, Nodes: nodes}
			}
			p, data, err := bw.w.Prove(req)
			if err != nil {
				continue
			}
			pr := proof{p: cloneProof(p), data: slices.Clone(data)}
			bp := pr.p.Block
			switch {
			case dmg == 1 && len(pr.data) > 0:
				pr.data[at%len(pr.data)] ^= 0x40
			case dmg == 2 && bp != nil && len(bp.Nodes) > 0:
				bp.Nodes[at%len(bp.Nodes)].Hash[at%32] ^= 1
			case dmg == 3 && bp != nil && len(bp.Nodes) > 0:
				bp.Nodes = slices.Delete(bp.Nodes, at%len(bp.Nodes), at%len(bp.Nodes)+1)
			case dmg == 4 && bp != nil:
				pr.data = blockFor(0, (bp.Index+1)%64)
			case dmg == 5 && bp != nil:
				bp.Index = (bp.Index + uint64(at%3) + 1) % 70
			case dmg == 6 && bp != nil:
				pr.replace = blockFor(0, uint64(at)%64)
			}
			proofs = append(proofs, pr)
		}
		batch := make([]feed.ProofData, len(proofs))
		for k, pr := range proofs {
			batch[k] = feed.Prepare(cloneProof(pr.p), slices.Clone(pr.data))
			if pr.replace != nil {
				batch[k].Data = slices.Clone(pr.replace) // Prepare's hash is stale now
			}
		}
		errsA := a.ApplyProofs(batch)
		for k, pr := range proofs {
			data := pr.data
			if pr.replace != nil {
				data = pr.replace
			}
			errB := b.ApplyProof(cloneProof(pr.p), slices.Clone(data))
			if ca, cb := errClass(errsA[k]), errClass(errB); ca != cb {
				t.Fatalf("proof %d of %d: in a batch %s (%v), alone %s (%v)", k, len(proofs), ca, errsA[k], cb, errB)
			}
		}
		if fa, fb := fingerprint(t, a), fingerprint(t, b); fa != fb {
			t.Fatalf("the replicas differ: batch %s, one by one %s", fa, fb)
		}
	})
}

func cloneProof(p *merkle.Proof) *merkle.Proof {
	c := &merkle.Proof{Fork: p.Fork}
	if p.Block != nil {
		c.Block = &merkle.BlockProof{Index: p.Block.Index, Nodes: slices.Clone(p.Block.Nodes)}
	}
	if p.Upgrade != nil {
		u := *p.Upgrade
		u.Nodes, u.Signature = slices.Clone(u.Nodes), slices.Clone(u.Signature)
		c.Upgrade = &u
	}
	return c
}

// FuzzParseKeys parses text as every kind of key: what parses must print
// back as the same hex (in lower case) and parse again to the same key.
func FuzzParseKeys(f *testing.F) {
	f.Add(strings.Repeat("ab", 32))
	f.Add(strings.Repeat("AB", 32))
	f.Add(strings.Repeat("g", 64))
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		check := func(what string, printed string, err error, again func(string) (string, error)) {
			if err != nil {
				return
			}
			if !strings.EqualFold(printed, s) || printed != strings.ToLower(printed) {
				t.Fatalf("%s %q printed as %q", what, s, printed)
			}
			if p2, err := again(printed); err != nil || p2 != printed {
				t.Fatalf("%s %q does not parse back: %q, %v", what, printed, p2, err)
			}
		}
		k, err := feed.ParseKey(s)
		check("key", k.String(), err, func(x string) (string, error) { k, err := feed.ParseKey(x); return k.String(), err })
		var dk feed.DiscoveryKey
		err = dk.UnmarshalText([]byte(s))
		check("discovery key", dk.String(), err, func(x string) (string, error) {
			var d feed.DiscoveryKey
			err := d.UnmarshalText([]byte(x))
			return d.String(), err
		})
		var pk swarm.PeerKey
		err = pk.UnmarshalText([]byte(s))
		check("peer key", pk.String(), err, func(x string) (string, error) {
			var p swarm.PeerKey
			err := p.UnmarshalText([]byte(x))
			return p.String(), err
		})
		var tp swarm.Topic
		err = tp.UnmarshalText([]byte(s))
		check("topic", tp.String(), err, func(x string) (string, error) {
			var p swarm.Topic
			err := p.UnmarshalText([]byte(x))
			return p.String(), err
		})
	})
}

// storeWorld is a store on a Mem holding one named feed.
var storeFuzz = sync.OnceValue(func() *faultfs.Mem {
	m := faultfs.NewMem()
	st, err := feed.OpenStore("/s", &feed.StoreOptions{FS: m})
	if err != nil {
		panic(err)
	}
	f, err := st.Named("log")
	if err != nil {
		panic(err)
	}
	if _, err := f.Append(blocksFor(0, 0, 3)...); err != nil {
		panic(err)
	}
	st.Close()
	return m
})

// FuzzStoreFiles replaces a store's small files (its primary seed, a named
// feed's name) and a swarm's key pair file with arbitrary bytes: opening
// them may fail, never panic, and a named feed found must be the one its
// name and the seed derive.
func FuzzStoreFiles(f *testing.F) {
	base := storeFuzz()
	var nameFile string
	for _, n := range base.Files() {
		if filepath.Base(n) == "name" {
			nameFile = n
		}
	}
	seed, _ := base.ReadFile("/s/seed")
	f.Add(seed, []byte("log"), bytes.Repeat([]byte{1}, 32))
	f.Add([]byte{}, []byte{}, []byte{})
	f.Add(bytes.Repeat([]byte{0}, 33), []byte("\xff\xfe"), bytes.Repeat([]byte{0}, 31))
	f.Add(seed, bytes.Repeat([]byte("x"), 300), []byte("not a key"))
	f.Fuzz(func(t *testing.T, seed, name, keyFile []byte) {
		m := base.Snapshot()
		m.WriteFile("/s/seed", seed)
		m.WriteFile(nameFile, name)
		st, err := feed.OpenStore("/s", &feed.StoreOptions{FS: m})
		if err == nil {
			dks, err := st.List()
			if err != nil {
				t.Fatalf("List: %v", err)
			}
			for _, dk := range dks {
				if f, err := st.Find(dk); err == nil {
					if f.Writable() {
						// Only the key the name derives can have opened it.
						sk, err := st.NamedKey(string(name))
						if err != nil || feed.KeyOf(sk) != f.Key() {
							t.Fatalf("a writable feed whose name %q does not derive its key (%v)", name, err)
						}
					}
				}
			}
			st.Close()
		}
		file := filepath.Join(t.TempDir(), "peer.key")
		if err := os.WriteFile(file, keyFile, 0o600); err != nil {
			t.Fatal(err)
		}
		kp, err := swarm.LoadOrCreateKeyPair(file)
		if (err == nil) != (len(keyFile) == 32) {
			t.Fatalf("a key pair file of %d bytes: %v", len(keyFile), err)
		}
		if err == nil && !bytes.Equal(kp.Private[:], keyFile) {
			t.Fatalf("the key pair is not the file's")
		}
	})
}
