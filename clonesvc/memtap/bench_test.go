package memtap

import (
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// BenchmarkFaultService times page faults on the tap: one iteration is
// the first touch of one page by another process, which costs the
// kernel's FUSE round trip and the tap's answer. It reports the median
// and p99 fault time for pages fetched by a local fetcher (the image
// file, in the page cache) and, as the in-run baseline, for pages of the
// zero bitmap (the FUSE round trip alone). The network's share is
// mcdist's benchmark.
func BenchmarkFaultService(b *testing.B) {
	b.Run("fetch", func(b *testing.B) { benchFaults(b, false) })
	b.Run("zero", func(b *testing.B) { benchFaults(b, true) })
}

func benchFaults(b *testing.B, zero bool) {
	n := max(b.N, 16)
	zeroEvery := n + 1 // only page 0 is zero
	if zero {
		zeroEvery = 1
	}
	img := newImage(b, n, zeroEvery)
	f := newCountingFetcher(b, img)
	tap := mountTap(b, img, f, nil)
	pages := rand.New(rand.NewPCG(1, 2)).Perm(n)[:b.N]
	if !zero {
		pages = slices.DeleteFunc(pages, func(p int) bool { return p == 0 })
	}
	b.ResetTimer()
	got := touch(b, tap.Path(), pages)
	b.StopTimer()
	if len(pages) == 0 {
		return
	}
	var times []time.Duration
	for _, p := range pages {
		times = append(times, time.Duration(got[p].nanos))
	}
	slices.Sort(times)
	median, p99 := times[len(times)/2], times[min(len(times)-1, len(times)*99/100)]
	b.ReportMetric(float64(median.Microseconds()), "median-µs/fault")
	b.ReportMetric(float64(p99.Microseconds()), "p99-µs/fault")
	want := uint64(len(pages))
	if zero {
		want = 0
	}
	if st := tap.Stats(); st.Fetched != want {
		b.Errorf("%d pages fetched for %d faults, want %d", st.Fetched, len(pages), want)
	}
}
