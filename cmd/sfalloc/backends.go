package main

import (
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/snowflock/snowflock/allocator/builtin"
)

// backendRow is one line of `sfalloc backends`.
type backendRow struct {
	Name        string `json:"name"`
	Kind        string `json:"kind"`
	Selected    bool   `json:"selected"`
	Description string `json:"description"`
}

func newBackendsCmd(g *globals) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "backends [--json]",
		Short: "List the allocator backends and which one the configuration selects",
		Args:  nArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			selected := ""
			if cfg, err := g.loadConfig(); err == nil {
				selected = cfg.Allocator.Backend
			} else {
				g.Log.Warn().Err(err).Msg("configuration not loaded; no backend marked selected")
			}
			var rows []backendRow
			for _, name := range builtin.Names() {
				b, _ := builtin.Lookup(name)
				rows = append(rows, backendRow{Name: name, Kind: "built-in", Selected: name == selected, Description: b.Info.Description})
			}
			if asJSON {
				return writeJSON(g.stdout, rows)
			}
			w := tabwriter.NewWriter(g.stdout, 2, 8, 2, ' ', 0)
			fmt.Fprintln(w, "NAME\tKIND\tSELECTED\tDESCRIPTION")
			for _, r := range rows {
				sel := ""
				if r.Selected {
					sel = "*"
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", r.Name, r.Kind, sel, r.Description)
			}
			return w.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the backends as JSON")
	return cmd
}
