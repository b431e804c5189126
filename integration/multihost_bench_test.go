package integration

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/snowflock/snowflock/integration/hostbed"
	"github.com/snowflock/snowflock/integration/scenario"
)

// benchUpto sizes the job each clone runs (sfprimes -single): the same
// job everywhere, so that the clones need the same memory.
const benchUpto = "5000000"

// BenchmarkMultiHost measures clones on other hosts on 5 test hosts (the
// parent's h1 has no slots; h2..h5 two each), once with mcdist and once
// with multicast off (every page to the host that asked: the baseline),
// and prints the table of the issue: memory-server bytes for N = 1, 4, 8
// clones each running the same job, with the ratio to N = 1; the fraction
// of RAM an idle clone fetches in its first 10 s; the job's time in a
// clone against the parent. It runs once whatever b.N: every figure is
// minutes of VMs.
func BenchmarkMultiHost(b *testing.B) {
	ns := []int{1, 4, 8}
	bytes := map[string]map[int]int64{}
	var idleFrac, jobFrac float64
	var parentMS, cloneMS float64
	for b.Loop() {
		for _, mode := range []string{"mcdist", "unicast"} {
			bytes[mode] = map[int]int64{}
			bed, parent := multiHost(b, 5, func(o *hostbed.Options) {
				o.SlotsPerHost = []int{0, 2, 2, 2, 2}
				o.MemoryUnicast = mode == "unicast"
			})
			if mode == "mcdist" {
				parentMS = jobMS(b, bed, "h1", parent)
			}
			for _, n := range ns {
				ticket := cloneAndWait(b, bed, parent, n)
				clones := clonesOf(b, bed, ticket)
				if mode == "mcdist" && n == 1 {
					time.Sleep(10 * time.Second)
					c := clones[0]
					idleFrac = float64(fetchedOf(b, bed, c.host, c.id)) / float64(256<<20)
				}
				var wg sync.WaitGroup
				var mu sync.Mutex
				var sum float64
				for _, c := range clones {
					wg.Go(func() {
						ms := jobMS(b, bed, c.host, c.id)
						mu.Lock()
						sum += ms
						mu.Unlock()
					})
				}
				wg.Wait()
				if mode == "mcdist" && n == 1 {
					cloneMS = sum
					c := clones[0]
					jobFrac = float64(fetchedOf(b, bed, c.host, c.id)) / float64(256<<20)
				}
				bytes[mode][n] = ticketBytes(b, bed, ticket)
				if _, err := bed.Sfctl("h1", "kill", ticket); err != nil {
					b.Fatal(err)
				}
			}
			bed.Down()
		}
	}
	var t strings.Builder
	fmt.Fprintf(&t, "memory-server bytes, N clones on 4 other hosts each running sfprimes -single -upto %s:\n", benchUpto)
	fmt.Fprintf(&t, "  %3s %14s %8s %14s %8s\n", "N", "mcdist", "N/1", "unicast", "N/1")
	for _, n := range ns {
		fmt.Fprintf(&t, "  %3d %14d %8.2f %14d %8.2f\n", n, bytes["mcdist"][n], ratio(bytes["mcdist"][n], bytes["mcdist"][1]),
			bytes["unicast"][n], ratio(bytes["unicast"][n], bytes["unicast"][1]))
	}
	fmt.Fprintf(&t, "idle clone: %.1f%% of its 256 MiB fetched in its first 10 s; %.1f%% once it also ran the job\n", 100*idleFrac, 100*jobFrac)
	fmt.Fprintf(&t, "pages fetched that were free in the guest: 0 by construction (init_on_free=1 zeroes them, zero-bitmap pages are never fetched; TestFreedMemoryNotFetched)\n")
	fmt.Fprintf(&t, "the job: %.0f ms in the parent, %.0f ms in a clone on another host (%.2fx)\n", parentMS, cloneMS, cloneMS/parentMS)
	fmt.Fprintf(&t, "fault service time (median, p99): printed above by BenchmarkFaultService of clonesvc/mcdist (a page over veth) and of clonesvc/memtap (a FUSE fault)\n")
	b.Log("\n" + t.String())
	b.ReportMetric(ratio(bytes["mcdist"][8], bytes["mcdist"][1]), "x-bytes-8-vs-1-mcdist")
	b.ReportMetric(ratio(bytes["unicast"][8], bytes["unicast"][1]), "x-bytes-8-vs-1-unicast")
	b.ReportMetric(100*idleFrac, "%-ram-idle-10s")
	b.ReportMetric(100*jobFrac, "%-ram-after-job")
	b.ReportMetric(cloneMS/parentMS, "x-job-clone-vs-parent")
}

