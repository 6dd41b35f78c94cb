package feed

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"slices"

	"github.com/hyperfeed/hyperfeed/merkle"
)

// ProofData is a proof and the block value it proves (nil for an upgrade
// alone).
type ProofData struct {
	Proof *merkle.Proof
	Data  []byte
}

// ApplyProofs applies proofs in order, with the same result as calling
// ApplyProof on each, and returns one error per proof (nil where it was
// stored). Runs of proofs that carry a block and no upgrade, as a download
// streams them, are verified one by one but stored with one write per file,
// which is what makes them cheap.
func (f *Feed) ApplyProofs(batch []ProofData) []error {
	errs := make([]error, len(batch))
	for i := 0; i < len(batch); {
		if p := batch[i].Proof; p == nil || p.Block == nil || p.Upgrade != nil {
			errs[i] = f.ApplyProof(p, batch[i].Data)
			i++
			continue
		}
		j := i + 1
		for j < len(batch) && batch[j].Proof != nil && batch[j].Proof.Block != nil && batch[j].Proof.Upgrade == nil {
			j++
		}
		f.applyBlocks(batch[i:j], errs[i:j])
		i = j
	}
	return errs
}

// staged is a verified block waiting to be written.
type staged struct {
	index, offset uint64
	data          []byte
}

func (f *Feed) applyBlocks(batch []ProofData, errs []error) {
	fail := func(err error) {
		for k := range errs {
			if errs[k] == nil {
				errs[k] = fmt.Errorf("feed: apply proof: %w", err)
			}
		}
	}
	f.mu.Lock()
	switch {
	case f.closed:
		f.mu.Unlock()
		fail(ErrClosed)
		return
	case f.secret != nil:
		f.mu.Unlock()
		fail(ErrWritable)
		return
	case f.failed != nil:
		err := f.failed
		f.mu.Unlock()
		fail(fmt.Errorf("%w: %v", ErrFailed, err))
		return
	}
	tip := &f.tip
	nodes := map[uint64]merkle.Node{} // established by this batch
	trusted := func(i uint64) (merkle.Node, bool) {
		if n, ok := nodes[i]; ok {
			return n, true
		}
		return f.trustedLocked(i)
	}
	var blocks []staged
	seen := map[uint64]bool{}
	for k, pd := range batch {
		b := pd.Proof.Block
		switch {
		case pd.Proof.Fork < tip.Fork:
			errs[k] = fmt.Errorf("feed: apply proof: %w: proof is from fork %d, feed is at %d", ErrStaleFork, pd.Proof.Fork, tip.Fork)
			continue
		case pd.Proof.Fork > tip.Fork:
			errs[k] = fmt.Errorf("feed: apply proof: %w: fork %d without an upgrade", ErrInvalidProof, pd.Proof.Fork)
			continue
		case b.Index >= tip.Length:
			errs[k] = fmt.Errorf("feed: apply proof: %w: block %d past length %d", ErrInvalidProof, b.Index, tip.Length)
			continue
		case len(pd.Data) > MaxBlockSize:
			errs[k] = fmt.Errorf("feed: apply proof: %w: %d bytes", ErrBlockTooLarge, len(pd.Data))
			continue
		}
		b = dropSurplus(b, trusted)
		est, err := b.Verify(pd.Data, trusted)
		if err != nil {
			errs[k] = fmt.Errorf("feed: apply proof: %w", err)
			continue
		}
		for _, nd := range est {
			nodes[nd.Index] = nd
		}
		if seen[b.Index] {
			continue
		}
		seen[b.Index] = true
		off, err := f.offsetOf(b.Index, f.tipRoots, nodes)
		if err != nil {
			errs[k] = fmt.Errorf("feed: apply proof: %w", err)
			continue
		}
		blocks = append(blocks, staged{index: b.Index, offset: off, data: pd.Data})
	}
	if len(blocks) == 0 {
		f.mu.Unlock()
		return
	}
	next, err := f.storeBlocksLocked(blocks, nodes)
	f.mu.Unlock()
	if err != nil {
		fail(err)
		return
	}
	if f.sync {
		if err := f.commit.wait(f, next.Seq); err != nil {
			fail(err)
			return
		}
	}
	for _, b := range blocks {
		f.notify.wake(b.index)
		f.notify.emit(Event{Kind: EventBlock, Index: b.index, Length: next.Length, Fork: next.Fork})
	}
}

