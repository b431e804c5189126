// Package builtin lists the allocator backends compiled into SnowFlock and
// opens one by name from its configuration section.
package builtin

import (
	"context"
	"fmt"
	"reflect"
	"slices"
	"strings"

	"github.com/snowflock/snowflock/allocator"
	"github.com/snowflock/snowflock/allocator/slurm"
	"github.com/snowflock/snowflock/allocator/static"
	"github.com/snowflock/snowflock/egosf/config"
)

// Env is what a backend is opened with.
type Env struct {
	// StateDir is the top-level state_dir.
	StateDir string
	// Section is the backend's configuration section (allocator.NAME),
	// undecoded; nil when the file has none.
	Section map[string]any
}

// Backend is one built-in allocator backend.
type Backend struct {
	Info allocator.Info
	// config returns a pointer to a new zero configuration value; its
	// mapstructure tags name the section's keys.
	config func() any
	// open opens the backend with a decoded configuration.
	open func(ctx context.Context, cfg any, env Env) (allocator.Allocator, error)
}

// validator is implemented by configuration types that can check themselves.
type validator interface{ Validate() error }

// backends is the list of built-ins. A backend that can be left out of a
// build gets a build-tagged file adding its entry here.
var backends = map[string]Backend{
	static.Name: {
		Info:   allocator.Info{Name: static.Name, Description: static.Description},
		config: func() any { return &static.Config{} },
		open: func(_ context.Context, c any, env Env) (allocator.Allocator, error) {
			cfg := *c.(*static.Config)
			cfg.StateDir = env.StateDir
			return static.New(cfg)
		},
	},
	slurm.Name: {
		Info:   allocator.Info{Name: slurm.Name, Description: slurm.Description},
		config: func() any { return &slurm.Config{} },
		open: func(_ context.Context, c any, env Env) (allocator.Allocator, error) {
			cfg := *c.(*slurm.Config)
			cfg.StateDir = env.StateDir
			return slurm.New(cfg)
		},
	},
}

// Names lists the built-in backends, sorted.
func Names() []string {
	names := make([]string, 0, len(backends))
	for n := range backends {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// Lookup returns the built-in backend called name.
func Lookup(name string) (Backend, bool) {
	b, ok := backends[name]
	return b, ok
}

// EnvKeys lists every built-in backend's configuration keys in dotted form
// (allocator.static.placement), for environment overrides.
func EnvKeys() []string {
	var keys []string
	for _, name := range Names() {
		t := reflect.TypeOf(backends[name].config()).Elem()
		for i := range t.NumField() {
			tag, _, _ := strings.Cut(t.Field(i).Tag.Get("mapstructure"), ",")
			if tag != "" && tag != "-" {
				keys = append(keys, "allocator."+name+"."+tag)
			}
		}
	}
	return keys
}

// Open opens backend name with its configuration section.
func Open(ctx context.Context, name string, env Env) (allocator.Allocator, error) {
	b, cfg, err := decode(name, env)
	if err != nil {
		return nil, err
	}
	return b.open(ctx, cfg, env)
}

// Check decodes and validates backend name's section without opening it.
func Check(name string, env Env) error {
	_, cfg, err := decode(name, env)
	if err != nil {
		return err
	}
	if v, ok := cfg.(validator); ok {
		if err := v.Validate(); err != nil {
			return fmt.Errorf("%v: %w", err, allocator.ErrInvalidArgument)
		}
	}
	return nil
}

func decode(name string, env Env) (Backend, any, error) {
	b, ok := backends[name]
	if !ok {
		return b, nil, fmt.Errorf("unknown allocator backend %q (built in: %s): %w", name, strings.Join(Names(), ", "), allocator.ErrInvalidArgument)
	}
	cfg := b.config()
	if err := config.Decode(env.Section, cfg); err != nil {
		return b, nil, fmt.Errorf("allocator.%s: %v: %w", name, err, allocator.ErrInvalidArgument)
	}
	return b, cfg, nil
}
