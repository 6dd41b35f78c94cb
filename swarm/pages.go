package swarm

// holdings is what a peer says it holds of a feed: a prefix [0, prefix),
// which is all a complete peer ever announces and costs nothing to keep,
// and a sparse bitset beyond it. Announcements are clamped to the length the
// peer announced (its Sync) and the bitset to maxPeerPages pages, so that no
// claim costs this side more than a bounded amount of memory or time.
type holdings struct {
	prefix uint64
	pages  map[uint64]*[pageBytes]byte
}

const (
	pageBytes = 4096
	pageBits  = pageBytes * 8
	// maxPeerPages bounds the sparse holdings kept per peer and feed: 4 MiB,
	// enough for a sparse replica of a billion blocks' first 33 million.
	maxPeerPages = 1024
)

func (h *holdings) get(i uint64) bool {
	if i < h.prefix {
		return true
	}
	pg := h.pages[i/pageBits]
	if pg == nil {
		return false
	}
	j := i % pageBits
	return pg[j/8]&(1<<(j%8)) != 0
}

func (h *holdings) reset() { *h = holdings{} }

// add records blocks [start, end) as held, end clamped to limit.
func (h *holdings) add(start, end, limit uint64) {
	end = min(end, limit)
	if start >= end {
		return
	}
	if start <= h.prefix {
		h.prefix = max(h.prefix, end)
		return
	}
	for i := start; i < end; {
		p := i / pageBits
		pg := h.pages[p]
		if pg == nil {
			if len(h.pages) >= maxPeerPages {
				return
			}
			if h.pages == nil {
				h.pages = map[uint64]*[pageBytes]byte{}
			}
			pg = new([pageBytes]byte)
			h.pages[p] = pg
		}
		for stop := min(end, (p+1)*pageBits); i < stop; i++ {
			j := i % pageBits
			pg[j/8] |= 1 << (j % 8)
		}
	}
}

// drop records blocks [start, end) as no longer held. A prefix that loses a
// block is cut there: the rest of it is forgotten, to be announced again.
func (h *holdings) drop(start, end uint64) {
	if start < h.prefix {
		h.prefix = start
	}
	for p, pg := range h.pages {
		lo, hi := p*pageBits, (p+1)*pageBits
		if hi <= start || lo >= end {
			continue
		}
		for i := max(lo, start); i < min(hi, end); i++ {
			j := i % pageBits
			pg[j/8] &^= 1 << (j % 8)
		}
	}
}

// setPage records one page of a peer's bitfield, its bits past limit
// ignored.
func (h *holdings) setPage(n uint64, bits []byte, limit uint64) {
	first := n * pageBits
	for k, b := range bits {
		for bit := range 8 {
			if b&(1<<bit) != 0 {
				i := first + uint64(k*8+bit)
				h.add(i, i+1, limit)
			}
		}
	}
}
