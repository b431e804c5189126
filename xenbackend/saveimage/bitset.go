package saveimage

// bitset is a set of pfns, one bit each (bit i%8 of byte i/8), that grows
// as higher pfns arrive.
type bitset struct {
	b []byte
}

// grow makes room for pfn. Precondition: pfn < limit, which bounds the
// allocation at limit/8 bytes.
func (s *bitset) grow(pfn, limit uint64) {
	need := pfn/8 + 1
	if need <= uint64(len(s.b)) {
		return
	}
	n := max(uint64(len(s.b))*2, need, 4096)
	n = min(n, (limit+7)/8)
	nb := make([]byte, n)
	copy(nb, s.b)
	s.b = nb
}

func (s *bitset) has(pfn uint64) bool {
	i := pfn / 8
	return i < uint64(len(s.b)) && s.b[i]&(1<<(pfn%8)) != 0
}

// set adds pfn. Precondition: grow(pfn, …) or a fixed-size set holding pfn.
func (s *bitset) set(pfn uint64) {
	s.b[pfn/8] |= 1 << (pfn % 8)
}

// bitmapBytes is the size of a bitmap of n bits.
func bitmapBytes(n uint64) uint64 { return (n + 7) / 8 }
