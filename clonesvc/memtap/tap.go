// Package memtap is a clone host's memory tap: a FUSE file of the guest
// RAM's size, mapped copy-on-write by the clones' QEMUs, whose pages are
// fetched on first touch into a host-local cache kept for every clone of
// the family on this host.
package memtap

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// PageSize is the only page size the tap serves (the host's base page,
// which is what a fault on a FUSE mapping reads when nothing asks for
// huge pages).
const PageSize = 4096

// FileName is the name of the RAM file inside the mount point.
const FileName = "mem"

// DefaultFetchTimeout bounds one Fetch when Config leaves FetchTimeout
// zero. The fetcher's own, shorter bound is expected to end it first.
const DefaultFetchTimeout = 30 * time.Second

// Config describes a tap to mount.
type Config struct {
	// Dir is a directory the tap owns; the mount point is created in it.
	Dir string
	// Size is the guest RAM's size in bytes, a multiple of PageSize.
	Size int64
	// PageSize must be PageSize (zero: PageSize).
	PageSize int
	// Zero is the checkpoint's zero bitmap (bit i%8 of byte i/8 set when
	// page i was all zeros): those pages are served as zeros, never
	// fetched. Nil: no page is known zero.
	Zero []byte
	// CachePath is the host-local cache file, created by Mount (it must
	// not exist); it holds every page received at its offset.
	CachePath string
	// KeepCache leaves the cache file in place on Close.
	KeepCache bool
	// Fetcher gets missing pages. If it implements StoreBinder, Mount
	// hands it the tap first.
	Fetcher Fetcher
	// FetchTimeout bounds one Fetch (zero: DefaultFetchTimeout).
	FetchTimeout time.Duration
	// AllowOther lets users other than the mounting one open the file
	// (QEMU running under another uid; as non-root it needs
	// user_allow_other in /etc/fuse.conf).
	AllowOther bool
}

// Stats counts what a tap did.
type Stats struct {
	// Reads is the number of FUSE read requests; MaxRead the largest in
	// bytes (the page size when faults read single pages).
	Reads   uint64
	MaxRead uint64
	// Cached, Zero and Fetched count pages read through FUSE: served from
	// the cache, served as zeros of the zero bitmap, fetched first.
	Cached  uint64
	Zero    uint64
	Fetched uint64
	// FetchFailures counts fetches that failed (each failed a read).
	FetchFailures uint64
	// BytesFetched is Fetched pages in bytes. BytesReceived counts every
	// page put into the store, asked for or not (mcdist delivers pages
	// other hosts asked for).
	BytesFetched  uint64
	BytesReceived uint64
	// BytesServed is what FUSE reads returned.
	BytesServed uint64
}

// ErrLost says that a page could not be fetched: the memory server is
// gone (or too slow), and the clones on this tap cannot go on.
var ErrLost = errors.New("memory server lost")

// Tap is a mounted memory tap. It is the Store its Fetcher writes into.
type Tap struct {
	cfg   Config
	store *pages
	mnt   string
	srv   *fuse.Server
	ctx   context.Context // ends at Close: in-flight fetches stop
	stop  context.CancelFunc

	mu       sync.Mutex // guards inflight
	inflight map[uint64]*flight

	lostOnce sync.Once
	lost     chan struct{}
	lostErr  atomic.Pointer[error]

	reads, maxRead, cached, zero, fetched, failures, served atomic.Uint64

	closeOnce sync.Once
	closeErr  error
}

var _ Store = (*Tap)(nil)

// flight is one fetch in progress; readers of the same page wait for it.
type flight struct {
	done chan struct{}
	err  error
}

// Mount creates the cache file and mounts the tap in a new directory
// inside cfg.Dir. On failure it leaves nothing behind.
func Mount(ctx context.Context, cfg Config) (_ *Tap, err error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	if cfg.PageSize == 0 {
		cfg.PageSize = PageSize
	}
	if cfg.FetchTimeout == 0 {
		cfg.FetchTimeout = DefaultFetchTimeout
	}
	var undo []func()
	defer func() {
		if err != nil {
			for i := len(undo) - 1; i >= 0; i-- {
				undo[i]()
			}
		}
	}()
	f, err := os.OpenFile(cfg.CachePath, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("memtap: cache file: %w", err)
	}
	undo = append(undo, func() { f.Close(); os.Remove(cfg.CachePath) })
	if err := f.Truncate(cfg.Size); err != nil {
		return nil, fmt.Errorf("memtap: size cache file: %w", err)
	}
	mnt, err := os.MkdirTemp(cfg.Dir, "memtap-")
	if err != nil {
		return nil, fmt.Errorf("memtap: mount point: %w", err)
	}
	undo = append(undo, func() { os.Remove(mnt) })

	tctx, stop := context.WithCancel(context.Background())
	undo = append(undo, stop)
	t := &Tap{
		cfg: cfg, store: newPages(f, cfg.Size, int64(cfg.PageSize)), mnt: mnt,
		ctx: tctx, stop: stop,
		inflight: make(map[uint64]*flight), lost: make(chan struct{}),
	}
	if b, ok := cfg.Fetcher.(StoreBinder); ok {
		b.BindStore(t)
	}
	srv, err := mount(ctx, mnt, t)
	if err != nil {
		return nil, err
	}
	t.srv = srv
	return t, nil
}

