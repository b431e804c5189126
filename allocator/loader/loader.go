// Package loader opens an allocator backend by name, built in
// (allocator/builtin) or a plugin binary on the plugin path
// (allocator/plugin), and returns it as an allocator.Allocator: callers
// cannot tell which they got. Built-ins win over plugins of the same name.
package loader

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/hashicorp/go-hclog"

	"github.com/snowflock/snowflock/allocator"
	"github.com/snowflock/snowflock/allocator/builtin"
	"github.com/snowflock/snowflock/allocator/plugin"
)

// Env is what a backend is opened with.
type Env struct {
	// StateDir is the top-level state_dir.
	StateDir string
	// Section is the backend's configuration section (allocator.NAME),
	// undecoded; nil when there is none.
	Section map[string]any
	// PluginPath lists the directories searched for sfalloc-plugin-NAME
	// binaries; empty means DefaultPluginPath.
	PluginPath []string
	// Logger receives plugin processes' logs; nil discards them.
	Logger hclog.Logger
}

// SystemPluginDirs are searched after the running program's own directory
// when no plugin path is configured.
var SystemPluginDirs = []string{"/usr/local/lib/snowflock/plugins", "/usr/lib/snowflock/plugins"}

// DefaultPluginPath is the directory of the running program (so that
// bin/sfalloc finds bin/sfalloc-plugin-*), then SystemPluginDirs.
func DefaultPluginPath() []string {
	var dirs []string
	if exe, err := os.Executable(); err == nil {
		if real, err := filepath.EvalSymlinks(exe); err == nil {
			exe = real
		}
		dirs = append(dirs, filepath.Dir(exe))
	}
	return append(dirs, SystemPluginDirs...)
}

func (e Env) pluginPath() []string {
	if len(e.PluginPath) > 0 {
		return e.PluginPath
	}
	return DefaultPluginPath()
}

func (e Env) builtinEnv() builtin.Env { return builtin.Env{StateDir: e.StateDir, Section: e.Section} }

// Open opens backend name.
func Open(ctx context.Context, name string, env Env) (allocator.Allocator, error) {
	if _, ok := builtin.Lookup(name); ok {
		return builtin.Open(ctx, name, env.builtinEnv())
	}
	path, err := findPlugin(name, env)
	if err != nil {
		return nil, err
	}
	return plugin.Launch(ctx, name, path, env.Section, env.StateDir, plugin.Options{Logger: env.Logger})
}

// Check checks, without opening it, that backend name exists and (for a
// built-in) that its section is valid. A plugin checks its section itself
// when opened.
func Check(name string, env Env) error {
	if _, ok := builtin.Lookup(name); ok {
		return builtin.Check(name, env.builtinEnv())
	}
	_, err := findPlugin(name, env)
	return err
}

// Exists says whether name is a built-in backend or a plugin on the path.
func Exists(name string, pluginPath []string) bool {
	if isBuiltin(name) {
		return true
	}
	_, err := plugin.Find(name, Env{PluginPath: pluginPath}.pluginPath())
	return err == nil
}

func isBuiltin(name string) bool {
	_, ok := builtin.Lookup(name)
	return ok
}

func findPlugin(name string, env Env) (string, error) {
	path, err := plugin.Find(name, env.pluginPath())
	if err != nil {
		if errors.Is(err, allocator.ErrInvalidArgument) && strings.HasPrefix(err.Error(), "no allocator plugin") {
			return "", fmt.Errorf("unknown allocator backend %q: not built in (%s) and %w", name, strings.Join(builtin.Names(), ", "), err)
		}
		return "", err
	}
	return path, nil
}

// Entry is one backend of List.
type Entry struct {
	Name        string `json:"name"`
	Kind        string `json:"kind"` // "built-in" or "plugin"
	Description string `json:"description"`
	// Path, Version and APIVersions are set for plugins.
	Path        string `json:"path,omitempty"`
	Version     string `json:"version,omitempty"`
	APIVersions []int  `json:"api_versions,omitempty"`
	// Error says why a plugin cannot be used; empty when it can.
	Error string `json:"error,omitempty"`
}

// List lists the built-in backends, then every plugin on the plugin path,
// each started briefly to ask what it is. A plugin that cannot be used is
// listed with the reason.
func List(ctx context.Context, env Env) []Entry {
	var out []Entry
	for _, name := range builtin.Names() {
		b, _ := builtin.Lookup(name)
		out = append(out, Entry{Name: name, Kind: "built-in", Description: b.Info.Description})
	}
	for _, f := range plugin.Discover(env.pluginPath()) {
		e := Entry{Name: f.Name, Kind: "plugin", Path: f.Path}
		switch {
		case isBuiltin(f.Name):
			e.Error = "shadowed by the built-in backend of the same name"
		case f.Err != nil:
			e.Error = f.Err.Error()
		default:
			info, err := plugin.Probe(ctx, f.Name, f.Path, plugin.Options{Logger: env.Logger})
			if err != nil {
				e.Error = err.Error()
			}
			e.Description, e.Version, e.APIVersions = info.Description, info.Version, info.APIVersions
		}
		out = append(out, e)
	}
	return out
}
