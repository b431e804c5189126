package static

import (
	"context"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"go.etcd.io/bbolt"

	"github.com/snowflock/snowflock/allocator"
)

// BenchmarkGrantRelease measures one grant plus its release through the
// static backend, and as the baseline, in the same run, the floor under it:
// two bare bbolt open+update+close cycles on a database of the same size
// (every static call opens the database so that processes share it safely).
func BenchmarkGrantRelease(b *testing.B) {
	a, err := New(Config{Hosts: twoHosts(64, 64), StateDir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	// Some background load: other holders' allocations.
	for range 20 {
		if _, err := a.Request(b.Context(), allocator.Request{Min: 2, Max: 2, Immediate: true}); err != nil {
			b.Fatal(err)
		}
	}
	basePath := filepath.Join(b.TempDir(), "base.db")
	baseline := func() {
		for range 2 {
			db, err := bbolt.Open(basePath, 0o600, &bbolt.Options{Timeout: time.Second})
			if err != nil {
				b.Fatal(err)
			}
			if err := db.Update(func(tx *bbolt.Tx) error {
				bk, err := tx.CreateBucketIfNotExists([]byte("b"))
				if err != nil {
					return err
				}
				return bk.Put([]byte("k"), make([]byte, 256))
			}); err != nil {
				b.Fatal(err)
			}
			db.Close()
		}
	}
	var ours, base []time.Duration
	b.ResetTimer()
	for b.Loop() {
		start := time.Now()
		al, err := a.Request(b.Context(), allocator.Request{Min: 1, Max: 1, Immediate: true})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := a.Release(b.Context(), al.ID, nil); err != nil {
			b.Fatal(err)
		}
		ours = append(ours, time.Since(start))
		b.StopTimer()
		start = time.Now()
		baseline()
		base = append(base, time.Since(start))
		b.StartTimer()
	}
	p50, p99 := percentile(ours, 50), percentile(ours, 99)
	b50, b99 := percentile(base, 50), percentile(base, 99)
	b.ReportMetric(us(p50), "p50-µs")
	b.ReportMetric(us(p99), "p99-µs")
	b.ReportMetric(us(b50), "baseline-p50-µs")
	b.ReportMetric(us(b99), "baseline-p99-µs")
	b.ReportMetric(float64(p50)/float64(b50), "ratio-p50")
	b.Logf("static grant+release over %d runs: median %s, p99 %s; baseline (2 bare bbolt open+update+close): median %s, p99 %s; ratio %.2f (median), %.2f (p99)",
		len(ours), p50, p99, b50, b99, float64(p50)/float64(b50), float64(p99)/float64(b99))
}

func percentile(ds []time.Duration, p int) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[min(len(s)-1, len(s)*p/100)]
}

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

// BenchmarkGrantReleaseContended is BenchmarkGrantRelease with 8 holders
// granting and releasing at once, against the uncontended figure measured
// in the same run as the baseline.
func BenchmarkGrantReleaseContended(b *testing.B) {
	a, err := New(Config{Hosts: twoHosts(64, 64), StateDir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	cycle := func() time.Duration {
		start := time.Now()
		al, err := a.Request(context.Background(), allocator.Request{Min: 1, Max: 1, Immediate: true})
		if err != nil {
			b.Error(err)
			return 0
		}
		if _, err := a.Release(context.Background(), al.ID, nil); err != nil {
			b.Error(err)
		}
		return time.Since(start)
	}
	const holders = 8
	var (
		mu          sync.Mutex
		alone, busy []time.Duration
	)
	for b.Loop() {
		alone = append(alone, cycle())
		var wg sync.WaitGroup
		for range holders {
			wg.Go(func() {
				d := cycle()
				mu.Lock()
				busy = append(busy, d)
				mu.Unlock()
			})
		}
		wg.Wait()
	}
	p50, p99 := percentile(busy, 50), percentile(busy, 99)
	b50 := percentile(alone, 50)
	b.ReportMetric(us(p50), "p50-µs")
	b.ReportMetric(us(p99), "p99-µs")
	b.ReportMetric(us(b50), "baseline-p50-µs")
	b.ReportMetric(float64(p50)/float64(b50), "ratio-p50")
	b.Logf("static grant+release with %d holders at once: median %s, p99 %s; uncontended (baseline, same run): median %s; ratio %.2f",
		holders, p50, p99, b50, float64(p50)/float64(b50))
}
