package allocatortest

import (
	"slices"
	"testing"
	"time"
)

// CompareWithBaseline runs op and, untimed, baseline once per benchmark
// iteration, then reports both latencies (median, p99) and their ratio:
// the pattern of every allocator benchmark (a figure against a baseline
// measured in the same run). what and baselineWhat name them in the log.
func CompareWithBaseline(b *testing.B, what string, op func(), baselineWhat string, baseline func()) {
	b.Helper()
	var ours, base []time.Duration
	for b.Loop() {
		start := time.Now()
		op()
		ours = append(ours, time.Since(start))
		b.StopTimer()
		start = time.Now()
		baseline()
		base = append(base, time.Since(start))
		b.StartTimer()
	}
	p50, p99 := Percentile(ours, 50), Percentile(ours, 99)
	b50, b99 := Percentile(base, 50), Percentile(base, 99)
	b.ReportMetric(ms(p50), "p50-ms")
	b.ReportMetric(ms(b50), "baseline-p50-ms")
	b.ReportMetric(float64(p50)/float64(b50), "ratio-p50")
	b.Logf("%s over %d runs: median %s, p99 %s; baseline (%s): median %s, p99 %s; ratio %.2f (median), %.2f (p99)",
		what, len(ours), p50, p99, baselineWhat, b50, b99, float64(p50)/float64(b50), float64(p99)/float64(b99))
}

// Percentile returns the p-th percentile of ds.
func Percentile(ds []time.Duration, p int) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[min(len(s)-1, len(s)*p/100)]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
