// Command sfalloc asks SnowFlock's allocator for clone slots, the way salloc
// asks Slurm: request, list, renew and release allocations, or hold one while
// a command runs.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/spf13/cobra"

	"github.com/snowflock/snowflock/allocator"
	"github.com/snowflock/snowflock/egosf"
	"github.com/snowflock/snowflock/egosf/config"
	"github.com/snowflock/snowflock/internal/cli"
)

// Exit statuses: cli.ExitFailure when slots were not granted (busy with
// --immediate, deadline passed, backend down), cli.ExitUsage for usage or
// configuration errors and unknown allocations.
const (
	exitNotGranted = cli.ExitFailure
	exitUsage      = cli.ExitUsage
)

// version is set at build time (make build: -ldflags "-X main.version=…").
var version = "dev"

// globals are the flags every subcommand shares.
type globals struct {
	configFile string
	backend    string
	cli.LogFlags
	stdout io.Writer
	stderr io.Writer
}

func main() {
	os.Exit(execute(os.Args[1:], os.Stdout, os.Stderr))
}

// usageError marks errors in how sfalloc was called; exitError carries
// the status of the command sfalloc run ran.
type (
	usageError = cli.UsageError
	exitError  = cli.ExitError
)

var nArgs = cli.ExactArgs

func execute(args []string, stdout, stderr io.Writer) int {
	g := &globals{stdout: stdout, stderr: stderr}
	// Invalid arguments and unknown allocations are usage errors (2); not
	// granted, deadline passed, backend down and interrupted are 1.
	return cli.Run(newRoot(g), args, nil, stdout, stderr, allocator.ErrInvalidArgument, allocator.ErrUnknownAllocation)
}

func newRoot(g *globals) *cobra.Command {
	root := &cobra.Command{
		Use:   "sfalloc",
		Short: "Request clone slots from SnowFlock's allocator",
		Long: `sfalloc asks the configured allocator backend (a static pool, Slurm, EGO or a
plugin) for clone slots, like salloc does for Slurm.

Configuration is read from --config FILE, else $SNOWFLOCK_CONFIG, else
/etc/snowflock/snowflock.yaml, else the built-in default: a static pool of
this host with one slot per CPU. SNOWFLOCK_* variables override file values
(SNOWFLOCK_STATE_DIR, SNOWFLOCK_ALLOCATOR_BACKEND,
SNOWFLOCK_ALLOCATOR_STATIC_PLACEMENT, SNOWFLOCK_ALLOCATOR_STATIC_HOSTS=
"h1=10.0.0.1:4,h2=10.0.0.2:4", ...).

Results go to stdout, logs to stderr. Exit status: 0 success; 1 slots not
granted (busy with --immediate, deadline passed, backend unavailable);
2 usage or configuration error, or an unknown allocation.`,
		Example: `  sfalloc request -n 6 --json
  sfalloc request -n 8 --min 2 -J sweep -t 30s
  sfalloc list
  sfalloc release static-3f9a1c0b7e2d --host h1 --count 2
  sfalloc run -n 4 -- sh -c 'mpirun --hostfile "$SF_HOSTFILE" ./solver'`,
		Version: version,
	}
	g.Register(root, "warn", g.stderr)
	pf := root.PersistentFlags()
	pf.StringVar(&g.configFile, "config", "", "configuration file (default: $SNOWFLOCK_CONFIG, else "+config.SystemFile+", else built-in)")
	pf.StringVar(&g.backend, "backend", "", "allocator backend, overriding allocator.backend of the configuration")
	root.AddCommand(newRequestCmd(g), newReleaseCmd(g), newListCmd(g), newRenewCmd(g), newRunCmd(g), newBackendsCmd(g), newHostsCmd(g), newEventsCmd(g), newConfigCmd(g), newGuardCmd())
	return root
}

// loadConfig loads the configuration, applying --backend.
func (g *globals) loadConfig() (*config.Config, error) {
	if g.backend != "" {
		// The flag outranks file and environment alike.
		os.Setenv("SNOWFLOCK_ALLOCATOR_BACKEND", g.backend)
	}
	cfg, err := egosf.LoadConfig(config.Options{File: g.configFile})
	if err != nil {
		return nil, err
	}
	g.Log.Debug().Str("source", cfg.Source).Str("backend", cfg.Allocator.Backend).Str("state_dir", cfg.StateDir).Msg("configuration loaded")
	return cfg, nil
}

// open loads the configuration and opens its allocator.
func (g *globals) open(ctx context.Context) (*egosf.Client, error) {
	cfg, err := g.loadConfig()
	if err != nil {
		return nil, err
	}
	return egosf.Open(ctx, cfg, egosf.WithPluginLogger(g.pluginLogger()))
}

// pluginLogger passes the logs of plugin processes (go-plugin's hclog) to
// stderr at sfalloc's log level and format.
func (g *globals) pluginLogger() hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{
		Name:       "sfalloc.plugin",
		Output:     g.stderr,
		Level:      hclog.LevelFromString(g.Level),
		JSONFormat: g.Format == "json",
	})
}

// writeJSONLine writes v as one line of JSON (streams).
func writeJSONLine(w io.Writer, v any) error {
	return json.NewEncoder(w).Encode(v)
}

// openUntilSignal opens the allocator with a context that SIGINT and SIGTERM
// cancel. done closes the client and stops catching the signals.
func (g *globals) openUntilSignal(parent context.Context) (ctx context.Context, c *egosf.Client, done func(), err error) {
	ctx, stop := signal.NotifyContext(parent, os.Interrupt, syscall.SIGTERM)
	c, err = g.open(ctx)
	if err != nil {
		stop()
		return nil, nil, nil, err
	}
	return ctx, c, func() { c.Close(); stop() }, nil
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// parseDuration reads a duration as Go text ("90s", "5m") or whole seconds.
func parseDuration(flag, s string) (time.Duration, error) {
	if s == "" {
		return 0, nil
	}
	if n, err := strconv.Atoi(s); err == nil && n >= 0 {
		if n > int(math.MaxInt64/time.Second) {
			return 0, usageError{Err: fmt.Errorf("--%s %s: longer than %s", flag, s, time.Duration(math.MaxInt64))}
		}
		return time.Duration(n) * time.Second, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, usageError{Err: fmt.Errorf("--%s %q: want a duration such as 30s, 5m or 1h30m, or whole seconds", flag, s)}
	}
	return d, nil
}
