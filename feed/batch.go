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
	leaf  *prepared
}

// prepared is the leaf of a block's data, computed by Prepare.
type prepared struct {
	data []byte // what was hashed
	leaf merkle.Node
}

// Prepare returns the ProofData of p and data with the leaf hash of data
// computed now rather than in ApplyProofs, under the feed's lock: a
// replicator can hash the blocks it receives on one goroutine while another
// stores them. data must not change afterwards; if Data is replaced, the
// hash is computed again.
func Prepare(p *merkle.Proof, data []byte) ProofData {
	pd := ProofData{Proof: p, Data: data}
	if p != nil && p.Block != nil && p.Block.Index < merkle.MaxLength {
		pd.leaf = &prepared{data: data, leaf: merkle.Leaf(p.Block.Index, data)}
	}
	return pd
}

// verifyBlock verifies pd's block proof, with the leaf from Prepare when it
// is still pd's.
func (pd *ProofData) verifyBlock(b *merkle.BlockProof, trusted func(uint64) (merkle.Node, bool)) ([]merkle.Node, error) {
	if l := pd.leaf; l != nil && l.leaf.Index == merkle.LeafIndex(b.Index) && sameSlice(l.data, pd.Data) {
		return b.VerifyLeaf(l.leaf, trusted)
	}
	return b.Verify(pd.Data, trusted)
}

func sameSlice(a, b []byte) bool {
	return len(a) == len(b) && (len(a) == 0 || &a[0] == &b[0])
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
	t := trust{f: f}
	trusted := func(i uint64) (merkle.Node, bool) {
		if n, ok := nodes[i]; ok {
			return n, true
		}
		return t.node(i)
	}
	var blocks []staged
	seen := map[uint64]bool{}
	for k := range batch {
		pd := &batch[k]
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
		est, err := pd.verifyBlock(b, trusted)
		if t.err != nil {
			err, t.err = t.err, nil
		}
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
		idx := make([]byte, indexEntrySize*len(run))
		for k, b := range run {
			putIndexEntry(idx[indexEntrySize*k:], b.offset, b.data)
		}
		if err := f.writeRun(run); err != nil {
			return next, err
		}
		if _, err := f.files.index.WriteAt(idx, int64(run[0].index)*indexEntrySize); err != nil {
			return next, err
		}
		i = j
	}
	if err := f.writeNodes(nodes); err != nil {
		return next, err
	}
	added := make([]blockRange, len(blocks))
	for k, b := range blocks {
		added[k] = blockRange{b.index, b.index + 1}
	}
	if f.sync || next.Complete != f.tip.Complete {
		// A new header: for the group commit to wait on, or to say that the
		// feed no longer holds every block.
		next.Seq++
	}
	return next, f.commitLocked(&next, f.tipRoots, added...)
}

// gatherBelow is the block size under which writeRun copies blocks together
// for one write; a larger block costs more to copy than a system call.
const gatherBelow = 16 << 10

// writeRun writes the data of consecutive blocks, which is contiguous.
func (f *Feed) writeRun(run []staged) error {
	gathered := f.gather[:0]
	at := run[0].offset
	flush := func() error {
		if len(gathered) == 0 {
			return nil
		}
		_, err := f.files.data.WriteAt(gathered, int64(at))
		at += uint64(len(gathered))
		gathered = gathered[:0]
		return err
	}
	for _, b := range run {
		if len(b.data) < gatherBelow {
			gathered = append(gathered, b.data...)
			continue
		}
		if err := flush(); err != nil {
			return err
		}
		if _, err := f.files.data.WriteAt(b.data, int64(at)); err != nil {
			return err
		}
		at += uint64(len(b.data))
	}
	err := flush()
	f.gather = gathered[:0]
	return err
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
	tree       []byte // node records [2·first, 2·end-1)
	index      []byte
	data       []byte // bytes from dataAt
	dataAt     uint64
	checks     map[uint64]merkle.Node // nodes climbs computed and checked
}

// holds reports whether pf read node i; a nil pf reads nothing.
func (pf *prefetch) holds(i uint64) bool {
	return pf != nil && pf.end > pf.first && i >= 2*pf.first && i < 2*pf.end-1
}

// node decodes node i, which pf holds.
func (pf *prefetch) node(i uint64) (merkle.Node, error) {
	return decodeNode(i, pf.tree[(i-2*pf.first)*nodeSize:])
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
	pf := &prefetch{first: first, end: end, tree: make([]byte, (2*(end-first)-1)*nodeSize), index: make([]byte, indexEntrySize*(end-first))}
	if n, _ := f.files.tree.ReadAt(pf.tree, int64(2*first)*nodeSize); n < len(pf.tree) {
		return nil
	}
	if n, _ := f.files.index.ReadAt(pf.index, int64(first)*indexEntrySize); n < len(pf.index) {
		return nil
	}
	// The data of consecutive blocks is contiguous; read what the index
	// and leaves say it spans, if that is not too much.
	lo := binary.LittleEndian.Uint64(pf.index)
	last, err := pf.node(2 * (end - 1))
	if err != nil {
		return pf // leaves and offsets still help; data is read per block
	}
	hi := binary.LittleEndian.Uint64(pf.index[indexEntrySize*(end-1-first):]) + last.Size
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
