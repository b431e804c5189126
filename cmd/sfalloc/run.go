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

	"github.com/snowflock/snowflock/egosf"
)

// runLease is the lease `sfalloc run` holds its allocation with; it renews
// every third of it, so a killed sfalloc frees its slots within this time.
const runLease = "30s"

func newRunCmd(g *globals) *cobra.Command {
	var f requestFlags
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

SIGINT, SIGTERM and SIGHUP are forwarded to CMD. sfalloc exits with CMD's
status (128+N when CMD died of signal N; 126 when CMD cannot be executed,
127 when it is not found), or 1/2 when no slots were granted.`,
		Example: `  sfalloc run -n 3 -- sh -c 'echo $SF_NSLOTS'
  sfalloc run -n 8 --min 2 -- mpirun --hostfile '$SF_HOSTFILE' ./solver`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 || cmd.ArgsLenAtDash() > 0 {
				return usageError{fmt.Errorf("want CMD [ARGS...] after the flags (sfalloc run -n N -- CMD ARGS...)")}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			req, timeout, err := f.request(cmd)
			if err != nil {
				return err
			}
			c, err := g.open(cmd.Context())
			if err != nil {
				return err
			}
			defer c.Close()
			t, err := g.obtain(cmd.Context(), c, req, timeout)
			if err != nil {
				return err
			}
			code := g.runHolding(cmd.Context(), c, t, req.Lease, args)
			return exitError{code}
		},
	}
	f.register(cmd, runLease)
	// Flags after CMD belong to CMD, with or without "--".
	cmd.Flags().SetInterspersed(false)
	return cmd
}

// runHolding runs argv while holding ticket t, then releases t. It returns
// the exit status for sfalloc.
func (g *globals) runHolding(ctx context.Context, c *egosf.Client, t *egosf.Ticket, lease time.Duration, argv []string) int {
	log := g.log.With().Str("id", t.ID).Logger()
	defer func() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		if _, err := c.Release(rctx, t.ID); err != nil {
			log.Error().Err(err).Msg("releasing slots failed; they are freed when the lease ends")
			return
		}
		log.Info().Msg("slots released")
	}()

	// Catch signals before anything else can be interrupted half-way.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)

	hostfile, err := writeHostfile(t)
	if err != nil {
		log.Error().Err(err).Msg("writing the hostfile")
		fmt.Fprintf(g.stderr, "sfalloc: %v\n", err)
		return exitNotGranted
	}
	defer os.Remove(hostfile)

	holder := c.Hold(ctx, t.ID, lease)
	defer holder.Stop()

	child := exec.Command(argv[0], argv[1:]...)
	child.Stdin, child.Stdout, child.Stderr = os.Stdin, os.Stdout, os.Stderr
	child.Env = append(os.Environ(), t.Env(hostfile)...)
	if err := child.Start(); err != nil {
		fmt.Fprintf(g.stderr, "sfalloc: %v\n", err)
		if errors.Is(err, exec.ErrNotFound) || errors.Is(err, os.ErrNotExist) {
			return 127
		}
		return 126
	}
	log.Debug().Int("pid", child.Process.Pid).Strs("argv", argv).Msg("command started")
	waited := make(chan error, 1)
	go func() { waited <- child.Wait() }()
	lost := holder.Lost()
	for {
		select {
		case s := <-sigs:
			log.Info().Str("signal", s.String()).Msg("forwarding signal to the command")
			_ = child.Process.Signal(s)
		case <-lost:
			lost = nil
			log.Error().Err(holder.Err()).Msg("allocation lost; stopping the command")
			fmt.Fprintf(g.stderr, "sfalloc: %v; sending SIGTERM to the command\n", holder.Err())
			_ = child.Process.Signal(syscall.SIGTERM)
		case <-waited:
			return exitStatus(child)
		}
	}
}

// exitStatus is a finished command's status the way a shell reports it.
func exitStatus(child *exec.Cmd) int {
	if child.ProcessState == nil { // Wait itself failed
		return exitNotGranted
	}
	if ws, ok := child.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return child.ProcessState.ExitCode()
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
