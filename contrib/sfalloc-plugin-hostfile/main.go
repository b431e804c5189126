// Command sfalloc-plugin-hostfile is the example allocator plugin: the
// whole of a plugin built with allocator/plugin/sdk. It grants slots from
// the hosts of an Open MPI hostfile ("host slots=N" lines), keeping them in
// a static pool in its state directory. Configuration:
//
//	allocator:
//	  backend: hostfile
//	  hostfile:
//	    path: /etc/snowflock/hosts   # SNOWFLOCK_ALLOCATOR_HOSTFILE_PATH
//
// Build it as sfalloc-plugin-hostfile on the plugin path (make build puts
// it in bin/, beside sfalloc).
package main

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/snowflock/snowflock/allocator"
	"github.com/snowflock/snowflock/allocator/plugin/sdk"
	"github.com/snowflock/snowflock/allocator/static"
)

// Config is section allocator.hostfile.
type Config struct {
	Path string `mapstructure:"path"`
}

// Validate is called by the SDK after decoding.
func (c *Config) Validate() error {
	if c.Path == "" {
		return errors.New("path is not set: want an Open MPI hostfile")
	}
	return nil
}

func open(_ context.Context, cfg *Config, env sdk.Env) (allocator.Allocator, error) {
	text, err := os.ReadFile(cfg.Path)
	if err != nil {
		return nil, fmt.Errorf("hostfile: %v: %w", err, allocator.ErrInvalidArgument)
	}
	hosts, err := parseHostfile(text)
	if err != nil {
		return nil, fmt.Errorf("hostfile %s: %v: %w", cfg.Path, err, allocator.ErrInvalidArgument)
	}
	return static.New(static.Config{Hosts: hosts, StateDir: env.StateDir})
}

func main() {
	sdk.Serve(sdk.Backend[Config]{
		Name: "hostfile", Description: "slots from an Open MPI hostfile (example plugin)", Version: "1.0.0",
		Open: open,
	})
}
