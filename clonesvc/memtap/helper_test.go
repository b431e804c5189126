package memtap

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The test binary doubles as the process that maps the tap's file, as
// QEMU does: a process must not fault on its own FUSE mount (a fault is
// not a syscall, so the Go runtime cannot stop the faulting thread for a
// garbage collection while the FUSE server it waits for is stopped).
const toucherEnv = "MEMTAP_TOUCHER"

func TestMain(m *testing.M) {
	if os.Getenv(toucherEnv) != "" {
		os.Exit(toucherMain(os.Args[len(os.Args)-2], os.Args[len(os.Args)-1]))
	}
	os.Exit(m.Run())
}

// toucherMain maps path MAP_PRIVATE and touches pages (a comma list) one
// by one: it reads one byte of each (one fault), then prints "PAGE SHA256
// NANOS" for it, NANOS being how long the fault took. A fault that fails
// (SIGBUS) prints "PAGE fault".
func toucherMain(path, list string) int {
	f, err := os.OpenFile(path, os.O_RDWR, 0) // as QEMU opens mem-path
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fi, err := f.Stat()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	mem, err := unix.Mmap(int(f.Fd()), 0, int(fi.Size()), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE)
	if err != nil {
		fmt.Fprintln(os.Stderr, "mmap:", err)
		return 1
	}
	debug.SetPanicOnFault(true)
	w := bufio.NewWriter(os.Stdout)
	defer w.Flush()
	var sink byte
	for s := range strings.SplitSeq(list, ",") {
		p, err := strconv.Atoi(s)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		page := mem[p*PageSize : (p+1)*PageSize]
		t0 := time.Now()
		ok := func() (ok bool) {
			defer func() {
				if recover() != nil {
					ok = false
				}
			}()
			sink ^= page[PageSize/2]
			return true
		}()
		took := time.Since(t0)
		if !ok {
			fmt.Fprintf(w, "%d fault\n", p)
			continue
		}
		sum := sha256.Sum256(page)
		fmt.Fprintf(w, "%d %s %d\n", p, hex.EncodeToString(sum[:]), took.Nanoseconds())
	}
	_ = sink
	return 0
}

// touched is what a toucher reported for one page.
type touched struct {
	sum   string // sha256 in hex, or "fault"
	nanos int64
}

// touch runs a toucher over pages of path and returns its report.
func touch(t testing.TB, path string, pages []int) map[int]touched {
	t.Helper()
	list := make([]string, len(pages))
	for i, p := range pages {
		list[i] = strconv.Itoa(p)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^$", path, strings.Join(list, ","))
	cmd.Env = append(os.Environ(), toucherEnv+"=1")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("toucher: %v: %s", err, stderr.Bytes())
	}
	got := make(map[int]touched)
	for line := range strings.Lines(string(out)) {
		f := strings.Fields(line)
		p, _ := strconv.Atoi(f[0])
		tc := touched{sum: f[1]}
		if len(f) == 3 {
			tc.nanos, _ = strconv.ParseInt(f[2], 10, 64)
		}
		got[p] = tc
	}
	for _, p := range pages {
		if _, ok := got[p]; !ok {
			t.Fatalf("toucher did not report page %d:\n%s", p, out)
		}
	}
	return got
}

// image is a reference RAM image: a file and its zero bitmap.
type image struct {
	path string
	data []byte
	zero []byte
}

// newImage writes an image of n pages where every page p with p%zeroEvery
// == 0 is zero and the others hold random bytes.
func newImage(t testing.TB, n, zeroEvery int) *image {
	t.Helper()
	r := rand.New(rand.NewPCG(uint64(n), uint64(zeroEvery)))
	img := &image{data: make([]byte, n*PageSize), zero: make([]byte, (n+7)/8)}
	for p := range n {
		if p%zeroEvery == 0 {
			img.zero[p/8] |= 1 << (p % 8)
			continue
		}
		for i := p * PageSize; i < (p+1)*PageSize; i += 8 {
			v := r.Uint64()
			for j := range 8 {
				img.data[i+j] = byte(v >> (8 * j))
			}
		}
	}
	img.path = filepath.Join(t.TempDir(), "image")
	if err := os.WriteFile(img.path, img.data, 0o644); err != nil {
		t.Fatal(err)
	}
	return img
}

func (img *image) isZero(p int) bool { return bitSet(img.zero, uint64(p)) }

func (img *image) sum(p int) string {
	s := sha256.Sum256(img.data[p*PageSize : (p+1)*PageSize])
	return hex.EncodeToString(s[:])
}

// countingFetcher fetches from an image and counts calls per page; it
// fails the test on a fetch of a zero page.
type countingFetcher struct {
	*FileFetcher
	t     testing.TB
	img   *image
	delay time.Duration
	fail  func(page uint64) error // nil: never fails

	mu    sync.Mutex
	calls map[uint64]int
}

func newCountingFetcher(t testing.TB, img *image) *countingFetcher {
	ff, err := NewFileFetcher(img.path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ff.Close() })
	return &countingFetcher{FileFetcher: ff, t: t, img: img, calls: make(map[uint64]int)}
}

func (c *countingFetcher) Fetch(ctx context.Context, page uint64) error {
	c.mu.Lock()
	c.calls[page]++
	c.mu.Unlock()
	if c.img.isZero(int(page)) {
		c.t.Errorf("page %d, zero at the checkpoint, was fetched", page)
	}
	if c.fail != nil {
		if err := c.fail(page); err != nil {
			return err
		}
	}
	if c.delay > 0 {
		time.Sleep(c.delay)
	}
	return c.FileFetcher.Fetch(ctx, page)
}

func (c *countingFetcher) fetched() map[uint64]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps.Clone(c.calls)
}

// requireFUSE fails the test unless FUSE mounts can be made here.
func requireFUSE(t testing.TB) {
	t.Helper()
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Fatalf("memtap needs /dev/fuse (%v): modprobe fuse", err)
	}
	if os.Geteuid() != 0 {
		t.Fatal("memtap tests mount FUSE directly: run them as root")
	}
}

// mountTap mounts a tap over img, closed (and checked gone) when the test
// ends.
func mountTap(t testing.TB, img *image, f Fetcher, change func(*Config)) *Tap {
	t.Helper()
	requireFUSE(t)
	dir := t.TempDir()
	cfg := Config{
		Dir: dir, Size: int64(len(img.data)), Zero: img.zero,
		CachePath: filepath.Join(dir, "cache"), Fetcher: f,
	}
	if change != nil {
		change(&cfg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	tap, err := Mount(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := tap.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
		assertUnmounted(t, tap.mnt)
	})
	return tap
}

// assertUnmounted fails if mnt is still a mount point.
func assertUnmounted(t testing.TB, mnt string) {
	t.Helper()
	if slices.Contains(mountPoints(t), mnt) {
		t.Errorf("%s is still mounted", mnt)
	}
}

// mountPoints lists the mount points of /proc/self/mountinfo.
func mountPoints(t testing.TB) []string {
	t.Helper()
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	var mps []string
	for line := range strings.Lines(string(data)) {
		if f := strings.Fields(line); len(f) > 4 {
			mps = append(mps, unescapeMountinfo(f[4]))
		}
	}
	return mps
}

// unescapeMountinfo undoes mountinfo's octal escapes (\040 for a space).
func unescapeMountinfo(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
