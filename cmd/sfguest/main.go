// Command sfguest is SnowFlock's in-guest agent and the command line of the
// guest API: inside a VM, `sfguest agent` relays requests to sfld, and the
// other subcommands (request-ticket, clone, join, ...) let shell scripts
// clone the VM they run in.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/rs/zerolog"
	"github.com/spf13/cobra"

	"github.com/snowflock/snowflock/egosf"
	"github.com/snowflock/snowflock/egosf/guestproto"
	"github.com/snowflock/snowflock/internal/cli"
)

// Exit statuses.
const (
	exitOK      = cli.ExitOK
	exitFailure = cli.ExitFailure // the request failed: not in a guest, none available, VM failed
	exitUsage   = cli.ExitUsage   // usage error, invalid argument, unknown ticket or checkpoint
)

// version is set at build time (make build: -ldflags "-X main.version=…").
var version = "dev"

// globals are the flags and streams every subcommand shares.
type globals struct {
	socket    string
	logLevel  string
	logFormat string
	log       zerolog.Logger
	stdout    io.Writer
	stderr    io.Writer
}

func main() {
	os.Exit(execute(os.Args[1:], os.Stdout, os.Stderr))
}

// usageError marks errors in how sfguest was called.
type usageError = cli.UsageError

var nArgs = cli.ExactArgs

func execute(args []string, stdout, stderr io.Writer) int {
	return executeWith(&globals{stdout: stdout, stderr: stderr}, args, os.Stdin)
}

// executeWith runs sfguest: usage errors, invalid arguments and unknown
// tickets or checkpoints exit 2; failed requests (not in a guest, none
// available, VM failed) exit 1.
func executeWith(g *globals, args []string, stdin io.Reader) int {
	return cli.Run(newRoot(g), args, stdin, g.stdout, g.stderr, guestproto.ErrInvalidArgument, guestproto.ErrNotFound)
}

func newRoot(g *globals) *cobra.Command {
	root := &cobra.Command{
		Use:   "sfguest",
		Short: "SnowFlock's guest agent and guest API, inside a VM",
		Long: `sfguest runs inside a SnowFlock VM. "sfguest agent" (started by the guest's
init, as root) owns the guest channel to sfld; the other subcommands are the
guest API for shell scripts: ask for clones with request-ticket, clone the VM
with clone (the sfguest process itself is cloned: it prints 0 in the parent
and 1..m-1 in each clone, and the script goes on in every VM), end a clone
with exit, and wait for the clones with join.

Programs reach the agent through the unix socket /run/sfguest.sock
($SF_GUEST_SOCKET or --socket overrides it). Outside a SnowFlock guest every
API subcommand fails with "not inside a SnowFlock guest".

Output: results on stdout as key=value words; --json prints one JSON object
on one line; --quiet prints just the ticket ID, clone ID or count. Logs go to
stderr. Exit status: 0 success; 1 the request failed (not in a guest, no
clones available, VM failure); 2 usage error, invalid argument, or an unknown
ticket or checkpoint.`,
		Example: `  # Work in up to 4 VMs (busybox sh):
  t=$(sfguest request-ticket 4 --json | sed 's/.*"ticket":"\([^"]*\)".*/\1/')
  id=$(sfguest clone "$t")           # 0 here, 1..m-1 in each clone
  if [ "$id" -gt 0 ]; then
    sfguest exit --result "clone $id on $(hostname)"; exit 0   # ends this clone
  fi
  sfguest join "$t"                  # parent: one line per clone with its result

  # The same with --quiet:
  t=$(sfguest request-ticket 4 --quiet)

  # A checkpoint to clone from later:
  set -- $(sfguest checkpoint --quiet)   # $1 checkpoint ID, $2 clone ID
  if [ "$2" -eq 0 ]; then
    t=$(sfguest request-ticket 2 --quiet)
    sfguest create-clones "$1" "$t" && sfguest join "$t"
  else
    sfguest exit --result "resumed at $1 as clone $2"
  fi`,
		Version: version,

		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			return g.setupLogging(cmd)
		},
	}
	pf := root.PersistentFlags()
	pf.StringVar(&g.socket, "socket", egosf.GuestSocket(), "the agent's unix socket ($"+egosf.GuestSocketEnv+" sets the default)")
	pf.StringVar(&g.logLevel, "log-level", "", "log level: debug, info, warn, error (default: info for the agent, warn otherwise)")
	pf.StringVar(&g.logFormat, "log-format", "console", "log format on stderr: console or json")
	root.AddCommand(newAgentCmd(g),
		newRequestTicketCmd(g), newCloneCmd(g), newCheckpointCmd(g), newCreateClonesCmd(g),
		newExitCmd(g), newJoinCmd(g), newKillCmd(g), newReleaseCmd(g), newWhoAmICmd(g))
	return root
}

func (g *globals) setupLogging(cmd *cobra.Command) error {
	level := g.logLevel
	if level == "" {
		level = "warn"
		if cmd.Name() == "agent" {
			level = "info"
		}
	}
	log, err := cli.NewLogger(level, g.logFormat, g.stderr, "sfguest")
	if err != nil {
		return usageError{Err: err}
	}
	g.log = log
	return nil
}

// withGuest connects to the agent with a context that SIGINT and SIGTERM
// cancel, runs fn and disconnects.
func (g *globals) withGuest(cmd *cobra.Command, fn func(ctx context.Context, guest *egosf.Guest) error) error {
	ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	guest, err := egosf.OpenGuestAt(ctx, g.socket)
	if err != nil {
		return err
	}
	defer guest.Close()
	return fn(ctx, guest)
}

// output is the --json / --quiet choice of a read command.
type output struct {
	json, quiet bool
}

func (o *output) register(cmd *cobra.Command, quietHelp string) {
	cmd.Flags().BoolVar(&o.json, "json", false, "print one JSON object on one line")
	if quietHelp != "" {
		cmd.Flags().BoolVarP(&o.quiet, "quiet", "q", false, quietHelp)
	}
	cmd.PreRunE = func(*cobra.Command, []string) error {
		if o.json && o.quiet {
			return usageError{Err: errors.New("--json and --quiet exclude each other")}
		}
		return nil
	}
}

// print writes v as JSON (--json), quiet (--quiet) or text.
func (o *output) print(w io.Writer, v any, quiet, text string) error {
	switch {
	case o.json:
		return json.NewEncoder(w).Encode(v)
	case o.quiet:
		_, err := fmt.Fprintln(w, quiet)
		return err
	}
	_, err := fmt.Fprintln(w, text)
	return err
}
