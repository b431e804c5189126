package mcdist

import (
	"sync"
	"time"
)

// Reassembly bounds: at most maxPartials pages are half-heard at once, and
// a page whose fragments have not all arrived within partialTTL is given
// up (the client's retry asks for it again).
const (
	maxPartials = 4096
	partialTTL  = 2 * time.Second
)

// reassembler collects fragments into whole pages; safe for concurrent
// use.
type reassembler struct {
	mu      sync.Mutex
	partial map[uint64]*partial
	expired uint64 // pages given up
}

// partial is a page being reassembled.
type partial struct {
	count   uint8
	have    uint64 // bit i: fragment i arrived
	started time.Time
	data    [PageSize]byte
}

func newReassembler() *reassembler { return &reassembler{partial: map[uint64]*partial{}} }

// add stores f (already authenticated and parsed) and returns the whole
// page, in a new slice, when f completes it.
func (r *reassembler) add(f Fragment, now time.Time) ([]byte, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	p := r.partial[f.Page]
	if p == nil || p.count != f.Count {
		if p == nil && len(r.partial) >= maxPartials {
			r.expireLocked(now)
			if len(r.partial) >= maxPartials {
				return nil, false
			}
		}
		p = &partial{count: f.Count, started: now}
		r.partial[f.Page] = p
	}
	off, _ := fragmentSpan(int(f.Index), int(f.Count))
	copy(p.data[off:], f.Data)
	p.have |= 1 << f.Index
	if p.have != 1<<f.Count-1 {
		return nil, false
	}
	delete(r.partial, f.Page)
	page := make([]byte, PageSize)
	copy(page, p.data[:])
	return page, true
}

// expire gives up pages older than partialTTL.
func (r *reassembler) expire(now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.expireLocked(now)
}

// drop forgets a page (it arrived whole another way).
func (r *reassembler) drop(page uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.partial, page)
}

// expireLocked: preconditions: r.mu is held.
func (r *reassembler) expireLocked(now time.Time) {
	for page, p := range r.partial {
		if now.Sub(p.started) > partialTTL {
			delete(r.partial, page)
			r.expired++
		}
	}
}

// expiredCount returns how many pages were given up.
func (r *reassembler) expiredCount() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.expired
}
