package main

import (
	"fmt"
	"maps"
	"strings"

	"github.com/spf13/cobra"
)

func newConfigCmd(g *globals) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "config [--json]",
		Short: "Show the configuration in force and where it came from (secrets hidden)",
		Args:  nArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := g.loadConfig()
			if err != nil {
				return err
			}
			shown := *cfg
			shown.Allocator.Sections = map[string]any{}
			for name := range cfg.Allocator.Sections {
				shown.Allocator.Sections[name] = redact(cfg.Allocator.Section(name))
			}
			if asJSON {
				return writeJSON(g.stdout, shown)
			}
			fmt.Fprintf(g.stdout, "source:    %s\nstate_dir: %s\nbackend:   %s\n", cfg.Source, cfg.StateDir, cfg.Allocator.Backend)
			if sec := shown.Allocator.Section(cfg.Allocator.Backend); sec != nil {
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

// redact hides the values of secret keys (passwords, tokens; not the names
// of files holding them) of a backend's section.
func redact(sec map[string]any) map[string]any {
	if sec == nil {
		return nil
	}
	out := maps.Clone(sec)
	for k := range out {
		lk := strings.ToLower(k)
		if (strings.Contains(lk, "password") || strings.Contains(lk, "token") || strings.Contains(lk, "secret")) && !strings.HasSuffix(lk, "_file") {
			out[k] = "(hidden)"
		}
	}
	return out
}
