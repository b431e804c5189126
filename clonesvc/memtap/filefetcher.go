package memtap

import (
	"context"
	"fmt"
	"os"
	"sync/atomic"
)

// FileFetcher fetches pages from a local image file (a frozen memory
// image): the fetcher of tests and benchmarks, and of a clone whose
// image is on its own host.
type FileFetcher struct {
	f     *os.File
	store atomic.Pointer[Store]
	calls atomic.Uint64
}

var (
	_ Fetcher     = (*FileFetcher)(nil)
	_ StoreBinder = (*FileFetcher)(nil)
)

// NewFileFetcher opens the image at path.
func NewFileFetcher(path string) (*FileFetcher, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("memtap: image: %w", err)
	}
	return &FileFetcher{f: f}, nil
}

// BindStore sets the store Fetch writes into.
func (ff *FileFetcher) BindStore(s Store) { ff.store.Store(&s) }

// Calls is how many times Fetch was called.
func (ff *FileFetcher) Calls() uint64 { return ff.calls.Load() }

// Fetch reads page from the image and puts it into the store.
func (ff *FileFetcher) Fetch(ctx context.Context, page uint64) error {
	ff.calls.Add(1)
	s := ff.store.Load()
	if s == nil {
		return fmt.Errorf("memtap: file fetcher has no store")
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	buf := make([]byte, PageSize)
	if _, err := ff.f.ReadAt(buf, int64(page)*PageSize); err != nil {
		return fmt.Errorf("memtap: read image page %d: %w", page, err)
	}
	return (*s).Put(page, buf)
}

// Close closes the image.
func (ff *FileFetcher) Close() error { return ff.f.Close() }