func ratio(a, b int64) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}

type cloneAt struct{ host, id string }

// cloneAndWait makes n clones of parent (operator clone) and waits until
// every clone's agent answers; it returns the ticket.
func cloneAndWait(b testing.TB, bed *hostbed.Bed, parent string, n int) string {
	out, err := bed.Sfctl("h1", "clone", parent, "-n", strconv.Itoa(n+1), "--json")
	if err != nil {
		b.Fatalf("clone -n %d: %v", n+1, err)
	}
	var r struct {
		Ticket  string `json:"ticket"`
		Granted int    `json:"granted"`
	}
	if err := json.Unmarshal(out, &r); err != nil || r.Granted != n+1 {
		b.Fatalf("clone -n %d: %s (%v)", n+1, out, err)
	}
	waitFor(b, func() bool {
		for _, c := range clonesOf(b, bed, r.Ticket) {
			for _, v := range vmsOn(b, bed, c.host) {
				if v["id"] == c.id && v["state"] != "ready" {
					return false
				}
			}
		}
		return true
	})
	return r.Ticket
}

// clonesOf lists the clones of ticket on h2..h5.
func clonesOf(b testing.TB, bed *hostbed.Bed, ticket string) []cloneAt {
	var out []cloneAt
	for _, h := range bed.Hosts[1:] {
		for _, v := range vmsOn(b, bed, h.Name) {
			if v["ticket"] == ticket {
				out = append(out, cloneAt{h.Name, v["id"].(string)})
			}
		}
	}
	return out
}

// fetchedOf is what host fetched for clone id's family.
func fetchedOf(b testing.TB, bed *hostbed.Bed, host, id string) int64 {
	for _, v := range vmsOn(b, bed, host) {
		if v["id"] == id {
			n, _ := strconv.ParseInt(fmt.Sprint(v["fetched_bytes"]), 10, 64)
			return n
		}
	}
	b.Fatalf("no clone %s on %s", id, host)
	return 0
}

// ticketBytes is what h1's memory server sent for ticket's family.
func ticketBytes(b testing.TB, bed *hostbed.Bed, ticket string) int64 {
	out, err := bed.Sfctl("h1", "tickets", "--json")
	if err != nil {
		b.Fatal(err)
	}
	var ts []map[string]any
	if err := json.Unmarshal(out, &ts); err != nil {
		b.Fatal(err)
	}
	for _, t := range ts {
		if t["id"] == ticket {
			n, _ := strconv.ParseInt(fmt.Sprint(t["memory_bytes_sent"]), 10, 64)
			return n
		}
	}
	b.Fatalf("no ticket %s on h1", ticket)
	return 0
}

// jobMS runs the job in VM id on host and returns its compute time.
func jobMS(b testing.TB, bed *hostbed.Bed, host, id string) float64 {
	out, err := bed.Sfctl(host, "vm", "exec", id, "--", "sfprimes", "-single", "-upto", benchUpto, "--json")
	if err != nil {
		b.Fatalf("job in %s on %s: %v: %s", id, host, err, out)
	}
	var r struct {
		TotalMS float64 `json:"total_ms"`
	}
	if err := json.Unmarshal(scenario.LastJSONLine(out), &r); err != nil {
		b.Fatalf("job printed %q: %v", out, err)
	}
	return r.TotalMS
}
