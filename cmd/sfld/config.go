package main

import (
	"encoding/json"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/snowflock/snowflock/clonesvc/daemonapi"
	"github.com/snowflock/snowflock/egosf"
	"github.com/snowflock/snowflock/egosf/config"
	"github.com/snowflock/snowflock/kvmbackend"
)

// loaded is the whole configuration as sfld uses it.
type loaded struct {
	file   *config.Config
	daemon daemonapi.Config
	// hypervisor is the configured backend and cfg its decoded section.
	hypervisor hypervisor
	backendCfg any
}

// stateDir is sfld's own part of state_dir.
func (l *loaded) stateDir() string { return filepath.Join(l.file.StateDir, "sfld") }

func (g *globals) load() (*loaded, error) {
	file, err := egosf.LoadConfig(config.Options{File: g.configFile})
	if err != nil {
		return nil, err
	}
	daemon, err := daemonapi.LoadConfig(file)
	if err != nil {
		return nil, err
	}
	l := &loaded{file: file, daemon: daemon}
	d := &l.daemon
	if d.Hypervisor == "" {
		d.Hypervisor = kvmbackend.Name
	}
	l.hypervisor, l.backendCfg, err = loadHypervisor(file.Source, d)
	if err != nil {
		return nil, err
	}
	return l, nil
}

func newConfigCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "config",
		Short: "Print the configuration sfld would run with (JSON)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			l, err := g.load()
			if err != nil {
				return err
			}
			enc := json.NewEncoder(g.stdout)
			enc.SetIndent("", "  ")
			return enc.Encode(map[string]any{"source": l.file.Source, "state_dir": l.file.StateDir, "sfld": l.daemon, l.daemon.Hypervisor: l.backendCfg})
		},
	}
}
