package main

import (
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/snowflock/snowflock/allocator"
)

func newHostsCmd(g *globals) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "hosts [--json]",
		Short: "Show each host's slots and how many are held",
		Args:  nArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.open(cmd.Context())
			if err != nil {
				return err
			}
			defer c.Close()
			hr, ok := c.Allocator().(allocator.HostReporter)
			if !ok {
				return fmt.Errorf("backend %s cannot report its hosts: %w", c.Allocator().Info().Name, allocator.ErrInvalidArgument)
			}
			hosts, err := hr.Hosts(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(g.stdout, hosts)
			}
			w := tabwriter.NewWriter(g.stdout, 2, 8, 2, ' ', 0)
			fmt.Fprintln(w, "HOST\tADDRESS\tSLOTS\tHELD\tFREE")
			for _, h := range hosts {
				free := max(h.Slots-h.Held, 0)
				if h.Exclusive {
					free = 0
				}
				fmt.Fprintf(w, "%s\t%s\t%d\t%d\t%d\n", h.Host, h.Address, h.Slots, h.Held, free)
			}
			return w.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the hosts as JSON")
	return cmd
}
