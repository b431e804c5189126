package mcdist

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"
)

// BenchmarkServerBytes: N = 1, 2, 3 clients on their own hosts each fetch
// the same b.N pages; the server's bytes per page, with multicast and with
// unicast only (the baseline), and the ratio of N clients' bytes to one
// client's in the same mode (goal with multicast: ≤ 1.2).
func BenchmarkServerBytes(b *testing.B) {
	tb := newBed(b, 4)
	onePerPage := map[bool]float64{}
	for _, unicast := range []bool{false, true} {
		for n := 1; n <= 3; n++ {
			mode := "multicast"
			if unicast {
				mode = "unicast"
			}
			b.Run(fmt.Sprintf("%s/clients=%d", mode, n), func(b *testing.B) {
				f := newFamily(uint64(b.N), 0)
				cfg := f.serverConfig(tb, 0)
				cfg.Unicast = unicast
				srv, _ := startServer(b, tb, 0, cfg)
				var clients []*Client
				for i := range n {
					clients = append(clients, startClient(b, tb, i+1, f.clientConfig(tb, 0, newMemStore())))
				}
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				defer cancel()
				b.ResetTimer()
				errs := make(chan error, n)
				for _, c := range clients {
					go func() { errs <- fetchAll(ctx, c, uint64(b.N), 4) }()
				}
				for range clients {
					if err := <-errs; err != nil {
						b.Fatal(err)
					}
				}
				b.StopTimer()
				perPage := float64(srv.Stats().BytesSent) / float64(b.N)
				if n == 1 {
					onePerPage[unicast] = perPage
				}
				b.ReportMetric(perPage, "server-B/page")
				if one := onePerPage[unicast]; one > 0 {
					b.ReportMetric(perPage/one, "x-one-client")
				}
			})
		}
	}
}

// BenchmarkFaultService: one client fetches b.N distinct pages one after
// another over the veth bed; the median and p99 time from Fetch to the
// page being stored.
func BenchmarkFaultService(b *testing.B) {
	tb := newBed(b, 2)
	f := newFamily(uint64(b.N), 0)
	startServer(b, tb, 0, f.serverConfig(tb, 0))
	c := startClient(b, tb, 1, f.clientConfig(tb, 0, newMemStore()))
	ctx := context.Background()
	took := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for p := range uint64(b.N) {
		start := time.Now()
		if err := c.Fetch(ctx, p); err != nil {
			b.Fatal(err)
		}
		took = append(took, time.Since(start))
	}
	b.StopTimer()
	slices.Sort(took)
	b.ReportMetric(float64(took[len(took)/2].Microseconds()), "median-µs")
	b.ReportMetric(float64(took[len(took)*99/100].Microseconds()), "p99-µs")
	b.ReportMetric(float64(c.Stats().Retries), "retries")
}
