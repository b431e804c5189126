// Command sfld is SnowFlock's per-host daemon: it runs this host's VMs,
// clones them when a guest (or an operator) asks, gets clone slots from
// the allocator, and serves the daemon API to sfctl and other hosts over
// mutual TLS.
package main

import (
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/snowflock/snowflock/allocator"
	"github.com/snowflock/snowflock/clonesvc"
	"github.com/snowflock/snowflock/egosf/config"
	"github.com/snowflock/snowflock/internal/cli"
	"github.com/snowflock/snowflock/kvmbackend"
)

// version is set at build time (make build: -ldflags "-X main.version=…").
var version = "dev"

type globals struct {
	configFile string
	cli.LogFlags
	stdout io.Writer
	stderr io.Writer
}

type usageError = cli.UsageError

func main() {
	// sfld re-runs itself to start QEMU under a seccomp filter (see
	// kvmbackend.LauncherMain): that is not a subcommand for people.
	if len(os.Args) > 1 && os.Args[1] == kvmbackend.LauncherArg {
		os.Exit(kvmbackend.LauncherMain(os.Args[2:]))
	}
	os.Exit(execute(os.Args[1:], os.Stdout, os.Stderr))
}

func execute(args []string, stdout, stderr io.Writer) int {
	g := &globals{stdout: stdout, stderr: stderr}
	return cli.Run(newRoot(g), args, nil, stdout, stderr, clonesvc.ErrInvalidArgument, allocator.ErrInvalidArgument)
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
    hypervisor: kvm             # or xen (sfld running in a Xen dom0: PV domains through xl)
    kvm: {accel: tcg, machine: q35, memory_mib: 256, kernel: ..., initrd: ...}
    xen: {type: pv, memory_mib: 256, kernel: ..., initrd: ..., bridge: xenbr0}`,
		Version: version,
	}
	g.Register(root, "info", g.stderr)
	root.PersistentFlags().StringVar(&g.configFile, "config", "", "configuration file (default: $SNOWFLOCK_CONFIG, else "+config.SystemFile+", else built-in)")
	root.AddCommand(newServeCmd(g), newInitCACmd(g), newIssueCertCmd(g), newConfigCmd(g))
	return root
}
