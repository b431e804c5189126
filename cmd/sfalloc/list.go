package main

import (
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
)

func newListCmd(g *globals) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:     "list [--json]",
		Aliases: []string{"ls"},
		Short:   "List the allocations the backend holds",
		Args:    nArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.open(cmd.Context())
			if err != nil {
				return err
			}
			defer c.Close()
			ts, err := c.List(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(g.stdout, ts)
			}
			if len(ts) == 0 {
				_, err := fmt.Fprintln(g.stdout, "no allocations")
				return err
			}
			w := tabwriter.NewWriter(g.stdout, 2, 8, 2, ' ', 0)
			fmt.Fprintln(w, "ID\tNAME\tSLOTS\tHOSTS\tCREATED\tEXPIRES")
			for _, t := range ts {
				fmt.Fprintf(w, "%s\t%s\t%d\t%s\t%s\t%s\n", t.ID, orDash(t.Name), t.Granted, t.HostsString(),
					t.Created.Local().Format(time.DateTime), expiry(t.Expires))
			}
			return w.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the allocations as a JSON array")
	return cmd
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// expiry shows when a lease ends; "never" when the backend set none (a
// Slurm job without a time limit).
func expiry(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return t.Local().Format(time.DateTime)
}
