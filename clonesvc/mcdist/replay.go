package mcdist

// windowSize is how many sequence numbers behind a sender's newest a
// packet may arrive and still be accepted (once).
const windowSize = 1024

// window is a sliding replay window over one sender's sequence numbers:
// bit s%windowSize is set when s (top-windowSize < s ≤ top) was accepted.
type window struct {
	top  uint64
	bits [windowSize / 64]uint64
}

// seen reports whether seq was already accepted or is too old to tell.
func (w *window) seen(seq uint64) bool {
	if seq > w.top {
		return false
	}
	if w.top-seq >= windowSize {
		return true
	}
	return w.bits[(seq%windowSize)/64]&(1<<(seq%64)) != 0
}

// mark accepts seq, reporting false if seen(seq).
func (w *window) mark(seq uint64) bool {
	if w.seen(seq) {
		return false
	}
	if seq > w.top {
		if seq-w.top >= windowSize {
			w.bits = [windowSize / 64]uint64{}
		} else {
			for s := w.top + 1; s < seq; s++ {
				w.bits[(s%windowSize)/64] &^= 1 << (s % 64)
			}
		}
		w.top = seq
	}
	w.bits[(seq%windowSize)/64] |= 1 << (seq % 64)
	return true
}
