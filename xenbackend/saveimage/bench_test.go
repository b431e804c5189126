package saveimage

import (
	"bytes"
	"context"
	"io"
	"testing"
	"time"
)

// denseMem is a preallocated in-memory memory image, so that the benchmark
// measures Split and Join rather than a file system.
type denseMem struct{ b []byte }

func (m *denseMem) WriteAt(p []byte, off int64) (int, error) { return copy(m.b[off:], p), nil }

func (m *denseMem) ReadAt(p []byte, off int64) (int, error) {
	if off >= int64(len(m.b)) {
		return 0, io.EOF
	}
	n := copy(p, m.b[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// BenchmarkSplitJoin64MiB splits and joins a 64 MiB PV image (16384 pages
// in batches of 1024, one page in eight zero) and reports each direction's
// throughput and the descriptor's size against the image's.
func BenchmarkSplitJoin64MiB(b *testing.B) {
	const pages = 16384
	zeros := map[uint64]bool{}
	for p := uint64(0); p < pages; p += 8 {
		zeros[p] = true
	}
	var recs []rec
	for p := uint64(0); p < pages; p += 1024 {
		recs = append(recs, batch(0, span(pfinfoNotab, p, p+1024), zeros))
	}
	s := baseSpec()
	s.records = pvRecords(pages-1, recs...)
	img := s.build().bytes
	mem := &denseMem{b: make([]byte, pages*pageSize)}
	ctx := context.Background()
	var desc, out bytes.Buffer
	out.Grow(len(img))
	var splitTime, joinTime time.Duration
	b.SetBytes(int64(len(img)))
	b.ResetTimer()
	for b.Loop() {
		desc.Reset()
		out.Reset()
		t0 := time.Now()
		if _, err := split(ctx, bytes.NewReader(img), &desc, mem, &defaultLimits); err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		if err := Join(ctx, bytes.NewReader(desc.Bytes()), mem, &out); err != nil {
			b.Fatal(err)
		}
		splitTime += t1.Sub(t0)
		joinTime += time.Since(t1)
	}
	b.StopTimer()
	if !bytes.Equal(out.Bytes(), img) {
		b.Fatal("Join(Split(x)) != x")
	}
	mb := float64(len(img)) * float64(b.N) / 1e6
	b.ReportMetric(mb/splitTime.Seconds(), "split-MB/s")
	b.ReportMetric(mb/joinTime.Seconds(), "join-MB/s")
	b.ReportMetric(float64(desc.Len()), "desc-bytes")
	b.ReportMetric(float64(desc.Len())/float64(len(img)), "desc/image")
}
