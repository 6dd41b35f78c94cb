package torture

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/hyperfeed/hyperfeed/feed"
	"github.com/hyperfeed/hyperfeed/internal/faultfs"
	"github.com/hyperfeed/hyperfeed/internal/memnet"
	"github.com/hyperfeed/hyperfeed/internal/noiseconn"
	"github.com/hyperfeed/hyperfeed/internal/wire"
	"github.com/hyperfeed/hyperfeed/swarm"
)

// The packages' own fuzzers take each decoder apart (merkle proofs, header
// slots, bitfield pages, wire frames, Noise frames). These put them back
// together: a whole feed directory damaged at random, the Noise handshake,
// and a session's message stream.

// damageWorld is a writer (with a fork behind it) and a sparse replica of
// it on a Mem, and the truth of every block.
type damageWorld struct {
	base  *faultfs.Mem
	key   feed.Key
	truth [][]byte // the writer's blocks
}

var damage = sync.OnceValue(func() *damageWorld {
	m := faultfs.NewMem()
	w, err := feed.Open("/w", &feed.Options{FS: m})
	if err != nil {
		panic(err)
	}
	h := history{}
	for _, o := range []op{{n: 30}, {truncate: true, length: 24}, {n: 16}} {
		if err := o.do(w, h); err != nil {
			panic(err)
		}
		h = h.apply(o)
	}
	r, err := feed.Open("/r", &feed.Options{FS: m, Key: w.Key()})
	if err != nil {
		panic(err)
	}
	for i := uint64(0); i < w.Len(); i += 3 {
		p, d, err := w.Prove(r.BlockRequest(i))
		if err != nil {
			panic(err)
		}
		if err := r.ApplyProof(p, d); err != nil {
			panic(err)
		}
	}
	dw := &damageWorld{base: m, key: w.Key()}
	for i := range w.Len() {
		dw.truth = append(dw.truth, blockFor(h.tags[i], i))
	}
	w.Close()
	r.Close()
	return dw
})

var damageFiles = []string{"/w/header", "/w/tree", "/w/data", "/w/index", "/w/bitfield", "/w/secret",
	"/r/header", "/r/tree", "/r/data", "/r/index", "/r/bitfield"}

// applyDamage reads the input as damage: records of
// file (1 byte) ‖ kind (1 byte) ‖ offset (u16le) ‖ n (1 byte) ‖ n bytes,
// where kind 0 overwrites at the offset, 1 XORs, 2 truncates the file to
// the offset and 3 appends.
func applyDamage(m *faultfs.Mem, in []byte) {
	for len(in) >= 5 {
		name := damageFiles[int(in[0])%len(damageFiles)]
		kind, off, n := in[1]%4, int(binary.LittleEndian.Uint16(in[2:])), int(in[4])
		in = in[5:]
		data := in[:min(n, len(in))]
		in = in[len(data):]
		b, _ := m.ReadFile(name)
		switch kind {
		case 0, 1:
			if off > len(b) {
				off = len(b)
			}
			if end := off + len(data); end > len(b) {
				b = append(b, make([]byte, end-len(b))...)
			}
			for k, x := range data {
				if kind == 0 {
					b[off+k] = x
				} else {
					b[off+k] ^= x
				}
			}
		case 2:
			b = b[:min(off, len(b))]
		case 3:
			b = append(b, data...)
		}
		m.WriteFile(name, b)
	}
}

// FuzzOpenDamaged damages a writer's and a replica's files at random and
// opens them. Open may refuse, with ErrCorrupt (or ErrNotFound, for a
// header it cannot read at all); whatever opens must never return a block
// that is not the writer's, and a feed that Verify passes must return
// every block it says it holds.
func FuzzOpenDamaged(f *testing.F) {
	dw := damage()
	f.Add([]byte{})
	for file := range damageFiles {
		for _, kind := range []byte{0, 1, 2, 3} {
			f.Add([]byte{byte(file), kind, 40, 0, 4, 0xff, 0x00, 0x5a, 0xa5})
			f.Add([]byte{byte(file), kind, 0, 2, 1, 0x80})
		}
	}
	f.Add([]byte{0, 1, 16, 0, 1, 1, 0, 1, 0, 2, 1, 1}) // both header slots' sequence numbers
	f.Fuzz(func(t *testing.T, in []byte) {
		m := dw.base.Snapshot()
		applyDamage(m, in)
		for _, dir := range []string{"/w", "/r"} {
			o := &feed.Options{FS: m, MustExist: true}
			if dir == "/r" {
				o.Key = dw.key
			}
			f, err := feed.Open(dir, o)
			if err != nil {
				if !errors.Is(err, feed.ErrCorrupt) && !errors.Is(err, feed.ErrNotFound) && !errors.Is(err, feed.ErrKeyMismatch) {
					t.Fatalf("%s: Open refused with an error that is not ErrCorrupt: %v", dir, err)
				}
				continue
			}
			verr := f.Verify(context.Background())
			for i := range f.Len() {
				if !f.Has(i) {
					continue
				}
				b, err := f.Get(context.Background(), i)
				if err != nil {
					if verr == nil {
						t.Fatalf("%s: Verify passed, but block %d: %v", dir, i, err)
					}
					if !errors.Is(err, feed.ErrCorrupt) {
						t.Fatalf("%s: block %d: %v", dir, i, err)
					}
					continue
				}
				if i >= uint64(len(dw.truth)) || !bytes.Equal(b, dw.truth[i]) {
					t.Fatalf("%s: block %d returned as good is not the writer's", dir, i)
				}
			}
			if verr == nil && f.Len() > uint64(len(dw.truth)) {
				t.Fatalf("%s: Verify passed a head of %d blocks; the writer wrote %d", dir, f.Len(), len(dw.truth))
			}
			f.Close()
		}
	})
}

