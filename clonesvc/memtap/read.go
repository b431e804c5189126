package memtap

import (
	"context"
	"fmt"
	"sync/atomic"
)

// read fills dest with the RAM file's bytes at off, page by page: a
// present page from the cache, a page of the zero bitmap as zeros, any
// other page fetched first. It returns how many bytes it filled (short at
// the end of the file).
func (t *Tap) read(ctx context.Context, dest []byte, off int64) (int, error) {
	t.reads.Add(1)
	storeMax(&t.maxRead, uint64(len(dest)))
	if off < 0 || off >= t.cfg.Size {
		return 0, nil
	}
	end := min(off+int64(len(dest)), t.cfg.Size)
	ps := int64(t.cfg.PageSize)
	for pos := off; pos < end; {
		page := uint64(pos / ps)
		from := pos % ps
		n := min(ps-from, end-pos)
		dst := dest[pos-off : pos-off+n]
		switch {
		case t.store.Have(page):
			t.cached.Add(1)
		case bitSet(t.cfg.Zero, page):
			clear(dst)
			t.zero.Add(1)
			pos += n
			continue
		default:
			if err := t.fetch(ctx, page); err != nil {
				return 0, err
			}
		}
		if err := t.store.readPage(page, from, dst); err != nil {
			return 0, err
		}
		pos += n
	}
	t.served.Add(uint64(end - off))
	return int(end - off), nil
}

// fetch gets page through the Fetcher, once however many readers want
// it: later readers wait for the fetch in flight. After a failure the tap
// is lost and every later fetch fails at once.
func (t *Tap) fetch(ctx context.Context, page uint64) error {
	if err := t.Err(); err != nil {
		return err
	}
	t.mu.Lock()
	f, ok := t.inflight[page]
	if !ok {
		if t.store.Have(page) {
			t.mu.Unlock()
			return nil
		}
		f = &flight{done: make(chan struct{})}
		t.inflight[page] = f
	}
	t.mu.Unlock()
	if ok {
		select {
		case <-f.done:
			return f.err
		case <-ctx.Done():
			return fmt.Errorf("memtap: page %d: %w", page, ctx.Err())
		}
	}
	// The fetch runs on the tap's context, not the reader's: an interrupted
	// reader must not fail the others waiting for the same page.
	fctx, cancel := context.WithTimeout(t.ctx, t.cfg.FetchTimeout)
	err := t.cfg.Fetcher.Fetch(fctx, page)
	cancel()
	if err == nil && !t.store.Have(page) {
		err = fmt.Errorf("fetcher returned without delivering page %d", page)
	}
	if err != nil {
		t.failures.Add(1)
		err = fmt.Errorf("memtap: page %d: %w: %w", page, ErrLost, err)
		if t.ctx.Err() == nil {
			t.lose(err)
		}
	} else {
		t.fetched.Add(1)
	}
	f.err = err
	t.mu.Lock()
	delete(t.inflight, page)
	t.mu.Unlock()
	close(f.done)
	return err
}

// lose records the first fetch failure and closes Lost.
func (t *Tap) lose(err error) {
	t.lostOnce.Do(func() {
		t.lostErr.Store(&err)
		close(t.lost)
	})
}

func storeMax(v *atomic.Uint64, n uint64) {
	for {
		old := v.Load()
		if n <= old || v.CompareAndSwap(old, n) {
			return
		}
	}
}
