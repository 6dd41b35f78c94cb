package feed

import (
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"

	"github.com/hyperfeed/hyperfeed/merkle"
)

// Request is what a replica asks a peer to prove. Build it with
// BlockRequest or UpgradeRequest on the replica, answer it with Prove on the
// peer, and give the answer to ApplyProof on the replica.
type Request struct {
	Fork   uint64 // the requester's fork
	Length uint64 // the requester's length
	// Block asks for one block and the Nodes lowest siblings of its path:
	// the requester trusts the node above them.
	Block *BlockRequest
	// Upgrade asks for the prover's signed head, proved from the requester's
	// length (or, across a fork, from the longest prefix they share).
	Upgrade bool
}

// BlockRequest names a block and how much of its proof path the requester
// lacks.
type BlockRequest struct {
	Index uint64
	Nodes uint64
}

// UpgradeRequest returns a request for the newest signed head a peer has.
func (f *Feed) UpgradeRequest() Request {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return Request{Fork: f.tip.Fork, Length: f.tip.Length, Upgrade: true}
}

// BlockRequest returns a request for block i, with an upgrade when i is past
// this feed's length.
func (f *Feed) BlockRequest(i uint64) Request {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.blockRequestLocked(i, nil)
}

// BlockRequests returns the BlockRequest of each block. Blocks close
// together, as a download claims them, cost one read of the tree between
// them rather than a few reads each.
func (f *Feed) BlockRequests(blocks []uint64) []Request {
	f.mu.RLock()
	defer f.mu.RUnlock()
	tree := f.treeUnderLocked(blocks)
	out := make([]Request, len(blocks))
	for k, i := range blocks {
		out[k] = f.blockRequestLocked(i, tree)
	}
	return out
}

func (f *Feed) blockRequestLocked(i uint64, tree *prefetch) Request {
	r := Request{Fork: f.tip.Fork, Length: f.tip.Length, Upgrade: i >= f.tip.Length}
	// Climb from the leaf until a node this feed already trusts: the proof
	// needs only the siblings below it. Without one, ask for the whole path
	// and let the prover stop at its root. A node the disk fails to read is
	// not trusted: the request asks for more, and ApplyProof meets the
	// failure again.
	nodes := uint64(0)
	for n := merkle.LeafIndex(i); nodes < 64; n = merkle.Parent(n) {
		if _, ok, err := f.trustedFrom(n, tree); ok && err == nil {
			break
		}
		nodes++
	}
	r.Block = &BlockRequest{Index: i, Nodes: nodes}
	return r
}

// maxTreeUnder bounds the tree BlockRequests reads at once, in blocks.
const maxTreeUnder = 8192

// treeUnderLocked reads the part of the tree file under the span of blocks,
// or returns nil if the span is too wide or the read fails (every lookup
// then reads on its own).
func (f *Feed) treeUnderLocked(blocks []uint64) *prefetch {
	if len(blocks) < 2 || f.closed {
		return nil
	}
	first, last := slices.Min(blocks), slices.Max(blocks)
	if last-first >= maxTreeUnder || last >= merkle.MaxLength {
		return nil
	}
	tree := &prefetch{first: first, end: last + 1, tree: make([]byte, (2*(last-first)+1)*nodeSize)}
	// Past the end of the file, nodes are absent: zeros, as read.
	if _, err := f.files.tree.ReadAt(tree.tree, int64(2*first)*nodeSize); err != nil && err != io.EOF {
		return nil
	}
	return tree
}

// Prove answers a peer's request from this feed's signed head. It returns the
// proof and, when a block was asked for, its data. A request from an older
// fork gets only an upgrade, from the longest prefix both histories share:
// the requester must ask again for blocks once it has moved to this fork.
func (f *Feed) Prove(req Request) (*merkle.Proof, []byte, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.proveLocked(req, nil)
}

