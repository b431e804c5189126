// Command sfprimes is SnowFlock's demo: it counts the primes up to -upto in
// -n VMs. It clones the VM it runs in (sf_clone); every VM, the parent
// included, counts its share of the range; the clones pass their counts to
// the parent as their exit results (sf_exit), and the parent joins them
// (sf_join) and prints the sum with a table of timings. -single counts
// everything in this VM: the check value.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/snowflock/snowflock/contrib/guest/programs/internal/family"
	"github.com/snowflock/snowflock/egosf"
	"github.com/snowflock/snowflock/egosf/guestproto"
)

// shareResult is one VM's part of the count: a clone's exit result.
type shareResult struct {
	CloneID   int     `json:"clone_id"`
	Lo        int     `json:"lo"`
	Hi        int     `json:"hi"`
	Primes    int     `json:"primes"`
	ComputeMS float64 `json:"compute_ms"`
}

// report is what the parent prints.
type report struct {
	Upto    int                `json:"upto"`
	VMs     int                `json:"vms"`
	Primes  int                `json:"primes"`
	CloneMS float64            `json:"clone_ms,omitempty"` // sf_clone seen from the guest
	TotalMS float64            `json:"total_ms"`
	Shares  []shareResult      `json:"shares"`
	Timing  *guestproto.Timing `json:"timing,omitempty"` // sfld's account of the clone
}

func main() {
	n := flag.Int("n", 4, "number of VMs to count in (the parent is one)")
	upto := flag.Int("upto", 2_000_000, "count the primes in [2, upto]")
	single := flag.Bool("single", false, "count in this VM alone, without cloning (the check value)")
	asJSON := flag.Bool("json", false, "print the report as one JSON object")
	flag.Parse()
	if *n < 1 || *upto < 2 || flag.NArg() > 0 {
		fmt.Fprintln(os.Stderr, "sfprimes: want -n ≥ 1, -upto ≥ 2 and no arguments")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	r, err := run(ctx, *n, *upto, *single)
	if err != nil {
		fmt.Fprintln(os.Stderr, "sfprimes:", err)
		os.Exit(1)
	}
	if r == nil { // a clone: its result went to the parent
		return
	}
	if *asJSON {
		err = json.NewEncoder(os.Stdout).Encode(r)
	} else {
		err = r.print(os.Stdout)
	}
	if err != nil {
		os.Exit(1)
	}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// count counts clone id's share of m.
func count(id, m, upto int) shareResult {
	start := time.Now()
	lo, hi := share(id, m, upto)
	return shareResult{CloneID: id, Lo: lo, Hi: hi, Primes: countPrimes(lo, hi), ComputeMS: ms(time.Since(start))}
}

// run counts; it returns nil in a clone.
func run(ctx context.Context, n, upto int, single bool) (*report, error) {
	start := time.Now()
	if single {
		s := count(0, 1, upto)
		return &report{Upto: upto, VMs: 1, Primes: s.Primes, TotalMS: ms(time.Since(start)), Shares: []shareResult{s}}, nil
	}
	g, err := egosf.OpenGuest(ctx)
	if err != nil {
		return nil, err
	}
	defer g.Close()
	f, err := family.Fork(ctx, g, n)
	if err != nil {
		return nil, err
	}
	mine := count(f.ID, f.Ticket.Granted, upto)
	if f.ID > 0 {
		return nil, f.Exit(ctx, mine)
	}
	results, err := family.Gather[shareResult](ctx, f)
	if err != nil {
		return nil, err
	}
	r := &report{Upto: upto, VMs: f.Ticket.Granted, CloneMS: ms(f.CloneTook), Shares: []shareResult{mine}, Timing: f.Timing}
	for _, c := range results {
		r.Shares = append(r.Shares, c.Value)
	}
	for _, s := range r.Shares {
		r.Primes += s.Primes
	}
	r.TotalMS = ms(time.Since(start))
	return r, nil
}

func (r *report) print(w io.Writer) error {
	fmt.Fprintf(w, "primes in [2, %d]: %d, counted in %d VM(s) in %.0f ms\n", r.Upto, r.Primes, r.VMs, r.TotalMS)
	if r.CloneMS > 0 {
		fmt.Fprintf(w, "sf_clone took %.1f ms inside the guest\n", r.CloneMS)
	}
	if t := r.Timing; t != nil {
		fmt.Fprintf(w, "sfld: checkpoint %.1f ms (parent paused %.1f ms), descriptor %d bytes in %.1f ms, clone total %.1f ms\n",
			t.CheckpointMS, t.PauseMS, t.DescriptorBytes, t.DescriptorMS, t.TotalMS)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "clone\tfrom\tto\tprimes\tcompute ms\tstart ms\t")
	for _, s := range r.Shares {
		start := "-"
		if t := r.Timing; t != nil && s.CloneID > 0 && s.CloneID <= len(t.CloneStartMS) {
			start = fmt.Sprintf("%.1f", t.CloneStartMS[s.CloneID-1])
		}
		fmt.Fprintf(tw, "%d\t%d\t%d\t%d\t%.1f\t%s\t\n", s.CloneID, s.Lo, s.Hi, s.Primes, s.ComputeMS, start)
	}
	return tw.Flush()
}
