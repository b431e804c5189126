package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/snowflock/snowflock/allocator"
	"github.com/snowflock/snowflock/egosf"
)

// runLease is the lease `sfalloc run` holds its allocation with; it renews
// every third of it, so a killed sfalloc frees its slots within this time.
const runLease = "30s"

// defaultKillAfter is how long the command's processes get between SIGTERM
// and SIGKILL when they must stop (allocation lost, command exited leaving
// processes behind).
const defaultKillAfter = "10s"

// forwarded are the signals sfalloc run passes on to the command.
var forwarded = []os.Signal{os.Interrupt, syscall.SIGTERM, syscall.SIGHUP}

func newRunCmd(g *globals) *cobra.Command {
	var (
		f         requestFlags
		killAfter string
		reuseJob  bool
	)
	cmd := &cobra.Command{
		Use:   "run -n MAX [--min MIN] [flags] -- CMD [ARGS...]",
		Short: "Hold slots while a command runs, then release them",
		Long: `run requests slots, runs CMD with the allocation described in its
environment, and releases the slots however CMD ends. It renews the lease
while CMD runs, so even a killed sfalloc frees the slots within --lease.

CMD's environment gains:
  SF_ALLOC_ID   the allocation's ID
  SF_NSLOTS     the number of slots granted
  SF_HOSTS      host:count,host:count,...
  SF_HOSTFILE   an MPI hostfile ("host slots=N" lines), removed afterwards

CMD runs in its own process group (in the terminal's foreground when there is
one, so Ctrl-C reaches it once, and Ctrl-Z, fg and bg work as for any job; a
suspended run holds its slots for the backend's default lease). SIGINT,
SIGTERM and SIGHUP sent to sfalloc are forwarded to that group. When CMD
exits, processes it left in its group are stopped (SIGTERM, then SIGKILL after
--kill-after) before the slots are released. If sfalloc itself is killed, CMD
gets SIGKILL and a guard process stops the rest of the group. If the
allocation is lost (lease expired, released elsewhere), the group is stopped
the same way.

Inside a Slurm job (SLURM_JOB_ID set) with the slurm backend, run uses that
job's allocation (at most -n of its slots) instead of requesting slots, and
neither renews nor releases it; --reuse-job=false requests new slots.

sfalloc exits with CMD's status (128+N when CMD died of signal N; 126 when CMD
cannot be executed, 127 when it is not found; 1 if the allocation was lost),
or 1/2 when no slots were granted.`,
		Example: `  sfalloc run -n 3 -- sh -c 'echo $SF_NSLOTS'
  sfalloc run -n 8 --min 2 -- sh -c 'mpirun --hostfile "$SF_HOSTFILE" ./solver'`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 || cmd.ArgsLenAtDash() > 0 {
				return usageError{Err: fmt.Errorf("want CMD [ARGS...] after the flags (sfalloc run -n N -- CMD ARGS...)")}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			req, timeout, err := f.request(cmd)
			if err != nil {
				return err
			}
			grace, err := parseDuration("kill-after", killAfter)
			if err != nil {
				return err
			}
			// Catch signals from here on: none may kill sfalloc between
			// the grant and the command's start.
			sigs := make(chan os.Signal, 8)
			signal.Notify(sigs, forwarded...)
			defer signal.Stop(sigs)

			c, err := g.open(cmd.Context())
			if err != nil {
				return err
			}
			defer c.Close()
			if reuseJob {
				t, err := g.enclosing(cmd.Context(), c, req)
				if err != nil {
					return err
				}
				if t != nil {
					return exitError{Code: g.runHolding(cmd.Context(), c, t, runSpec{grace: grace, argv: args, borrowed: true}, sigs)}
				}
			}
			ctx, cancel := context.WithCancel(cmd.Context())
			defer cancel()
			type grant struct {
				t   *egosf.Ticket
				err error
			}
			granted := make(chan grant, 1)
			go func() {
				t, err := g.obtain(ctx, c, req, timeout)
				granted <- grant{t, err}
			}()
			var gr grant
			select {
			case gr = <-granted:
			case s := <-sigs:
				cancel()
				if gr = <-granted; gr.err == nil {
					g.release(cmd.Context(), c, gr.t.ID)
				}
				return fmt.Errorf("interrupted by %s while waiting for slots", s)
			}
			if gr.err != nil {
				return gr.err
			}
			return exitError{Code: g.runHolding(cmd.Context(), c, gr.t, runSpec{lease: req.Lease, grace: grace, argv: args}, sigs)}
		},
	}
	f.register(cmd, runLease)
	cmd.Flags().StringVar(&killAfter, "kill-after", defaultKillAfter, "time between SIGTERM and SIGKILL when the command's processes must stop")
	cmd.Flags().BoolVar(&reuseJob, "reuse-job", true, "inside a Slurm job (SLURM_JOB_ID set, slurm backend), run in that job's allocation instead of requesting slots")
	// Flags after CMD belong to CMD, with or without "--".
	cmd.Flags().SetInterspersed(false)
	return cmd
}