func (f *Feed) proveLocked(req Request, pf *prefetch) (*merkle.Proof, []byte, error) {
	if f.closed {
		return nil, nil, fmt.Errorf("feed: prove: %w", ErrClosed)
	}
	h := &f.head
	if req.Fork > h.Fork {
		return nil, nil, fmt.Errorf("feed: prove: %w: requester is at fork %d, this feed at %d", ErrNotAvailable, req.Fork, h.Fork)
	}
	p := &merkle.Proof{Fork: h.Fork}
	start := h.commonLength(req.Fork, req.Length)
	if req.Upgrade || req.Fork != h.Fork {
		if req.Fork == h.Fork && req.Length >= h.Length {
			if req.Block == nil {
				return nil, nil, fmt.Errorf("feed: prove: %w: requester's length %d is not behind %d", ErrNotAvailable, req.Length, h.Length)
			}
		} else {
			u, err := f.proveUpgrade(start)
			if err != nil {
				return nil, nil, fmt.Errorf("feed: prove: %w", err)
			}
			p.Upgrade = u
		}
	}
	if req.Fork != h.Fork || req.Block == nil {
		return p, nil, nil
	}
	b, data, err := f.proveBlock(req.Block, pf)
	if err != nil {
		return nil, nil, fmt.Errorf("feed: prove: %w", err)
	}
	p.Block = b
	return p, data, nil
}

func (f *Feed) proveUpgrade(start uint64) (*merkle.UpgradeProof, error) {
	if len(f.head.Signature) == 0 {
		return nil, fmt.Errorf("%w: no signed head", ErrNotAvailable)
	}
	u := &merkle.UpgradeProof{Start: start, Length: f.head.Length, Signature: slices.Clone(f.head.Signature)}
	// A replica may lack these nodes, or hold one a write left torn; it
	// then has no upgrade to give. A writer lacks none.
	for _, i := range merkle.UpgradeNodes(start, f.head.Length) {
		n, ok, err := f.storedNode(i)
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, fmt.Errorf("%w: node %d", ErrNotAvailable, i)
		}
		u.Nodes = append(u.Nodes, n)
	}
	// Check the proof against this feed's own roots, so that a damaged node
	// is reported here rather than sent.
	t := trust{f: f}
	startRoots, err := merkle.RootsFrom(start, t.stored)
	if t.err != nil {
		return nil, t.err
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNotAvailable, err)
	}
	roots, _, err := u.Rebuild(startRoots)
	if err != nil || !slices.Equal(roots, f.roots) {
		return nil, fmt.Errorf("%w: stored nodes do not rebuild the head from length %d", ErrCorrupt, start)
	}
	return u, nil
}

func (f *Feed) proveBlock(req *BlockRequest, pf *prefetch) (*merkle.BlockProof, []byte, error) {
	i := req.Index
	if i >= f.head.Length {
		return nil, nil, fmt.Errorf("block %d: %w: length is %d", i, ErrOutOfRange, f.head.Length)
	}
	if !f.has(i) {
		return nil, nil, fmt.Errorf("block %d: %w", i, ErrNotAvailable)
	}
	// The block's checksum, not its hash, guards against sending damage:
	// it costs a fraction as much, and the requester hashes the block anyway.
	data, cur, err := f.readBlockFrom(i, pf, false)
	if err != nil {
		return nil, nil, err
	}
	// The path ends at the requester's trusted node or at a root of this
	// head, whichever comes first. Climbing it here as well checks the nodes
	// against the stored node at the top, so damage is reported, not sent.
	// Within one ProveMany, a climb that reaches a node an earlier climb
	// computed, with the same value, need hash no further: the earlier climb
	// went on with the same siblings and met the stored node at its top.
	b := &merkle.BlockProof{Index: i}
	roots := merkle.Roots(f.head.Length)
	matched := false // cur is a node an earlier climb checked
	var climbed []merkle.Node
	for uint64(len(b.Nodes)) < req.Nodes && !slices.Contains(roots, cur.Index) {
		s, err := f.nodeFrom(merkle.Sibling(cur.Index), pf)
		if err != nil {
			return nil, nil, err
		}
		b.Nodes = append(b.Nodes, s)
		known, ok := pf.checked(merkle.Parent(cur.Index))
		if !ok || !matched {
			if merkle.IsLeft(cur.Index) {
				cur = merkle.ParentOf(cur, s)
			} else {
				cur = merkle.ParentOf(s, cur)
			}
		}
		switch {
		case !ok:
			matched = false
			climbed = append(climbed, cur)
		case matched || known == cur:
			cur, matched = known, true
		default:
			return nil, nil, fmt.Errorf("%w: proof path of block %d does not match node %d as another proof found it", ErrCorrupt, i, cur.Index)
		}
	}
	if len(b.Nodes) > 0 && !matched {
		top, err := f.nodeFrom(cur.Index, pf)
		if errors.Is(err, ErrNotAvailable) || err == nil && top != cur {
			return nil, nil, fmt.Errorf("%w: proof path of block %d does not match stored node %d", ErrCorrupt, i, cur.Index)
		}
		if err != nil {
			return nil, nil, err
		}
	}
	pf.check(climbed)
	return b, data, nil
}

