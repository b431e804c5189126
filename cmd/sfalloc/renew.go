package main

import (
	"fmt"

	"github.com/spf13/cobra"
)

func newRenewCmd(g *globals) *cobra.Command {
	var (
		lease  string
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "renew ID [--lease DURATION]",
		Short: "Extend an allocation's lease",
		Long: `renew extends the lease of allocation ID to --lease from now (default: the
backend's lease). An allocation whose lease runs out is released by the
backend.`,
		Example: `  sfalloc renew static-3f9a1c0b7e2d --lease 8h`,
		Args:    nArgs(1, "one allocation ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			d, err := parseDuration("lease", lease)
			if err != nil {
				return err
			}
			c, err := g.open(cmd.Context())
			if err != nil {
				return err
			}
			defer c.Close()
			t, err := c.Renew(cmd.Context(), args[0], d)
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(g.stdout, t)
			}
			_, err = fmt.Fprintf(g.stdout, "%s: lease until %s\n", t.ID, expiry(t.Expires))
			return err
		},
	}
	cmd.Flags().StringVar(&lease, "lease", "", "new lease from now (default: the backend's)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the allocation as JSON")
	return cmd
}