// release gives back allocation id, logging failure: the lease frees it then.
func (g *globals) release(ctx context.Context, c *egosf.Client, id string) {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if _, err := c.Release(rctx, id); errors.Is(err, allocator.ErrUnknownAllocation) {
		g.Log.Debug().Str("id", id).Msg("allocation already gone")
		return
	} else if err != nil {
		g.Log.Error().Err(err).Str("id", id).Msg("releasing slots failed; they are freed when the lease ends")
		return
	}
	g.Log.Info().Str("id", id).Msg("slots released")
}

// runSpec is what sfalloc run runs, and how.
type runSpec struct {
	lease time.Duration // 0: the lease granted
	grace time.Duration // between SIGTERM and SIGKILL
	argv  []string
	// borrowed: the slots belong to an enclosing allocation (a Slurm
	// job), which is neither renewed nor released.
	borrowed bool
}

// runHolding runs the command while holding ticket t, then releases t. It
// returns the exit status for sfalloc.
func (g *globals) runHolding(ctx context.Context, c *egosf.Client, t *egosf.Ticket, spec runSpec, sigs <-chan os.Signal) int {
	log := g.Log.With().Str("id", t.ID).Logger()
	if !spec.borrowed {
		defer g.release(ctx, c, t.ID)
	}

	hostfile, err := writeHostfile(t)
	if err != nil {
		fmt.Fprintf(g.stderr, "sfalloc: %v\n", err)
		return exitNotGranted
	}
	defer os.Remove(hostfile)

	holder := c.Hold(ctx, t, spec.lease)
	defer holder.Stop()

	j, err := startJob(spec.argv, append(os.Environ(), t.Env(hostfile)...), spec.grace)
	if err != nil {
		fmt.Fprintf(g.stderr, "sfalloc: %v\n", err)
		if errors.Is(err, exec.ErrNotFound) || errors.Is(err, os.ErrNotExist) {
			return 127
		}
		return 126
	}
	log.Debug().Int("pid", j.pid).Strs("argv", spec.argv).Msg("command started")

	lost := holder.Lost()
	wasLost := false
	var killAt <-chan time.Time
	for {
		select {
		case s := <-sigs:
			log.Info().Str("signal", s.String()).Msg("forwarding signal to the command")
			j.signal(s.(syscall.Signal))
		case <-lost:
			lost, wasLost = nil, true
			fmt.Fprintf(g.stderr, "sfalloc: %v; stopping the command\n", holder.Err())
			j.signal(syscall.SIGTERM)
			killAt = time.After(spec.grace)
		case <-killAt:
			j.kill()
		case ws := <-j.states:
			if ws.Stopped() {
				j.stopped(func() {
					// A stopped sfalloc cannot renew: hold the slots for
					// the backend's default lease while suspended.
					if spec.borrowed {
						return
					}
					if _, err := c.Renew(ctx, t.ID, 0); err != nil {
						log.Warn().Err(err).Msg("could not extend the lease for the suspension")
					}
				})
				continue
			}
			j.finish(spec.grace)
			if wasLost {
				return exitNotGranted
			}
			return exitStatus(ws)
		}
	}
}

func writeHostfile(t *egosf.Ticket) (string, error) {
	f, err := os.CreateTemp("", "sfalloc-hostfile-*")
	if err != nil {
		return "", fmt.Errorf("creating hostfile: %w", err)
	}
	if _, err := f.WriteString(t.Hostfile()); err != nil {
		f.Close()
		os.Remove(f.Name())
		return "", fmt.Errorf("writing hostfile: %w", err)
	}
	if err := f.Close(); err != nil {
		os.Remove(f.Name())
		return "", fmt.Errorf("writing hostfile: %w", err)
	}
	return f.Name(), nil
}
