package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/snowflock/snowflock/allocator"
)

func newReleaseCmd(g *globals) *cobra.Command {
	var (
		hosts  []string
		counts []int
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "release ID [--host H [--count C]]...",
		Short: "Give back all slots of an allocation, or some slots on some hosts",
		Long: `release gives back every slot of allocation ID, or with --host the slots on
that host (all of them, or --count of them; --host and --count pair up in
order). Releasing more slots than the allocation holds on a host fails and
changes nothing.`,
		Example: `  sfalloc release static-3f9a1c0b7e2d
  sfalloc release static-3f9a1c0b7e2d --host h1 --count 2 --host h2`,
		Args: nArgs(1, "one allocation ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			slots, err := releaseSlots(hosts, counts)
			if err != nil {
				return err
			}
			c, err := g.open(cmd.Context())
			if err != nil {
				return err
			}
			defer c.Close()
			left, err := c.Release(cmd.Context(), args[0], slots...)
			if err != nil {
				return err
			}
			g.Log.Info().Str("id", args[0]).Msg("released")
			switch {
			case asJSON && left == nil:
				return writeJSON(g.stdout, map[string]any{"id": args[0], "released": true, "remaining": nil})
			case asJSON:
				return writeJSON(g.stdout, map[string]any{"id": args[0], "released": true, "remaining": left})
			case left == nil:
				_, err = fmt.Fprintf(g.stdout, "%s: released\n", args[0])
			default:
				_, err = fmt.Fprintf(g.stdout, "%s: released some; %d slots remain on %s\n", args[0], left.Granted, left.HostsString())
			}
			return err
		},
	}
	cmd.Flags().StringArrayVar(&hosts, "host", nil, "release slots on this host only (repeatable)")
	cmd.Flags().IntSliceVar(&counts, "count", nil, "how many slots to release on the matching --host (default: all)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the result as JSON")
	return cmd
}

// releaseSlots pairs --host and --count flags.
func releaseSlots(hosts []string, counts []int) ([]allocator.Slot, error) {
	if len(counts) > len(hosts) {
		return nil, usageError{Err: fmt.Errorf("%d --count flags but only %d --host: each --count needs its --host before it", len(counts), len(hosts))}
	}
	slots := make([]allocator.Slot, len(hosts))
	for i, h := range hosts {
		if h == "" {
			return nil, usageError{Err: fmt.Errorf("--host is empty")}
		}
		slots[i].Host = h
		if i < len(counts) {
			if counts[i] <= 0 {
				return nil, usageError{Err: fmt.Errorf("--count %d for host %s: want at least 1", counts[i], h)}
			}
			slots[i].Count = counts[i]
		}
	}
	return slots, nil
}
