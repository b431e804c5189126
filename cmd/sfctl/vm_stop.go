package main

import (
	"context"

	"github.com/spf13/cobra"

	"github.com/snowflock/snowflock/clonesvc/daemonapi"
	"github.com/snowflock/snowflock/clonesvc/sfldpb"
)

func newVMStopCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "stop VM...",
		Short: "Stop VMs (by ID or name) and remove their files",
		Long: `stop stops each VM and removes its files. Stopping a parent kills the clones
of its tickets too (nobody is left to join them) and deletes its checkpoints.`,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) == 0 {
				return usageError{Err: errorf("want at least one VM")}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.call(cmd.Context(), func(ctx context.Context, c *daemonapi.Client) error {
				for _, id := range args {
					if _, err := c.StopVM(ctx, &sfldpb.StopVMRequest{Vm: id}); err != nil {
						return err
					}
				}
				return nil
			})
		},
	}
}
