package swarm

// pages is a sparse bitset of block numbers: what a peer holds.
type pages map[uint64]*[pageBytes]byte

const (
	pageBytes = 4096
	pageBits  = pageBytes * 8
)

func (p pages) get(i uint64) bool {
	pg := p[i/pageBits]
	if pg == nil {
		return false
	}
	j := i % pageBits
	return pg[j/8]&(1<<(j%8)) != 0
}

func (p pages) setRange(start, end uint64, v bool) {
	for i := start; i < end; i++ {
		pg := p[i/pageBits]
		if pg == nil {
			if !v {
				i = (i/pageBits+1)*pageBits - 1
				continue
			}
			pg = new([pageBytes]byte)
			p[i/pageBits] = pg
		}
		j := i % pageBits
		if v {
			pg[j/8] |= 1 << (j % 8)
		} else {
			pg[j/8] &^= 1 << (j % 8)
		}
	}
}

func (p pages) setPage(n uint64, bits []byte) {
	pg := new([pageBytes]byte)
	copy(pg[:], bits)
	p[n] = pg
}