// storeBlocksLocked writes verified blocks and their nodes: data and index
// entries a run of consecutive blocks at a time, then the nodes, then the
// bitfield, the order a crash needs (see doc.go).
func (f *Feed) storeBlocksLocked(blocks []staged, nodes map[uint64]merkle.Node) (header, error) {
	next := f.tip
	if err := f.materializeLocked(&next); err != nil {
		return next, err
	}
	slices.SortFunc(blocks, func(a, b staged) int { return cmp.Compare(a.index, b.index) })
	for i := 0; i < len(blocks); {
		j := i + 1
		for j < len(blocks) && blocks[j].index == blocks[j-1].index+1 {
			j++
		}
		run := blocks[i:j]
		data := f.gather[:0]
		idx := make([]byte, 8*len(run))
		for k, b := range run {
			data = append(data, b.data...)
			binary.LittleEndian.PutUint64(idx[8*k:], b.offset)
		}
		f.gather = data[:0]
		if _, err := f.files.data.WriteAt(data, int64(run[0].offset)); err != nil {
			return next, err
		}
		if _, err := f.files.index.WriteAt(idx, int64(run[0].index)*8); err != nil {
			return next, err
		}
		i = j
	}
	if err := f.writeNodes(nodes); err != nil {
		return next, err
	}
	if f.sync {
		next.Seq++
		f.tip = next
		for _, b := range blocks {
			f.pending = append(f.pending, blockRange{b.index, b.index + 1})
		}
		return next, nil
	}
	for _, b := range blocks {
		f.bits.setRange(b.index, b.index+1, true)
	}
	if err := f.bits.flush(f.files.bits); err != nil {
		return next, err
	}
	if next.Complete != f.tip.Complete {
		next.Seq++
		if err := writeHeader(f.files.header, &next, false); err != nil {
			return next, err
		}
	}
	f.tip, f.head = next, next
	return next, nil
}

// Proved is one answer of ProveMany.
type Proved struct {
	Proof *merkle.Proof
	Data  []byte
	Err   error
}

// prefetch holds the tree nodes, index entries and data of a run of
// consecutive blocks [first, end), each read with one system call.
type prefetch struct {
	first, end uint64
	tree       []byte // nodes [2·first, 2·end-1)
	index      []byte
	data       []byte // bytes from dataAt
	dataAt     uint64
	checks     map[uint64]merkle.Node // nodes climbs computed and checked
}

// checked returns the node at i as a proof of this batch computed it on a
// path that met the stored tree.
func (pf *prefetch) checked(i uint64) (merkle.Node, bool) {
	if pf == nil {
		return merkle.Node{}, false
	}
	n, ok := pf.checks[i]
	return n, ok
}

func (pf *prefetch) check(nodes []merkle.Node) {
	if pf == nil || len(nodes) == 0 {
		return
	}
	if pf.checks == nil {
		pf.checks = make(map[uint64]merkle.Node, 2*(pf.end-pf.first))
	}
	for _, n := range nodes {
		pf.checks[n.Index] = n
	}
}

// maxPrefetch bounds the data ProveMany reads ahead at once.
const maxPrefetch = 4 << 20

// ProveMany answers requests as Prove does each. Block requests for
// consecutive blocks, as a download makes them, are read with one read per
// file rather than three per block.
func (f *Feed) ProveMany(reqs []Request) []Proved {
	f.mu.RLock()
	defer f.mu.RUnlock()
	pf := f.prefetchLocked(reqs)
	out := make([]Proved, len(reqs))
	for k, r := range reqs {
		out[k].Proof, out[k].Data, out[k].Err = f.proveLocked(r, pf)
	}
	return out
}

// prefetchLocked reads ahead for the longest run of consecutive held
// blocks that the requests ask for, starting at the lowest. Whatever it
// cannot read is read block by block later, so it may give up silently.
func (f *Feed) prefetchLocked(reqs []Request) *prefetch {
	var idx []uint64
	for _, r := range reqs {
		if r.Block != nil && r.Fork == f.head.Fork && r.Block.Index < f.head.Length {
			idx = append(idx, r.Block.Index)
		}
	}
	if len(idx) < 2 || f.closed {
		return nil
	}
	slices.Sort(idx)
	idx = slices.Compact(idx)
	first, end := idx[0], idx[0]+1
	for _, i := range idx[1:] {
		if i != end || !f.has(i) {
			break
		}
		end++
	}
	if end-first < 2 || !f.has(first) {
		return nil
	}
	pf := &prefetch{first: first, end: end, tree: make([]byte, (2*(end-first)-1)*merkle.NodeSize), index: make([]byte, 8*(end-first))}
	if n, _ := f.files.tree.ReadAt(pf.tree, int64(2*first)*merkle.NodeSize); n < len(pf.tree) {
		return nil
	}
	if n, _ := f.files.index.ReadAt(pf.index, int64(first)*8); n < len(pf.index) {
		return nil
	}
	// The data of consecutive blocks is contiguous; read what the index
	// and leaves say it spans, if that is not too much.
	lo := binary.LittleEndian.Uint64(pf.index)
	last := merkle.ReadNode(2*(end-1), pf.tree[2*(end-1-first)*merkle.NodeSize:])
	hi := binary.LittleEndian.Uint64(pf.index[8*(end-1-first):]) + last.Size
	if hi < lo || hi-lo > maxPrefetch || hi > f.head.ByteLength {
		return pf // leaves and offsets still help; data is read per block
	}
	pf.data = make([]byte, hi-lo)
	if n, _ := f.files.data.ReadAt(pf.data, int64(lo)); n < len(pf.data) {
		pf.data = nil
	}
	pf.dataAt = lo
	return pf
}
