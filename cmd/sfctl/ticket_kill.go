package main

import (
	"context"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/snowflock/snowflock/clonesvc/daemonapi"
	"github.com/snowflock/snowflock/clonesvc/sfldpb"
)

func newKillCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "kill TICKET",
		Short: "Destroy every clone of a ticket at once and release its slots",
		Args:  exactArgs(1, "TICKET"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.call(cmd.Context(), func(ctx context.Context, c *daemonapi.Client) error {
				r, err := c.Kill(ctx, &sfldpb.KillRequest{Ticket: args[0]})
				if err != nil {
					return err
				}
				return g.print(r, func(w io.Writer) { fmt.Fprintf(w, "killed %d clone(s)\n", r.Killed) })
			})
		},
	}
}
