package main

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/snowflock/snowflock/clonesvc/daemonapi"
	"github.com/snowflock/snowflock/clonesvc/sfldpb"
)

func newTicketListCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "tickets",
		Short: "List the clone tickets this host holds",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.call(cmd.Context(), func(ctx context.Context, c *daemonapi.Client) error {
				r, err := c.ListTickets(ctx, &sfldpb.ListTicketsRequest{})
				if err != nil {
					return err
				}
				if r.Tickets == nil {
					r.Tickets = []*sfldpb.Ticket{}
				}
				return g.print(r.Tickets, func(w io.Writer) {
					fmt.Fprintln(w, "TICKET\tOWNER\tSTATE\tGRANTED\tALLOCATION\tCLONES\tEXITED")
					for _, t := range r.Tickets {
						fmt.Fprintf(w, "%s\t%s\t%s\t%d\t%s\t%s\t%d\n", t.Id, t.Owner, t.State, t.Granted, dash(t.Allocation), dash(strings.Join(t.Clones, ",")), t.Exited)
					}
				})
			})
		},
	}
}
