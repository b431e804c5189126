package main

import (
	"fmt"

	"github.com/spf13/cobra"
)

func newConfigCmd(g *globals) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "config [--json]",
		Short: "Show the configuration in force and where it came from",
		Args:  nArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := g.loadConfig()
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(g.stdout, cfg)
			}
			fmt.Fprintf(g.stdout, "source:    %s\nstate_dir: %s\nbackend:   %s\n", cfg.Source, cfg.StateDir, cfg.Allocator.Backend)
			if sec := cfg.Allocator.Section(cfg.Allocator.Backend); sec != nil {
				fmt.Fprintf(g.stdout, "allocator.%s:\n", cfg.Allocator.Backend)
				return writeJSON(g.stdout, sec)
			}
			_, err = fmt.Fprintf(g.stdout, "allocator.%s: (defaults)\n", cfg.Allocator.Backend)
			return err
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the configuration as JSON")
	return cmd
}
