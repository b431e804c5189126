package memtap

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// checkSums fails for every touched page whose contents differ from the
// reference image.
func checkSums(t *testing.T, img *image, got map[int]touched) {
	t.Helper()
	for p, tc := range got {
		if tc.sum != img.sum(p) {
			t.Errorf("page %d (zero=%v): contents differ from the reference image (got %.12s, want %.12s)",
				p, img.isZero(p), tc.sum, img.sum(p))
		}
	}
}

// TestFaultsFetchTouchedPages: a process maps the tap MAP_PRIVATE (as QEMU
// does, without asking for huge pages) and touches a pattern of pages: it
// sees the reference image's contents, each touched non-zero page is
// fetched exactly once, zero pages never, and every FUSE read is one 4 KiB
// page: no read-around. A second process then sees the same pages without
// any fetch or read (shared page cache).
func TestFaultsFetchTouchedPages(t *testing.T) {
	img := newImage(t, 1024, 5)
	f := newCountingFetcher(t, img)
	tap := mountTap(t, img, f, nil)
	if !slices.Contains(mountPoints(t), tap.mnt) {
		t.Fatalf("%s is not in /proc/self/mountinfo", tap.mnt)
	}

	pattern := []int{1, 2, 3, 0, 5, 101, 100, 103, 500, 1023, 511, 512, 700, 10, 2, 1}
	got := touch(t, tap.Path(), pattern)
	checkSums(t, img, got)

	want := map[uint64]int{}
	distinct := map[int]bool{}
	var zeros uint64
	for _, p := range pattern {
		if !distinct[p] && img.isZero(p) {
			zeros++
		}
		distinct[p] = true
		if !img.isZero(p) {
			want[uint64(p)] = 1
		}
	}
	if calls := f.fetched(); !mapsEqual(calls, want) {
		t.Errorf("fetch calls per page %v, want %v", calls, want)
	}
	st := tap.Stats()
	t.Logf("stats after touching %d pages: %+v", len(distinct), st)
	if st.Reads != uint64(len(distinct)) || st.MaxRead != PageSize {
		t.Errorf("%d FUSE reads of at most %d bytes for %d pages touched: want one read of %d bytes per page",
			st.Reads, st.MaxRead, len(distinct), PageSize)
	}
	if st.Fetched != uint64(len(want)) || st.Zero != zeros || st.FetchFailures != 0 ||
		st.BytesFetched != uint64(len(want))*PageSize || st.BytesReceived != st.BytesFetched {
		t.Errorf("stats %+v: want %d fetched, %d zero pages, no failure", st, len(want), zeros)
	}
	for p := range want {
		if !tap.Have(p) {
			t.Errorf("fetched page %d is not in the store", p)
		}
	}

	// Another clone on this host: same pages, nothing more fetched or read.
	checkSums(t, img, touch(t, tap.Path(), pattern))
	if st2 := tap.Stats(); st2.Fetched != st.Fetched || st2.Reads != st.Reads {
		t.Errorf("a second mapping fetched %d and read %d more pages: the page cache should serve it",
			st2.Fetched-st.Fetched, st2.Reads-st.Reads)
	}

	// read(2) across pages (unaligned) returns the image's bytes too.
	file, err := os.Open(tap.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	off, n := int64(200*PageSize+100), 3*PageSize
	buf := make([]byte, n)
	if _, err := file.ReadAt(buf, off); err != nil {
		t.Fatal(err)
	}
	if string(buf) != string(img.data[off:off+int64(n)]) {
		t.Error("read(2) of pages 200-203 differs from the reference image")
	}
}

func mapsEqual(a, b map[uint64]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// TestConcurrentReadersFetchOnce: four processes touch the same pages in
// different orders at once (a slow fetcher widens the races): every page
// is fetched once and all see the image.
func TestConcurrentReadersFetchOnce(t *testing.T) {
	img := newImage(t, 512, 4)
	f := newCountingFetcher(t, img)
	f.delay = time.Millisecond
	tap := mountTap(t, img, f, nil)

	var pages []int
	for p := 0; p < 512; p += 3 {
		pages = append(pages, p)
	}
	var wg sync.WaitGroup
	results := make([]map[int]touched, 4)
	for i := range results {
		order := slices.Clone(pages)
		rand.New(rand.NewPCG(uint64(i), 1)).Shuffle(len(order), func(a, b int) { order[a], order[b] = order[b], order[a] })
		wg.Go(func() { results[i] = touch(t, tap.Path(), order) })
	}
	wg.Wait()
	for _, r := range results {
		checkSums(t, img, r)
	}
	want := map[uint64]int{}
	for _, p := range pages {
		if !img.isZero(p) {
			want[uint64(p)] = 1
		}
	}
	if calls := f.fetched(); !mapsEqual(calls, want) {
		t.Errorf("fetch calls: %d pages, want %d each once; pages fetched more than once or not touched: %v",
			len(calls), len(want), diff(calls, want))
	}
	t.Logf("stats: %+v", tap.Stats())
}

func diff(got, want map[uint64]int) map[uint64]int {
	d := map[uint64]int{}
	for k, v := range got {
		if want[k] != v {
			d[k] = v
		}
	}
	return d
}

// TestZeroPagesNeverFetched: pages zero at the checkpoint read as zeros
// without any fetch.
func TestZeroPagesNeverFetched(t *testing.T) {
	img := newImage(t, 256, 2)
	f := newCountingFetcher(t, img)
	tap := mountTap(t, img, f, nil)
	var zeros []int
	for p := 0; p < 256; p += 2 {
		zeros = append(zeros, p)
	}
	checkSums(t, img, touch(t, tap.Path(), zeros))
	if calls := f.fetched(); len(calls) != 0 {
		t.Errorf("zero pages fetched: %v", calls)
	}
	if st := tap.Stats(); st.Zero != uint64(len(zeros)) || st.Fetched != 0 {
		t.Errorf("stats %+v: want %d zero pages served, none fetched", st, len(zeros))
	}
}

// TestFetchFailureIsEIO: a fetch that fails fails the read with EIO (a
// fault in a mapping gets SIGBUS, which kills QEMU) and reports the
// memory server lost; later fetches fail at once, zero pages still read.
func TestFetchFailureIsEIO(t *testing.T) {
	img := newImage(t, 64, 4)
	f := newCountingFetcher(t, img)
	f.fail = func(page uint64) error {
		if page == 7 {
			return errors.New("no answer from the memory server within 2s")
		}
		return nil
	}
	tap := mountTap(t, img, f, nil)
	select {
	case <-tap.Lost():
		t.Fatal("tap lost before any fetch")
	default:
	}

	file, err := os.Open(tap.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	buf := make([]byte, PageSize)
	if _, err := file.ReadAt(buf, 1*PageSize); err != nil {
		t.Fatalf("page 1 before the failure: %v", err)
	}
	_, err = file.ReadAt(buf, 7*PageSize)
	if !errors.Is(err, syscall.EIO) {
		t.Fatalf("read of a page whose fetch failed: %v, want EIO", err)
	}
	select {
	case <-tap.Lost():
	case <-time.After(time.Second):
		t.Fatal("Lost not closed after a failed fetch")
	}
	if err := tap.Err(); !errors.Is(err, ErrLost) {
		t.Errorf("Err() = %v, want ErrLost", err)
	}
	t.Logf("tap error: %v", tap.Err())

	// A clone faulting on a missing page gets SIGBUS; zero and present
	// pages still read.
	got := touch(t, tap.Path(), []int{4, 1, 9})
	if got[9].sum != "fault" {
		t.Errorf("fault on a missing page of a lost tap: %q, want a fault (SIGBUS)", got[9].sum)
	}
	if got[4].sum != img.sum(4) || got[1].sum != img.sum(1) {
		t.Error("a zero or present page did not read after the tap was lost")
	}
	if calls := f.fetched(); calls[9] != 0 {
		t.Errorf("page 9 was fetched after the tap was lost: want an immediate failure")
	}
	if st := tap.Stats(); st.FetchFailures != 1 {
		t.Errorf("stats %+v: want 1 fetch failure", st)
	}
}

// hangingFetcher never delivers: it waits for its context to end.
type hangingFetcher struct{}

func (hangingFetcher) Fetch(ctx context.Context, page uint64) error {
	<-ctx.Done()
	return ctx.Err()
}

// TestFetchTimeout: a fetcher that hangs is cut off after FetchTimeout:
// the read fails with EIO, not later.
func TestFetchTimeout(t *testing.T) {
	img := newImage(t, 16, 4)
	tap := mountTap(t, img, hangingFetcher{}, func(c *Config) { c.FetchTimeout = 300 * time.Millisecond })
	file, err := os.Open(tap.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	t0 := time.Now()
	_, err = file.ReadAt(make([]byte, PageSize), 5*PageSize)
	took := time.Since(t0)
	if !errors.Is(err, syscall.EIO) || took < 300*time.Millisecond || took > 10*time.Second {
		t.Errorf("read with a hanging fetcher: %v after %v, want EIO after about 300ms", err, took)
	}
	if !errors.Is(tap.Err(), context.DeadlineExceeded) || !errors.Is(tap.Err(), ErrLost) {
		t.Errorf("Err() = %v, want ErrLost and a deadline", tap.Err())
	}
}

// TestReadOnly: the file may be opened for writing (QEMU does), but
// writes, truncation and hole punching fail.
func TestReadOnly(t *testing.T) {
	img := newImage(t, 16, 4)
	tap := mountTap(t, img, newCountingFetcher(t, img), nil)
	fi, err := os.Stat(tap.Path())
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() != int64(len(img.data)) || fi.Mode().Perm() != 0o444 {
		t.Errorf("file %v size %d: want mode 0444 and %d bytes", fi.Mode(), fi.Size(), len(img.data))
	}
	file, err := os.OpenFile(tap.Path(), os.O_RDWR, 0)
	if err != nil {
		t.Fatalf("open O_RDWR (as QEMU does): %v", err)
	}
	defer file.Close()
	if _, err := file.WriteAt([]byte("x"), 0); err == nil {
		t.Error("a write succeeded")
	}
	if err := file.Truncate(PageSize); err == nil {
		t.Error("truncate succeeded")
	}
	if err := unix.Fallocate(int(file.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, 0, PageSize); err == nil {
		t.Error("punching a hole succeeded")
	}
}

// TestStore: Put and Have, with bad pages refused.
func TestStore(t *testing.T) {
	img := newImage(t, 8, 4)
	tap := mountTap(t, img, hangingFetcher{}, nil)
	if tap.Have(3) {
		t.Fatal("page 3 present before any Put")
	}
	page := img.data[3*PageSize : 4*PageSize]
	if err := tap.Put(3, page); err != nil {
		t.Fatal(err)
	}
	if err := tap.Put(3, page); err != nil {
		t.Fatalf("second put of a page: %v", err)
	}
	if !tap.Have(3) || tap.Have(2) {
		t.Error("Have after Put of page 3")
	}
	if err := tap.Put(8, page); err == nil {
		t.Error("put beyond the end succeeded")
	}
	if err := tap.Put(2, page[:100]); err == nil {
		t.Error("put of a short page succeeded")
	}
	if st := tap.Stats(); st.BytesReceived != PageSize {
		t.Errorf("bytes received %d, want %d", st.BytesReceived, PageSize)
	}
	// A page put without being asked for serves reads without a fetch
	// (the hanging fetcher would block).
	if got := touch(t, tap.Path(), []int{3}); got[3].sum != img.sum(3) {
		t.Error("page put into the store reads otherwise")
	}
	if st := tap.Stats(); st.Cached != 1 || st.Fetched != 0 {
		t.Errorf("stats %+v: want one page served from the cache", st)
	}
}

// TestCloseWhileMapped: Close with the file still mapped detaches the
// mount lazily: it leaves no mount point, and the cache is removed.
func TestCloseWhileMapped(t *testing.T) {
	requireFUSE(t)
	img := newImage(t, 16, 4)
	dir := t.TempDir()
	cache := filepath.Join(dir, "cache")
	tap, err := Mount(context.Background(), Config{Dir: dir, Size: int64(len(img.data)), CachePath: cache, Fetcher: newCountingFetcher(t, img)})
	if err != nil {
		t.Fatal(err)
	}
	file, err := os.Open(tap.Path())
	if err != nil {
		tap.Close()
		t.Fatal(err)
	}
	// Mapped but never touched here (see TestMain).
	mem, err := unix.Mmap(int(file.Fd()), 0, len(img.data), unix.PROT_READ, unix.MAP_PRIVATE)
	file.Close()
	if err != nil {
		tap.Close()
		t.Fatal(err)
	}
	defer unix.Munmap(mem)
	if err := tap.Close(); err != nil {
		t.Errorf("close: %v", err)
	}
	assertUnmounted(t, tap.mnt)
	assertEntries(t, dir)
	if err := tap.Close(); err != nil {
		t.Errorf("second close: %v", err)
	}
}

// assertEntries fails unless dir holds exactly the named entries.
func assertEntries(t *testing.T, dir string, names ...string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range ents {
		got = append(got, e.Name())
	}
	if !slices.Equal(got, names) {
		t.Errorf("%s holds %v, want %v", dir, got, names)
	}
}

func TestKeepCache(t *testing.T) {
	img := newImage(t, 16, 4)
	var cache string
	tap := mountTap(t, img, newCountingFetcher(t, img), func(c *Config) { c.KeepCache = true; cache = c.CachePath })
	touch(t, tap.Path(), []int{1})
	if err := tap.Close(); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(cache)
	if err != nil {
		t.Fatalf("cache not kept: %v", err)
	}
	if string(data[PageSize:2*PageSize]) != string(img.data[PageSize:2*PageSize]) {
		t.Error("kept cache lacks the fetched page 1")
	}
}

// TestMountFailuresLeaveNothing: bad configurations are refused, and a
// failed mount leaves nothing in Dir.
func TestMountFailuresLeaveNothing(t *testing.T) {
	requireFUSE(t)
	img := newImage(t, 16, 4)
	f := newCountingFetcher(t, img)
	dir := t.TempDir()
	good := Config{Dir: dir, Size: int64(len(img.data)), CachePath: filepath.Join(dir, "cache"), Fetcher: f}
	for _, change := range []func(*Config){
		func(c *Config) { c.Dir = "relative" },
		func(c *Config) { c.Dir = filepath.Join(dir, "absent") },
		func(c *Config) { c.CachePath = "cache" },
		func(c *Config) { c.Size = 100 },
		func(c *Config) { c.Size = 0 },
		func(c *Config) { c.PageSize = 2 << 20 },
		func(c *Config) { c.Zero = []byte{0} },
		func(c *Config) { c.Fetcher = nil },
	} {
		cfg := good
		change(&cfg)
		if tap, err := Mount(context.Background(), cfg); err == nil {
			tap.Close()
			t.Errorf("config %+v accepted", cfg)
		}
	}
	assertEntries(t, dir)
	// An existing cache file is never overwritten.
	if err := os.WriteFile(good.CachePath, []byte("other"), 0o600); err != nil {
		t.Fatal(err)
	}
	if tap, err := Mount(context.Background(), good); err == nil {
		tap.Close()
		t.Error("mount over an existing cache file succeeded")
	}
	assertEntries(t, dir, "cache")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	os.Remove(good.CachePath)
	if tap, err := Mount(ctx, good); err == nil {
		tap.Close()
		t.Error(fmt.Errorf("mount with a cancelled context succeeded"))
	}
}
