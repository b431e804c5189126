// Package sdk turns an allocator backend into a SnowFlock allocator plugin
// binary: it decodes the backend's configuration section, opens the
// backend and serves it over the plugin protocol. A plugin's main is one
// call:
//
//	func main() {
//		sdk.Serve(sdk.Backend[mybackend.Config]{
//			Name: "mine", Description: "...", Version: "1.0.0",
//			Open: func(ctx context.Context, cfg *mybackend.Config, env sdk.Env) (allocator.Allocator, error) {
//				return mybackend.New(*cfg)
//			},
//		})
//	}
//
// Build it as sfalloc-plugin-mine and put it on the plugin path
// (allocator.plugin_path); `backend: mine` selects it.
package sdk

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"reflect"
	"strings"

	"github.com/snowflock/snowflock/allocator"
	"github.com/snowflock/snowflock/allocator/plugin"
	"github.com/snowflock/snowflock/egosf/config"
)

// Env is what a backend is opened with besides its configuration.
type Env struct {
	// StateDir is a directory private to the backend (state_dir/NAME).
	StateDir string
}

// Backend describes a plugin's backend. C is its configuration type: a
// struct whose mapstructure tags name the keys of section allocator.NAME.
// If *C has a Validate() error method, it is called after decoding.
type Backend[C any] struct {
	Name        string
	Description string
	// Version is the plugin's own release, free text.
	Version string
	// Open opens the backend; the plugin serves it until the host stops it,
	// then closes it.
	Open func(ctx context.Context, cfg *C, env Env) (allocator.Allocator, error)
}

// Serve serves the backend. It returns when the host stops the plugin.
func Serve[C any](b Backend[C]) { b.Serve() }

// Serve serves the backend. It returns when the host stops the plugin.
func (b Backend[C]) Serve() { plugin.Serve(b.Server()) }

// Server returns the plugin protocol server for the backend (Serve uses
// it; tests can drive it directly).
func (b Backend[C]) Server() *plugin.Server {
	return plugin.NewServer(plugin.Info{Name: b.Name, Description: b.Description, Version: b.Version},
		func(ctx context.Context, configJSON []byte, stateDir string) (allocator.Allocator, error) {
			cfg, err := Decode[C](b.Name, configJSON)
			if err != nil {
				return nil, err
			}
			return b.Open(ctx, cfg, Env{StateDir: stateDir})
		})
}

// Decode decodes configuration section allocator.NAME (a JSON object;
// empty means none) into a new C, with the same rules as every built-in
// backend (egosf/config.Decode: unknown keys are errors, strict types).
// SNOWFLOCK_ALLOCATOR_NAME_KEY variables of the plugin's environment (it
// inherits the host's) override the section's top-level keys.
func Decode[C any](name string, configJSON []byte) (*C, error) {
	section := map[string]any{}
	if len(strings.TrimSpace(string(configJSON))) > 0 {
		if err := json.Unmarshal(configJSON, &section); err != nil {
			return nil, fmt.Errorf("allocator.%s: not a JSON object: %v: %w", name, err, allocator.ErrInvalidArgument)
		}
	}
	cfg := new(C)
	for _, key := range Keys(cfg) {
		if v, ok := os.LookupEnv(EnvVar(name, key)); ok {
			section[key] = v
		}
	}
	if err := config.Decode(section, cfg); err != nil {
		return nil, fmt.Errorf("allocator.%s: %v: %w", name, err, allocator.ErrInvalidArgument)
	}
	if v, ok := any(cfg).(interface{ Validate() error }); ok {
		if err := v.Validate(); err != nil {
			return nil, fmt.Errorf("allocator.%s: %v: %w", name, err, allocator.ErrInvalidArgument)
		}
	}
	return cfg, nil
}

// Keys lists the top-level keys of configuration type *C (its mapstructure
// tags).
func Keys(cfg any) []string {
	t := reflect.TypeOf(cfg)
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct {
		return nil
	}
	var keys []string
	for i := range t.NumField() {
		tag, _, _ := strings.Cut(t.Field(i).Tag.Get("mapstructure"), ",")
		if tag != "" && tag != "-" {
			keys = append(keys, tag)
		}
	}
	return keys
}

// EnvVar is the environment variable that overrides key of backend name:
// SNOWFLOCK_ALLOCATOR_EGO_URL for ("ego", "url").
func EnvVar(name, key string) string {
	up := func(s string) string {
		return strings.Map(func(r rune) rune {
			switch {
			case r >= 'a' && r <= 'z':
				return r - 'a' + 'A'
			case r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
				return r
			}
			return '_'
		}, s)
	}
	return "SNOWFLOCK_ALLOCATOR_" + up(name) + "_" + up(key)
}
