package main

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/snowflock/snowflock/allocator"
)

func newEventsCmd(g *globals) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "events [--json]",
		Short: "Follow slots taken back by the backend (lease expiry, scheduler reclaim)",
		Long: `events prints, until interrupted, every allocation or part of one that the
backend takes back on its own: a lease that ran out, a scheduler's reclaim or
cancellation. With --json, one JSON object per line.`,
		Args: nArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, c, done, err := g.openUntilSignal(cmd.Context())
			if err != nil {
				return err
			}
			defer done()
			evs, err := c.Allocator().Events(ctx)
			if err != nil {
				return err
			}
			for ev := range evs {
				if asJSON {
					err = writeJSONLine(g.stdout, ev)
				} else {
					err = printEvent(g, ev)
				}
				if err != nil {
					return err
				}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print each event as one line of JSON")
	return cmd
}

func printEvent(g *globals, ev allocator.Event) error {
	line := fmt.Sprintf("%s %s %s %s", ev.Time.Local().Format(time.DateTime), ev.AllocationID, ev.Kind, allocator.FormatSlots(ev.Slots))
	if ev.Reason != "" {
		line += " (" + ev.Reason + ")"
	}
	if !ev.Deadline.IsZero() {
		line += " release by " + ev.Deadline.Local().Format(time.DateTime)
	}
	_, err := fmt.Fprintln(g.stdout, line)
	return err
}
