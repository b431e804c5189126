// Command sfld is SnowFlock's per-host daemon: it runs this host's VMs,
// clones them when a guest (or an operator) asks, gets clone slots from
// the allocator, and serves the daemon API to sfctl and other hosts over
// mutual TLS.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/rs/zerolog"
	"github.com/spf13/cobra"

	"github.com/snowflock/snowflock/allocator"
	"github.com/snowflock/snowflock/clonesvc"
	"github.com/snowflock/snowflock/egosf/config"
	"github.com/snowflock/snowflock/internal/logflags"
)

// version is set at build time (make build: -ldflags "-X main.version=…").
var version = "dev"

// Exit statuses.
const (
	exitOK    = 0
	exitFail  = 1
	exitUsage = 2
)

type globals struct {
	configFile string
	logLevel   string
	logFormat  string
	log        zerolog.Logger
	stdout     io.Writer
	stderr     io.Writer
}

type usageError struct{ error }

func (e usageError) Unwrap() error { return e.error }

func main() { os.Exit(execute(os.Args[1:], os.Stdout, os.Stderr)) }

func execute(args []string, stdout, stderr io.Writer) int {
	g := &globals{stdout: stdout, stderr: stderr}
	root := newRoot(g)
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.Execute()
	if err == nil {
		return exitOK
	}
	fmt.Fprintln(stderr, "sfld: "+strings.Join(strings.Fields(err.Error()), " "))
	var ue usageError
	if errors.As(err, &ue) || errors.Is(err, clonesvc.ErrInvalidArgument) || errors.Is(err, allocator.ErrInvalidArgument) ||
		strings.HasPrefix(err.Error(), "unknown command") {
		return exitUsage
	}
	return exitFail
}

func newRoot(g *globals) *cobra.Command {
	root := &cobra.Command{
		Use:   "sfld",
		Short: "SnowFlock's per-host daemon",
		Long: `sfld runs this host's VMs and clones them: a program inside a VM calls
sf_request_ticket and sf_clone (through the in-guest agent sfguest), sfld gets
slots from the allocator, freezes the VM into a descriptor and a memory image,
and starts the clones. Operators drive it with sfctl.

The daemon API is gRPC over mutual TLS: every host and operator holds a
certificate from the cluster's CA. Setting up a cluster takes two commands:

  sfld init-ca                  # once, on the first host: CA + this host's and an operator certificate
  sfld issue-cert HOST --host ADDR   # for every other host (copy the files there)

Configuration (--config FILE, else $SNOWFLOCK_CONFIG, else
/etc/snowflock/snowflock.yaml, else built in) is the file sfalloc reads, with
an sfld section:

  sfld:
    listen: 127.0.0.1:7468      # daemon API address
    name: HOST                  # this host's name (default: hostname)
    tls_dir: STATE_DIR/tls      # CA certificate, this host's certificate and key
    hypervisor: kvm
    kvm: {accel: tcg, machine: q35, memory_mib: 256, kernel: ..., initrd: ...}`,
		Version:       version,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(*cobra.Command, []string) error {
			log, err := logflags.New(g.logLevel, g.logFormat, g.stderr, "sfld")
			if err != nil {
				return usageError{err}
			}
			g.log = log
			return nil
		},
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	pf := root.PersistentFlags()
	pf.StringVar(&g.configFile, "config", "", "configuration file (default: $SNOWFLOCK_CONFIG, else "+config.SystemFile+", else built-in)")
	pf.StringVar(&g.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	pf.StringVar(&g.logFormat, "log-format", "console", "log format on stderr: console or json")
	root.AddCommand(newServeCmd(g), newInitCACmd(g), newIssueCertCmd(g), newConfigCmd(g))
	return root
}