// nodeFrom is nodeLocked taking the node from pf when it holds it.
func (f *Feed) nodeFrom(i uint64, pf *prefetch) (merkle.Node, error) {
	if !pf.holds(i) {
		return f.nodeLocked(i)
	}
	n, err := pf.node(i)
	if err == nil && n.IsZero() {
		err = fmt.Errorf("%w: node %d", ErrNotAvailable, i)
	}
	return n, err
}

// nodeLocked reads stored node i of the head's tree, which the caller
// needs: a record that fails its checksum is ErrCorrupt, an absent node
// ErrNotAvailable.
func (f *Feed) nodeLocked(i uint64) (merkle.Node, error) {
	n, err := f.readNode(i)
	if err != nil {
		return n, err
	}
	if n.IsZero() {
		return n, fmt.Errorf("%w: node %d", ErrNotAvailable, i)
	}
	return n, nil
}

// ApplyProof verifies a peer's proof, with the block's data when it proves
// one, and stores what it establishes: a new signed head, the block, and the
// tree nodes on the way. Nothing is stored unless all of it verifies. A proof
// from a newer fork moves the replica to that fork, dropping the blocks past
// the prefix both histories share.
func (f *Feed) ApplyProof(p *merkle.Proof, data []byte) error {
	if err := f.applyProof(p, data); err != nil {
		return fmt.Errorf("feed: apply proof: %w", err)
	}
	return nil
}

func (f *Feed) applyProof(p *merkle.Proof, data []byte) error {
	if p == nil {
		return fmt.Errorf("%w: nil proof", ErrInvalidProof)
	}
	if len(data) > MaxBlockSize {
		return fmt.Errorf("%w: %d bytes", ErrBlockTooLarge, len(data))
	}
	var seq uint64
	inline := f.sync && p.Upgrade != nil && p.Fork != f.Fork()
	if inline {
		// A fork change rewrites the files under the head: keep the group
		// commit out and sync here, as Truncate does.
		release, err := f.commit.exclusive()
		if err != nil {
			return err
		}
		defer func() { release(seq) }()
	}
	f.mu.Lock()
	switch {
	case f.closed:
		f.mu.Unlock()
		return ErrClosed
	case f.secret != nil:
		f.mu.Unlock()
		return ErrWritable
	case f.failed != nil:
		err := f.failed
		f.mu.Unlock()
		return fmt.Errorf("%w: %v", ErrFailed, err)
	}
	next, events, err := f.applyLocked(p, data)
	if err == nil && inline {
		if err = f.settleLocked(); err == nil {
			err = writeHeader(f.files.header, &f.head, true)
		}
		if err != nil {
			f.failed = err
		}
	}
	f.mu.Unlock()
	if err != nil {
		return err
	}
	seq = next.Seq
	if f.sync && !inline {
		if err := f.commit.wait(f, next.Seq); err != nil {
			return err
		}
	}
	for _, e := range events {
		if e.Kind == EventBlock {
			f.notify.wake(e.Index)
		}
		f.notify.emit(e)
	}
	return nil
}