func (c Config) check() error {
	switch {
	case !filepath.IsAbs(c.Dir):
		return fmt.Errorf("memtap: directory %q is not an absolute path", c.Dir)
	case !filepath.IsAbs(c.CachePath):
		return fmt.Errorf("memtap: cache path %q is not an absolute path", c.CachePath)
	case c.PageSize != 0 && c.PageSize != PageSize:
		return fmt.Errorf("memtap: page size %d: only %d is supported", c.PageSize, PageSize)
	case c.Size <= 0 || c.Size%PageSize != 0:
		return fmt.Errorf("memtap: size %d: want a positive multiple of %d", c.Size, PageSize)
	case c.Zero != nil && int64(len(c.Zero)) < (c.Size/PageSize+7)/8:
		return fmt.Errorf("memtap: zero bitmap of %d bytes for %d pages", len(c.Zero), c.Size/PageSize)
	case c.Fetcher == nil:
		return errors.New("memtap: no fetcher")
	case c.FetchTimeout < 0:
		return fmt.Errorf("memtap: fetch timeout %v", c.FetchTimeout)
	}
	if fi, err := os.Stat(c.Dir); err != nil || !fi.IsDir() {
		return fmt.Errorf("memtap: directory %q does not exist", c.Dir)
	}
	return nil
}

// Path is the RAM file, for QEMU's memory-backend-file mem-path (with
// share=off: each clone writes into its own private copy).
func (t *Tap) Path() string { return filepath.Join(t.mnt, FileName) }

// Have says whether page has been received.
func (t *Tap) Have(page uint64) bool { return t.store.Have(page) }

// Put stores a received page for every clone on this host.
func (t *Tap) Put(page uint64, data []byte) error { return t.store.Put(page, data) }

// Lost is closed when a fetch has failed; Err then says why. The service
// stops the clones mapping this tap.
func (t *Tap) Lost() <-chan struct{} { return t.lost }

// Err is the first fetch failure (wrapping ErrLost), or nil.
func (t *Tap) Err() error {
	if p := t.lostErr.Load(); p != nil {
		return *p
	}
	return nil
}

// Stats returns the tap's counters.
func (t *Tap) Stats() Stats {
	f, r := t.fetched.Load(), t.store.received.Load()
	return Stats{
		Reads: t.reads.Load(), MaxRead: t.maxRead.Load(),
		Cached: t.cached.Load(), Zero: t.zero.Load(), Fetched: f,
		FetchFailures: t.failures.Load(),
		BytesFetched:  f * uint64(t.cfg.PageSize), BytesReceived: r * uint64(t.cfg.PageSize),
		BytesServed: t.served.Load(),
	}
}

// unmountWait is how long Close waits for the kernel to let go of the
// mount before detaching it lazily.
const unmountWait = 5 * time.Second

// Close unmounts the tap, ends fetches in flight and removes the mount
// point and (unless KeepCache) the cache file. The clones mapping the
// file should be stopped first: if the file is still in use, the mount is
// detached lazily and goes away with its last user.
func (t *Tap) Close() error {
	t.closeOnce.Do(func() {
		t.stop()
		t.closeErr = unmount(t.srv, t.mnt, unmountWait)
		if err := os.Remove(t.mnt); err != nil && t.closeErr == nil {
			t.closeErr = fmt.Errorf("memtap: remove mount point: %w", err)
		}
		if err := t.store.file.Close(); err != nil && t.closeErr == nil {
			t.closeErr = fmt.Errorf("memtap: close cache: %w", err)
		}
		if !t.cfg.KeepCache {
			if err := os.Remove(t.cfg.CachePath); err != nil && t.closeErr == nil {
				t.closeErr = fmt.Errorf("memtap: remove cache: %w", err)
			}
		}
	})
	return t.closeErr
}
