package main

import (
	"fmt"
	"slices"
	"strings"

	"github.com/rs/zerolog"

	"github.com/snowflock/snowflock/clonesvc"
	"github.com/snowflock/snowflock/clonesvc/daemonapi"
	"github.com/snowflock/snowflock/egosf/config"
	"github.com/snowflock/snowflock/kvmbackend"
	"github.com/snowflock/snowflock/xenbackend"
)

// hypervisor is one built-in hypervisor backend: how sfld decodes its
// configuration section and starts it.
type hypervisor struct {
	// section returns the backend's undecoded section of sfld's config.
	section func(d *daemonapi.Config) map[string]any
	// load decodes and validates the section; the result is printed by
	// `sfld config` and passed to open.
	load func(section map[string]any) (any, error)
	open func(cfg any, log zerolog.Logger) (clonesvc.Backend, error)
}

// hypervisors lists the built-in backends by configuration name.
var hypervisors = map[string]hypervisor{
	kvmbackend.Name: {
		section: func(d *daemonapi.Config) map[string]any { return d.KVM },
		load: func(s map[string]any) (any, error) {
			var c kvmbackend.Config
			if err := config.Decode(s, &c); err != nil {
				return nil, err
			}
			return c, c.Validate()
		},
		open: func(cfg any, log zerolog.Logger) (clonesvc.Backend, error) {
			c := cfg.(kvmbackend.Config)
			c.Logger = log
			return kvmbackend.New(c)
		},
	},
	xenbackend.Name: {
		section: func(d *daemonapi.Config) map[string]any { return d.Xen },
		load: func(s map[string]any) (any, error) {
			var c xenbackend.Config
			if err := config.Decode(s, &c); err != nil {
				return nil, err
			}
			return c, c.Validate()
		},
		open: func(cfg any, log zerolog.Logger) (clonesvc.Backend, error) {
			c := cfg.(xenbackend.Config)
			c.Logger = log
			return xenbackend.New(c)
		},
	},
}

// hypervisorNames lists the built-in backends, sorted.
func hypervisorNames() string {
	var names []string
	for n := range hypervisors {
		names = append(names, n)
	}
	slices.Sort(names)
	return strings.Join(names, ", ")
}

// loadHypervisor decodes the configured backend's section.
func loadHypervisor(source string, d *daemonapi.Config) (hypervisor, any, error) {
	h, ok := hypervisors[d.Hypervisor]
	if !ok {
		return h, nil, usageError{Err: fmt.Errorf("config %s: sfld.hypervisor %q: want one of %s", source, d.Hypervisor, hypervisorNames())}
	}
	cfg, err := h.load(h.section(d))
	if err != nil {
		return h, nil, usageError{Err: fmt.Errorf("config %s: sfld.%s: %w", source, d.Hypervisor, err)}
	}
	return h, cfg, nil
}