func (f *Feed) applyLocked(p *merkle.Proof, data []byte) (next header, events []Event, err error) {
	tip := &f.tip
	if p.Fork < tip.Fork {
		return next, nil, fmt.Errorf("%w: proof is from fork %d, feed is at %d", ErrStaleFork, p.Fork, tip.Fork)
	}
	forkChange := p.Fork > tip.Fork
	if forkChange && p.Upgrade == nil {
		return next, nil, fmt.Errorf("%w: fork %d without an upgrade", ErrInvalidProof, p.Fork)
	}
	if f.sync && forkChange {
		if err := f.settleLocked(); err != nil {
			f.failed = err
			return next, nil, err
		}
	}

	// Verify everything before touching storage.
	keep := tip.Length // the prefix of the old tree that stays trusted
	roots := f.tipRoots
	established := map[uint64]merkle.Node{}
	upgraded := false
	t := trust{f: f}
	if u := p.Upgrade; u != nil && (forkChange || u.Length > tip.Length) {
		if u.Start > tip.Length {
			return next, nil, fmt.Errorf("%w: upgrade starts at %d, past this feed's length %d", ErrInvalidProof, u.Start, tip.Length)
		}
		startRoots, err := merkle.RootsFrom(u.Start, t.node)
		if t.err != nil {
			return next, nil, t.err
		}
		if err != nil {
			return next, nil, fmt.Errorf("%w: %v", ErrNotAvailable, err)
		}
		newRoots, nodes, err := u.Verify(f.key, p.Fork, startRoots)
		if err != nil {
			return next, nil, err
		}
		for _, n := range nodes {
			established[n.Index] = n
		}
		for _, n := range newRoots {
			established[n.Index] = n
		}
		roots, upgraded = newRoots, true
		if forkChange {
			keep = u.Start
		}
	}
	length := tip.Length
	if upgraded {
		length = p.Upgrade.Length
	}
	trusted := func(i uint64) (merkle.Node, bool) {
		if n, ok := established[i]; ok {
			return n, merkle.Covered(i, length)
		}
		if !merkle.Covered(i, keep) {
			return merkle.Node{}, false
		}
		return t.node(i)
	}
	if b := p.Block; b != nil {
		if b.Index >= length {
			return next, nil, fmt.Errorf("%w: block %d past length %d", ErrInvalidProof, b.Index, length)
		}
		nodes, err := dropSurplus(b, trusted).Verify(data, trusted)
		if t.err != nil {
			return next, nil, t.err
		}
		if err != nil {
			return next, nil, err
		}
		for _, n := range nodes {
			established[n.Index] = n
		}
	} else if p.Upgrade == nil {
		return next, nil, fmt.Errorf("%w: proof holds neither a block nor a head", ErrInvalidProof)
	} else if !upgraded {
		return next, nil, fmt.Errorf("%w: upgrade to %d, feed is at %d", ErrStale, p.Upgrade.Length, tip.Length)
	}

	// Everything verified: store it. A write that fails leaves nothing of
	// the proof past the tip.
	defer func() {
		if err != nil {
			f.discardLocked()
		}
	}()
	next = *tip
	if err := f.materializeLocked(&next); err != nil {
		return next, nil, err
	}
	if forkChange {
		// First cut the old history back to what both share, under an unsigned
		// head that names only that prefix, so a crash from here on reopens a
		// consistent feed.
		cut := next
		cut.Seq++
		cut.Length = keep
		cutRoots, err := merkle.RootsFrom(keep, t.node)
		if t.err != nil {
			return next, nil, t.err
		}
		if err != nil {
			return next, nil, fmt.Errorf("%w: %v", ErrCorrupt, err)
		}
		cut.ByteLength = 0
		for _, r := range cutRoots {
			cut.ByteLength += r.Size
		}
		cut.TreeHash = merkle.TreeHash(cutRoots)
		cut.Signature = nil
		cut.Forks = slices.Clone(cut.Forks)
		cut.addFork(tip.Fork, p.Fork, keep)
		if err := writeHeader(f.files.header, &cut, f.sync); err != nil {
			f.failed = err
			return next, nil, err
		}
		f.head, f.roots, f.tip, f.tipRoots = cut, cutRoots, cut, cutRoots
		if err := f.trim(keep, cut.ByteLength); err != nil {
			f.failed = err
			return next, nil, err
		}
		next = cut
		events = append(events, Event{Kind: EventTruncate, Length: keep, Fork: p.Fork})
	}
	if upgraded {
		next.Fork = p.Fork
		next.Length = p.Upgrade.Length
		next.TreeHash = merkle.TreeHash(roots)
		next.Signature = slices.Clone(p.Upgrade.Signature)
		next.ByteLength = 0
		for _, r := range roots {
			next.ByteLength += r.Size
		}
		next.Seq++
		events = append(events, Event{Kind: EventAppend, Length: next.Length, Fork: next.Fork})
	} else if f.sync {
		next.Seq++ // the group commit waits on a sequence number
	}
	if err := f.writeNodes(established); err != nil {
		return next, nil, err
	}
	var added blockRange
	if b := p.Block; b != nil {
		off, err := f.offsetOf(b.Index, roots, established)
		if err != nil {
			return next, nil, err
		}
		if _, err := f.files.data.WriteAt(data, int64(off)); err != nil {
			return next, nil, err
		}
		var entry [indexEntrySize]byte
		putIndexEntry(entry[:], off, data)
		if _, err := f.files.index.WriteAt(entry[:], int64(b.Index)*indexEntrySize); err != nil {
			return next, nil, err
		}
		added = blockRange{b.Index, b.Index + 1}
		events = append(events, Event{Kind: EventBlock, Index: b.Index, Length: next.Length, Fork: next.Fork})
	}
	return next, events, f.commitLocked(&next, roots, added)
}

