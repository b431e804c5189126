package descriptor

import (
	"encoding/binary"
	"fmt"
	"math/bits"
)

// Pages returns the number of pages in r.
func (r *Region) Pages() uint64 {
	if r.PageSize == 0 {
		return 0
	}
	return r.Size / uint64(r.PageSize)
}

// IsZero reports whether page (counted from 0) was all zeros at the
// checkpoint. A page past the region's end is not.
func (r *Region) IsZero(page uint64) bool {
	if page >= r.Pages() || page/8 >= uint64(len(r.Zero)) {
		return false
	}
	return r.Zero[page/8]&(1<<(page%8)) != 0
}

// ZeroPages returns how many of r's pages were all zeros at the checkpoint.
func (r *Region) ZeroPages() uint64 {
	var n int
	b := r.Zero
	for ; len(b) >= 8; b = b[8:] {
		n += bits.OnesCount64(binary.LittleEndian.Uint64(b))
	}
	for _, c := range b {
		n += bits.OnesCount8(c)
	}
	return uint64(n)
}

// bitmapLen is the length in bytes of a bitmap of pages bits.
func bitmapLen(pages uint64) uint64 { return (pages + 7) / 8 }

// checkBitmap checks that zero is a bitmap of exactly pages bits: the right
// length, and no bit set past the last page (so the encoding is canonical
// and ZeroPages counts only real pages).
func checkBitmap(zero []byte, pages uint64) error {
	if want := bitmapLen(pages); uint64(len(zero)) != want {
		return fmt.Errorf("zero-page bitmap is %d bytes, want %d for %d pages", len(zero), want, pages)
	}
	if rem := pages % 8; rem != 0 {
		if extra := zero[len(zero)-1] >> rem; extra != 0 {
			return fmt.Errorf("zero-page bitmap has bits set past page %d", pages-1)
		}
	}
	return nil
}
