package main

import (
	"context"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/snowflock/snowflock/allocator/loader"
)

// backendRow is one line of `sfalloc backends`.
type backendRow struct {
	loader.Entry
	Selected bool `json:"selected"`
}

func newBackendsCmd(g *globals) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "backends [--json]",
		Short: "List the allocator backends (built in, and plugins on the plugin path) and which one the configuration selects",
		Args:  nArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			selected := ""
			env := loader.Env{Logger: g.pluginLogger()}
			if cfg, err := g.loadConfig(); err == nil {
				selected = cfg.Allocator.Backend
				env.PluginPath = cfg.Allocator.PluginPath
			} else {
				g.Log.Warn().Err(err).Msg("configuration not loaded; no backend marked selected")
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), time.Minute)
			defer cancel()
			var rows []backendRow
			for _, e := range loader.List(ctx, env) {
				rows = append(rows, backendRow{Entry: e, Selected: e.Name == selected && e.Error == ""})
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
				desc := r.Description
				if r.Kind == "plugin" {
					desc = fmt.Sprintf("%s [%s %s]", desc, r.Path, r.Version)
				}
				if r.Error != "" {
					desc = "UNUSABLE: " + r.Error + " [" + r.Path + "]"
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", r.Name, r.Kind, sel, desc)
			}
			return w.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the backends as JSON")
	return cmd
}
