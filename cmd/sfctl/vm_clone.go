package main

import (
	"context"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/snowflock/snowflock/clonesvc/daemonapi"
	"github.com/snowflock/snowflock/clonesvc/sfldpb"
)

func newCloneCmd(g *globals) *cobra.Command {
	var n int
	var from string
	cmd := &cobra.Command{
		Use:   "clone VM -n N | clone --checkpoint CP -n N",
		Short: "Fork a running VM (or a checkpoint) into clones",
		Long: `clone forks VM into N VMs in all: the VM itself stays clone 0 and N-1 clones
start from a checkpoint of it, on this host, with their own host names and
reseeded RNGs. The guest need not cooperate. Slots come from the allocator:
fewer than N may be granted. The clones live until 'sfctl kill TICKET'.
With --checkpoint, the clones start from a checkpoint made earlier
('sfctl checkpoint VM').`,
		Example: `  sfctl clone worker -n 4
  sfctl clone --checkpoint cp-1a2b3c4d -n 8 --json`,
		Args: func(_ *cobra.Command, args []string) error {
			if (from == "") != (len(args) == 1) || len(args) > 1 {
				return usageError{Err: fmt.Errorf("want VM, or --checkpoint CP")}
			}
			if n < 1 {
				return usageError{Err: fmt.Errorf("-n %d: want at least 1", n)}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.call(cmd.Context(), func(ctx context.Context, c *daemonapi.Client) error {
				var r *sfldpb.CloneReply
				var err error
				if from != "" {
					r, err = c.CreateClones(ctx, &sfldpb.CreateClonesRequest{Checkpoint: from, N: int32(n)})
				} else {
					r, err = c.Clone(ctx, &sfldpb.CloneRequest{Vm: args[0], N: int32(n)})
				}
				if err != nil {
					return err
				}
				return g.print(r, func(w io.Writer) { printClones(w, r) })
			})
		},
	}
	cmd.Flags().IntVarP(&n, "n", "n", 0, "VMs wanted in all, the parent counting as clone 0")
	cmd.Flags().StringVar(&from, "checkpoint", "", "start the clones from this checkpoint")
	return cmd
}

func printClones(w io.Writer, r *sfldpb.CloneReply) {
	fmt.Fprintf(w, "ticket %s\tfamily %s\tgranted %d\n", r.Ticket, r.Family, r.Granted)
	if t := r.Timing; t != nil {
		fmt.Fprintf(w, "checkpoint %.1f ms\tparent paused %.1f ms\tdescriptor %d bytes in %.1f ms\n", t.CheckpointMs, t.PauseMs, t.DescriptorBytes, t.DescriptorMs)
	}
	fmt.Fprintln(w, "CLONE\tVM\tHOSTNAME\tSTART")
	for _, v := range r.Clones {
		fmt.Fprintf(w, "%d\t%s\t%s\t%.0f ms\n", v.CloneId, v.Id, v.Hostname, v.StartMs)
	}
}
