package memtap

import (
	"context"
	"fmt"
	"os"
	"sync/atomic"
)

// Store receives guest pages: the tap implements it and its Fetcher writes
// into it. Every method is safe for concurrent use.
type Store interface {
	// Have says whether page is present.
	Have(page uint64) bool
	// Put stores one page (PageSize bytes). Putting a page that is
	// already present does nothing: a page never changes once received.
	Put(page uint64, data []byte) error
}

// Fetcher gets pages the tap lacks, the mcdist client in production.
//
// Fetch returns once page is in the tap's Store (the fetcher Puts it
// there, perhaps together with other pages it heard of), or with an error
// when it cannot get it within its bounded time: the tap then fails the
// read with EIO and reports the memory server lost. It is called
// concurrently for different pages, never twice at once for one page.
type Fetcher interface {
	Fetch(ctx context.Context, page uint64) error
}

// StoreBinder is implemented by a Fetcher that needs the tap's Store
// (every fetcher that Puts pages does): Mount calls BindStore once,
// before the file can be read.
type StoreBinder interface {
	BindStore(Store)
}

// pages is the tap's page store: a host-local cache file holding each
// received page at its offset, and a bitmap of the pages present.
type pages struct {
	file     *os.File
	size     int64
	pageSize int64
	count    uint64
	present  []atomic.Uint64 // bit p%64 of word p/64: page p is in file
	received atomic.Uint64
}

func newPages(f *os.File, size, pageSize int64) *pages {
	n := uint64(size / pageSize)
	return &pages{file: f, size: size, pageSize: pageSize, count: n, present: make([]atomic.Uint64, (n+63)/64)}
}

// Have says whether page is in the cache file.
func (s *pages) Have(page uint64) bool {
	return page < s.count && s.present[page/64].Load()&(1<<(page%64)) != 0
}

// Put writes page to the cache file, then marks it present: a reader that
// sees the bit reads the data.
func (s *pages) Put(page uint64, data []byte) error {
	if page >= s.count {
		return fmt.Errorf("memtap: put page %d: beyond the %d pages of guest RAM", page, s.count)
	}
	if int64(len(data)) != s.pageSize {
		return fmt.Errorf("memtap: put page %d: %d bytes, want %d", page, len(data), s.pageSize)
	}
	if s.Have(page) {
		return nil
	}
	if _, err := s.file.WriteAt(data, int64(page)*s.pageSize); err != nil {
		return fmt.Errorf("memtap: put page %d: %w", page, err)
	}
	if s.present[page/64].Or(1<<(page%64))&(1<<(page%64)) == 0 {
		s.received.Add(1)
	}
	return nil
}

// readPage copies the part [from, from+len(dst)) of a present page into
// dst.
func (s *pages) readPage(page uint64, from int64, dst []byte) error {
	if _, err := s.file.ReadAt(dst, int64(page)*s.pageSize+from); err != nil {
		return fmt.Errorf("memtap: read cached page %d: %w", page, err)
	}
	return nil
}

// bitSet reports bit i of a bitmap in the checkpoint's layout (bit i%8 of
// byte i/8); bits beyond the bitmap are clear.
func bitSet(bitmap []byte, i uint64) bool {
	return i/8 < uint64(len(bitmap)) && bitmap[i/8]&(1<<(i%8)) != 0
}
