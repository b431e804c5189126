package main

import (
	"context"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/snowflock/snowflock/clonesvc/daemonapi"
	"github.com/snowflock/snowflock/clonesvc/sfldpb"
)

func newCheckpointCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "checkpoint VM",
		Short: "Freeze a VM into a checkpoint that clones start from later",
		Long: `checkpoint pauses the VM briefly, saves its descriptor and a frozen copy of its
memory, and resumes it. 'sfctl clone --checkpoint CP -n N' starts clones
from it later. It lives until its VM stops.`,
		Args: exactArgs(1, "VM"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.call(cmd.Context(), func(ctx context.Context, c *daemonapi.Client) error {
				r, err := c.Checkpoint(ctx, &sfldpb.CheckpointRequest{Vm: args[0]})
				if err != nil {
					return err
				}
				return g.print(r, func(w io.Writer) {
					fmt.Fprintf(w, "%s\tparent paused %.1f ms\tdescriptor %d bytes\n", r.Checkpoint, r.Timing.GetPauseMs(), r.Timing.GetDescriptorBytes())
				})
			})
		},
	}
}
