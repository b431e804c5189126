package kvmbackend

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestFreezeMemory(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	// 5 MiB + 1 page + a partial page: spans a chunk boundary and ends off a
	// page boundary; holes, written zero pages and data pages.
	size := int64(5<<20 + pageSize + 100)
	if err := os.WriteFile(src, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(src, size); err != nil {
		t.Fatal(err)
	}
	data := map[int64][]byte{
		0:                  page("first "),
		3 * pageSize:       make([]byte, pageSize), // written, but zero
		4<<20 - pageSize:   page("before chunk edge "),
		4 << 20:            page("after chunk edge "),
		size - 100:         bytes.Repeat([]byte{7}, 100),
		2<<20 + pageSize/2: []byte("half a page in"),
	}
	for off, d := range data {
		writeFileAt(t, src, d, off)
	}
	want, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}

	dst := filepath.Join(dir, "dst")
	zero, st, err := freezeMemory(context.Background(), src, dst, size)
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(dst)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("frozen copy differs from the source")
	}
	pages := int((size + pageSize - 1) / pageSize)
	if len(zero) != (pages+7)/8 {
		t.Fatalf("bitmap of %d bytes for %d pages", len(zero), pages)
	}
	nonZero := 0
	for p := range pages {
		isZero := bytes.Equal(want[p*pageSize:min((p+1)*pageSize, len(want))], make([]byte, min(pageSize, len(want)-p*pageSize)))
		if !isZero {
			nonZero++
		}
		if bit := zero[p/8]&(1<<(p%8)) != 0; bit != isZero {
			t.Errorf("page %d: zero bit %v, page is zero: %v", p, bit, isZero)
		}
	}
	if st.ZeroPages != pages-nonZero || st.Written != int64(nonZero-1)*pageSize+100 {
		t.Errorf("stats %+v: want %d zero pages and %d bytes written", st, pages-nonZero, (nonZero-1)*pageSize+100)
	}
	if st.Data >= size {
		t.Errorf("read %d bytes of a sparse %d-byte file: holes were not skipped", st.Data, size)
	}

	// An existing destination is refused (never overwrite an image).
	if _, _, err := freezeMemory(context.Background(), src, dst, size); err == nil {
		t.Error("freeze over an existing image succeeded")
	}
	// A cancelled freeze leaves no file.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	dst2 := filepath.Join(dir, "dst2")
	if _, _, err := freezeMemory(ctx, src, dst2, size); err == nil {
		t.Error("cancelled freeze succeeded")
	}
	if _, err := os.Stat(dst2); !os.IsNotExist(err) {
		t.Errorf("cancelled freeze left %s: %v", dst2, err)
	}
}

// BenchmarkFreeze copies a 256 MiB RAM file with 96 MiB of data (half of
// it zero pages) on the test file system, against a plain full copy
// (io.Copy) of the same file as the baseline.
func BenchmarkFreeze(b *testing.B) {
	dir := b.TempDir()
	src := filepath.Join(dir, "src")
	const size = 256 << 20
	f, err := os.Create(src)
	if err != nil {
		b.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		b.Fatal(err)
	}
	data := page("guest data ")
	for off := int64(16 << 20); off < 112<<20; off += 2 * pageSize {
		if _, err := f.WriteAt(data, off); err != nil { // data page
			b.Fatal(err)
		}
		if _, err := f.WriteAt(zeroPage, off+pageSize); err != nil { // zero page
			b.Fatal(err)
		}
	}
	f.Close()
	var ours, plain time.Duration
	n := 0
	for b.Loop() {
		dst := filepath.Join(dir, "dst")
		t0 := time.Now()
		if _, _, err := freezeMemory(context.Background(), src, dst, size); err != nil {
			b.Fatal(err)
		}
		ours += time.Since(t0)
		os.Remove(dst)
		t0 = time.Now()
		if err := plainCopy(src, dst); err != nil {
			b.Fatal(err)
		}
		plain += time.Since(t0)
		os.Remove(dst)
		n++
	}
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 / float64(n) }
	b.ReportMetric(ms(ours), "ms-freeze")
	b.ReportMetric(ms(plain), "ms-plain-copy-baseline")
	b.ReportMetric(ms(plain)/ms(ours), "x-plain-vs-freeze")
}

func plainCopy(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// TestRefreezeMemory: after the source changes (a page rewritten, a page
// zeroed, a new page written), refreezeMemory makes the copy equal to the
// source again, writing only the changed pages, and its zero bitmap is the
// source's.
func TestRefreezeMemory(t *testing.T) {
	dir := t.TempDir()
	src, dst := filepath.Join(dir, "src"), filepath.Join(dir, "dst")
	size := int64(6 << 20)
	if err := os.WriteFile(src, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(src, size); err != nil {
		t.Fatal(err)
	}
	for p := int64(0); p < 64; p++ {
		writeFileAt(t, src, page(fmt.Sprintf("page %d ", p)), p*pageSize)
	}
	ctx := context.Background()
	if _, _, err := freezeMemory(ctx, src, dst, size); err != nil {
		t.Fatal(err)
	}
	writeFileAt(t, src, page("rewritten "), 5*pageSize)              // changed
	writeFileAt(t, src, make([]byte, pageSize), 9*pageSize)          // became zero
	writeFileAt(t, src, page("new beyond a chunk "), 4<<20+pageSize) // new data
	zero, st, err := refreezeMemory(ctx, src, dst, size)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := os.ReadFile(src)
	got, _ := os.ReadFile(dst)
	if !bytes.Equal(got, want) {
		t.Fatal("the updated copy differs from the source")
	}
	if st.Written != 2*pageSize {
		t.Errorf("wrote %d bytes, want only the 2 changed non-zero pages (%d)", st.Written, 2*pageSize)
	}
	for p := 0; p < int(size/pageSize); p++ {
		isZero := bytes.Equal(want[p*pageSize:(p+1)*pageSize], zeroPage)
		if bit := zero[p/8]&(1<<(p%8)) != 0; bit != isZero {
			t.Errorf("page %d: zero bit %v, page is zero: %v", p, bit, isZero)
		}
	}
	// The zeroed page is a hole again in the copy.
	f, err := os.Open(dst)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if off, err := unix.Seek(int(f.Fd()), 9*pageSize, unix.SEEK_HOLE); err != nil || off != 9*pageSize {
		t.Errorf("page 9 of the copy: SEEK_HOLE gave %d, %v; want a hole there", off, err)
	}
}
