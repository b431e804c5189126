package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/snowflock/snowflock/clonesvc/daemonapi"
	"github.com/snowflock/snowflock/clonesvc/sfldpb"
)

func newVMListCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List this host's VMs",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.call(cmd.Context(), func(ctx context.Context, c *daemonapi.Client) error {
				r, err := c.ListVMs(ctx, &sfldpb.ListVMsRequest{})
				if err != nil {
					return err
				}
				if r.Vms == nil {
					r.Vms = []*sfldpb.VM{}
				}
				return g.print(r.Vms, func(w io.Writer) {
					fmt.Fprintln(w, "ID\tNAME\tROLE\tSTATE\tPARENT\tCLONE\tTICKET\tAGE")
					for _, v := range r.Vms {
						clone := "-"
						if v.Role == "clone" {
							clone = fmt.Sprint(v.CloneId)
						}
						age := time.Since(time.UnixMilli(v.CreatedUnixMs)).Round(time.Second)
						fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", v.Id, v.Name, v.Role, v.State, dash(v.Parent), clone, dash(v.Ticket), age)
					}
				})
			})
		},
	}
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