// materializeLocked prepares next, the head after a replica write, for a
// writer's feed opened as a replica: from then on the bitfield speaks for
// it, so every block it holds goes into the bitfield first.
func (f *Feed) materializeLocked(next *header) error {
	if !next.Complete {
		return nil
	}
	f.bits.setRange(0, next.Length, true)
	if err := f.bits.flush(f.files.bits); err != nil {
		return err
	}
	next.Complete = false
	return nil
}

// dropSurplus cuts a block proof at the lowest node the verifier trusts. A
// request made while others were in flight may have asked for more of the
// path than is missing when its answer arrives; the rest is dropped unread.
func dropSurplus(b *merkle.BlockProof, trusted func(uint64) (merkle.Node, bool)) *merkle.BlockProof {
	n := merkle.LeafIndex(b.Index)
	for k := range b.Nodes {
		if _, ok := trusted(n); ok {
			return &merkle.BlockProof{Index: b.Index, Nodes: b.Nodes[:k]}
		}
		n = merkle.Parent(n)
	}
	return b
}

// writeNodes stores verified nodes. They are anchored once written (see
// Feed.anchored): a proof's nodes reach a node the feed trusts, and carry
// every sibling on the way.
func (f *Feed) writeNodes(nodes map[uint64]merkle.Node) error {
	// Proofs of neighbouring blocks repeat the upper path; what is stored
	// already needs no write.
	for i, n := range nodes {
		if c, ok := f.cache.get(i); ok && c == n {
			delete(nodes, i)
			f.cache.anchor(n)
		}
	}
	idx := slices.Sorted(maps.Keys(nodes))
	// Runs of consecutive indices (a leaf, its parent and its sibling are
	// consecutive) go in one write each.
	for end := len(idx); end > 0; {
		start := end - 1
		for start > 0 && idx[start-1] == idx[start]-1 {
			start--
		}
		run := f.scratch((end - start) * nodeSize)
		for k, i := range idx[start:end] {
			putNode(run[k*nodeSize:], nodes[i])
		}
		if _, err := f.files.tree.WriteAt(run, int64(idx[start])*nodeSize); err != nil {
			f.cache.reset()
			return err
		}
		for _, i := range idx[start:end] {
			f.cache.anchor(nodes[i])
		}
		end = start
	}
	return nil
}

// offsetOf returns the byte offset of block i in a tree with the given roots:
// the sizes of the roots left of its root, and of every left child on the way
// down to it.
func (f *Feed) offsetOf(i uint64, roots []merkle.Node, established map[uint64]merkle.Node) (uint64, error) {
	leaf := merkle.LeafIndex(i)
	var off uint64
	for _, r := range roots {
		lo, hi := merkle.Spans(r.Index)
		if leaf > hi {
			off += r.Size
			continue
		}
		if leaf < lo {
			break
		}
		for n := r.Index; n != leaf; {
			l, rt, _ := merkle.Children(n)
			if _, lhi := merkle.Spans(l); leaf <= lhi {
				n = l
				continue
			}
			ln, ok := established[l]
			if !ok {
				var err error
				ln, err = f.nodeLocked(l)
				if errors.Is(err, ErrNotAvailable) {
					// The proof reached a node that is anchored, which its
					// left siblings are stored with.
					return 0, fmt.Errorf("%w: offset of block %d: node %d missing", ErrCorrupt, i, l)
				}
				if err != nil {
					return 0, fmt.Errorf("offset of block %d: %w", i, err)
				}
			}
			off += ln.Size
			n = rt
		}
		return off, nil
	}
	return 0, fmt.Errorf("%w: block %d under no root", ErrCorrupt, i)
}