// FuzzHandshake feeds arbitrary bytes to either side of the Noise
// handshake, with and without a network secret: it must fail (no one can
// complete it without the keys), in time, and never panic.
func FuzzHandshake(f *testing.F) {
	kp, err := noiseconn.GenerateKeyPair()
	if err != nil {
		f.Fatal(err)
	}
	// A real first message: a frame of 32 bytes (an ephemeral key).
	first := append([]byte{32, 0, 0}, bytes.Repeat([]byte{9}, 32)...)
	f.Add(first, false, false)
	f.Add(first, false, true)
	f.Add(append(first, 48, 0, 0), true, false)
	f.Add([]byte{0xff, 0xff, 0xff}, true, true)
	f.Add([]byte{}, false, false)
	secret := bytes.Repeat([]byte{7}, 32)
	f.Fuzz(func(t *testing.T, in []byte, initiator, withSecret bool) {
		n := memnet.New(memnet.Config{})
		ln, err := n.Listen("a:1")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		ours, err := n.Dial(context.Background(), "b", "a:1")
		if err != nil {
			t.Fatal(err)
		}
		theirs, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		// The bytes, then the end of the stream: the handshake fails at
		// once rather than waiting for more.
		var wg sync.WaitGroup
		wg.Go(func() {
			theirs.Write(in)
			theirs.Close()
		})
		cfg := noiseconn.Config{KeyPair: kp}
		if withSecret {
			cfg.Secret = secret
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		c, err := noiseconn.Handshake(ctx, ours, initiator, cfg)
		if err == nil {
			c.Close()
			t.Fatalf("a handshake completed with a peer of arbitrary bytes")
		}
		if ctx.Err() != nil {
			t.Fatalf("the handshake hung on a stream that had ended: %v", err)
		}
		ours.Close()
		theirs.Close()
		wg.Wait()
	})
}

// sessionWorld is a writer and what the honest session in FuzzSession
// replicates.
type sessionWorld struct {
	w    *feed.Feed
	base *faultfs.Mem // a replica holding every third block
}

var sessionFuzz = sync.OnceValue(func() *sessionWorld {
	m := faultfs.NewMem()
	w, err := feed.Open("/w", &feed.Options{FS: faultfs.NewMem()})
	if err != nil {
		panic(err)
	}
	if _, err := w.Append(blocksFor(0, 0, 40)...); err != nil {
		panic(err)
	}
	r, err := feed.Open("/r", &feed.Options{FS: m, Key: w.Key()})
	if err != nil {
		panic(err)
	}
	for i := uint64(0); i < 40; i += 3 {
		p, d, err := w.Prove(r.BlockRequest(i))
		if err != nil {
			panic(err)
		}
		if err := r.ApplyProof(p, d); err != nil {
			panic(err)
		}
	}
	r.Close()
	return &sessionWorld{w: w, base: m}
})

// encode writes messages as a peer would, without validating them.
func encode(ms ...wire.Message) []byte {
	var b bytes.Buffer
	w := wire.NewWriter(&b)
	for _, m := range ms {
		w.Write(m)
	}
	w.Flush()
	return b.Bytes()
}

// FuzzSession sends an arbitrary message stream to an honest session
// replicating a replica of a writer: an Open whose capability is all zeros
// gets the right capability for the writer's feed, so that the fuzzer
// reaches the open channel; everything else goes as it is, and what does
// not decode goes raw. The session may end (its peer broke the protocol)
// or not, but it must not panic or hang, and the replica must hold
// nothing the writer did not sign.
func FuzzSession(f *testing.F) {
	sw := sessionFuzz()
	dk := sw.w.DiscoveryKey()
	open := &wire.Open{Channel: 1, DiscoveryKey: dk[:], Capability: make([]byte, 32)}
	p, d, err := sw.w.Prove(feed.Request{Upgrade: true, Block: &feed.BlockRequest{Index: 1, Nodes: 64}})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(encode(open, &wire.Sync{Channel: 1, Length: 40}, &wire.Range{Channel: 1, Length: 40}))
	f.Add(encode(open, &wire.Sync{Channel: 1, Length: 40}, &wire.Range{Channel: 1, Length: 40}, wire.DataFrom(1, 1, p, d)))
	f.Add(encode(open, &wire.Request{Channel: 1, ID: 1, Length: 40, Block: &wire.BlockRequest{Index: 3}}))
	f.Add(encode(open, &wire.Bitfield{Channel: 1, Bits: []byte{0xff, 0x0f}}, &wire.Close{Channel: 1}, open))
	f.Add(encode(&wire.Ping{Nonce: 1}, &wire.Extension{Channel: 1, Name: "x", Payload: []byte("y")}))
	f.Add([]byte{1, 0, 0, 0, 99})
	f.Fuzz(func(t *testing.T, in []byte) {
		m := sw.base.Snapshot()
		r, err := feed.Open("/r", &feed.Options{FS: m, Key: sw.w.Key()})
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		rr := swarm.NewReplicator(r)
		defer rr.Close()
		rr.Download(0, swarm.Live)
		ca, cb := net.Pipe()
		type res struct {
			s   *swarm.Session
			err error
		}
		ch := make(chan res, 1)
		go func() {
			s, err := swarm.NewSession(context.Background(), cb, false, swarm.SessionConfig{KeyPair: mustKeyPair(), KeepAlive: time.Second})
			ch <- res{s, err}
		}()
		kp, _ := noiseconn.GenerateKeyPair()
		nc, err := noiseconn.Handshake(context.Background(), ca, true, noiseconn.Config{KeyPair: kp})
		sr := <-ch
		if err != nil || sr.err != nil {
			t.Fatal(err, sr.err)
		}
		s := sr.s
		defer s.Close()
		s.Replicate(rr)
		// Read what the session says, so that it never blocks, until the
		// Pong to the last Ping (or the end).
		pong := make(chan struct{})
		var wg sync.WaitGroup
		defer wg.Wait()
		defer nc.Close()
		wg.Go(func() {
			defer io.Copy(io.Discard, nc)
			rd := wire.NewReader(nc)
			for {
				m, err := rd.Read()
				if err != nil {
					return
				}
				if p, ok := m.(*wire.Pong); ok && p.Nonce == 0x5eed {
					close(pong)
					return
				}
			}
		})

		// Frame by frame (u32le length ‖ type ‖ body): an Open for the
		// writer's feed with a zero capability gets the right one; the rest
		// goes as it is, and from the first frame that does not parse, raw.
		var out bytes.Buffer
		raw := false
		for rest := in; len(rest) > 0; {
			if n := uint64(0); len(rest) >= 4 {
				n = uint64(binary.LittleEndian.Uint32(rest))
				if n > 0 && n <= uint64(len(rest)-4) {
					frame := rest[:4+n]
					rest = rest[4+n:]
					msg, err := wire.NewReader(bytes.NewReader(frame)).Read()
					if o, ok := msg.(*wire.Open); err == nil && ok && bytes.Equal(o.DiscoveryKey, dk[:]) && bytes.Equal(o.Capability, make([]byte, 32)) {
						o.Capability = capabilityFor(nc.ChannelBinding(), true, sw.w.Key())
						frame = encode(o)
					}
					out.Write(frame)
					continue
				}
			}
			out.Write(rest)
			raw = true
			break
		}
		if !raw {
			// A Ping last: its Pong says the session handled everything.
			out.Write(encode(&wire.Ping{Nonce: 0x5eed}))
		}
		wrote := make(chan struct{})
		go func() {
			defer close(wrote)
			nc.Write(out.Bytes())
			if raw {
				nc.Close() // a frame cut short: the stream ends there
			}
		}()
		timer := time.NewTimer(2 * time.Second)
		defer timer.Stop()
		select {
		case <-s.Done():
		case <-pong:
		case <-timer.C:
			t.Fatalf("the session neither answered nor ended in 2 s")
		}
		s.Close()
		<-s.Done()
		nc.Close()
		<-wrote
		if err := r.Verify(context.Background()); err != nil {
			t.Fatalf("the replica fails Verify: %v", err)
		}
		if r.Len() > 0 {
			if h := r.Head(); h.Fork != 0 || h.Length > 40 {
				t.Fatalf("the replica took a head the writer never signed: %+v", h)
			}
		}
		for i := range r.Len() {
			if !r.Has(i) {
				continue
			}
			b, err := r.Get(context.Background(), i)
			if err != nil || !bytes.Equal(b, blockFor(0, i)) {
				t.Fatalf("block %d is not the writer's (%v)", i, err)
			}
		}
	})
}
