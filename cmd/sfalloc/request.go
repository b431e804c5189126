package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/snowflock/snowflock/allocator"
	"github.com/snowflock/snowflock/egosf"
)

// requestFlags are the flags that describe a request (request and run).
type requestFlags struct {
	max, min  int
	name      string
	consumer  string
	resreq    string
	exclusive bool
	immediate bool
	timeout   string
	lease     string
}

func (f *requestFlags) register(cmd *cobra.Command, defaultLease string) {
	fl := cmd.Flags()
	fl.IntVarP(&f.max, "nslots", "n", 0, "number of slots wanted (the maximum granted; required)")
	fl.IntVar(&f.min, "min", 0, "smallest number of slots to accept (default: the -n value)")
	fl.StringVarP(&f.name, "job-name", "J", "", "name of the allocation")
	fl.StringVarP(&f.consumer, "consumer", "p", "", "EGO consumer or Slurm partition (static pool: recorded only)")
	fl.StringVar(&f.resreq, "resreq", "", "resource requirement (static pool: comma-separated host tags, all required)")
	fl.BoolVar(&f.exclusive, "exclusive", false, "use only hosts that no other allocation uses, and keep others off them")
	fl.BoolVarP(&f.immediate, "immediate", "i", false, "fail (exit 1) instead of waiting when the slots are not free now")
	fl.StringVarP(&f.timeout, "timeout", "t", "", "give up (exit 1) after waiting this long, e.g. 30s or 5m (default: wait until interrupted)")
	fl.StringVar(&f.lease, "lease", defaultLease, "lease: the allocation ends unless renewed within this time (default: the backend's)")
}

func (f *requestFlags) request(cmd *cobra.Command) (allocator.Request, time.Duration, error) {
	if !cmd.Flags().Changed("nslots") {
		return allocator.Request{}, 0, usageError{Err: fmt.Errorf("-n MAX is required: the number of slots wanted")}
	}
	minSlots := f.min
	if minSlots == 0 {
		minSlots = f.max
	}
	req := allocator.Request{
		Min: minSlots, Max: f.max, Name: f.name, Consumer: f.consumer, ResReq: f.resreq,
		Exclusive: f.exclusive, Immediate: f.immediate,
	}
	var err error
	if req.Lease, err = parseDuration("lease", f.lease); err != nil {
		return req, 0, err
	}
	timeout, err := parseDuration("timeout", f.timeout)
	if err != nil {
		return req, 0, err
	}
	if err := req.Validate(); err != nil {
		given := fmt.Sprintf("-n %d", f.max)
		if cmd.Flags().Changed("min") {
			given += fmt.Sprintf(" --min %d", f.min)
		}
		return req, 0, usageError{Err: fmt.Errorf("%s: %w", given, err)}
	}
	return req, timeout, nil
}

// obtain asks for slots, showing the wait on a terminal; cancelling ctx
// abandons the wait.
func (g *globals) obtain(ctx context.Context, c *egosf.Client, req allocator.Request, timeout time.Duration) (*egosf.Ticket, error) {
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	if !req.Immediate {
		done := make(chan struct{})
		defer close(done)
		go showWait(g.stderr, req, done)
	}
	g.Log.Debug().Int("min", req.Min).Int("max", req.Max).Str("backend", c.Allocator().Info().Name).Msg("requesting slots")
	t, err := c.RequestTicket(ctx, req)
	if err != nil {
		return nil, err
	}
	g.Log.Info().Str("id", t.ID).Int("granted", t.Granted).Str("hosts", t.HostsString()).Msg("slots granted")
	return t, nil
}

// showWait prints how long a request has waited, on a terminal only, once
// the wait passes a second.
func showWait(w io.Writer, req allocator.Request, done <-chan struct{}) {
	f, ok := w.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return
	}
	want := fmt.Sprintf("%d–%d", req.Min, req.Max)
	if req.Min == req.Max {
		want = fmt.Sprint(req.Max)
	}
	start := time.Now()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	shown := false
	for {
		select {
		case <-done:
			if shown {
				fmt.Fprint(w, "\r\033[K")
			}
			return
		case <-tick.C:
			shown = true
			fmt.Fprintf(w, "\rsfalloc: waiting for %s slots… %s ", want, time.Since(start).Round(time.Second))
		}
	}
}

func newRequestCmd(g *globals) *cobra.Command {
	var (
		f      requestFlags
		asJSON bool
		quiet  bool
	)
	cmd := &cobra.Command{
		Use:   "request -n MAX [--min MIN] [-J NAME] [--immediate] [-t TIMEOUT] [--json]",
		Short: "Request slots and keep them until released or the lease ends",
		Long: `request asks for between --min and -n slots (exactly -n without --min) and
prints the allocation. The slots stay held after sfalloc exits, until
'sfalloc release ID' or until the lease runs out without 'sfalloc renew ID'.

Without --immediate, request waits until enough slots are free (first come,
first served), the --timeout passes, or it is interrupted; a request that the
pool can never satisfy fails at once.`,
		Example: `  sfalloc request -n 6 --json
  ID=$(sfalloc request -n 4 -q)
  sfalloc request -n 16 --min 4 -J sweep --timeout 2m --lease 8h`,
		Args: nArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			req, timeout, err := f.request(cmd)
			if err != nil {
				return err
			}
			// SIGINT and SIGTERM abandon the wait (and leave the queue).
			ctx, c, done, err := g.openUntilSignal(cmd.Context())
			if err != nil {
				return err
			}
			defer done()
			t, err := g.obtain(ctx, c, req, timeout)
			if err != nil {
				return err
			}
			switch {
			case asJSON:
				return writeJSON(g.stdout, t)
			case quiet:
				_, err = fmt.Fprintln(g.stdout, t.ID)
			default:
				_, err = fmt.Fprintf(g.stdout, "%s: %d slots on %s, lease until %s\n", t.ID, t.Granted, t.HostsString(), expiry(t.Expires))
			}
			return err
		},
	}
	f.register(cmd, "")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the allocation as JSON")
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "print only the allocation ID")
	return cmd
}
