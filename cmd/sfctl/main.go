// Command sfctl is SnowFlock's operator CLI: it drives an sfld over its
// mutual-TLS daemon API — start, list and stop VMs, clone them, make
// checkpoints, kill clone families.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"reflect"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/snowflock/snowflock/allocator"
	"github.com/snowflock/snowflock/clonesvc"
	"github.com/snowflock/snowflock/clonesvc/daemonapi"
	"github.com/snowflock/snowflock/clonesvc/pki"
	"github.com/snowflock/snowflock/egosf"
	"github.com/snowflock/snowflock/egosf/config"
	"github.com/snowflock/snowflock/internal/cli"
)

var version = "dev"

type globals struct {
	configFile string
	addr       string
	tlsDir     string
	certName   string
	timeout    time.Duration
	json       bool
	cli.LogFlags
	stdout io.Writer
	stderr io.Writer
}

// usageError marks errors in how sfctl was called; exitError carries the
// status of a command run by vm exec.
type (
	usageError = cli.UsageError
	exitError  = cli.ExitError
)

var exactArgs = cli.ExactArgs

func main() { os.Exit(execute(os.Args[1:], os.Stdout, os.Stderr)) }

func execute(args []string, stdout, stderr io.Writer) int {
	g := &globals{stdout: stdout, stderr: stderr}
	return cli.Run(newRoot(g), args, nil, stdout, stderr,
		clonesvc.ErrInvalidArgument, clonesvc.ErrNotFound, allocator.ErrInvalidArgument)
}

func newRoot(g *globals) *cobra.Command {
	root := &cobra.Command{
		Use:   "sfctl",
		Short: "Drive a SnowFlock host daemon (sfld)",
		Long: `sfctl talks to an sfld over its daemon API (gRPC, mutual TLS). By default it
reaches the sfld of the configuration (sfld.listen) with the operator
certificate that 'sfld init-ca' made (admin.crt in sfld.tls_dir).

Exit status: 0 success; 1 failure (no slots, VM failed, sfld unreachable);
2 usage error or unknown VM/ticket/checkpoint; for 'vm exec', the command's.`,
		Example: `  sfctl vm start --name worker --wait
  sfctl vm exec worker -- uname -a
  sfctl clone worker -n 4
  sfctl vm list --json
  sfctl kill tk-1a2b3c4d`,
		Version: version,
	}
	g.Register(root, "warn", g.stderr)
	pf := root.PersistentFlags()
	pf.StringVar(&g.configFile, "config", "", "configuration file (default: $SNOWFLOCK_CONFIG, else "+config.SystemFile+", else built-in)")
	pf.StringVar(&g.addr, "addr", "", "sfld address HOST:PORT (default: sfld.listen of the configuration)")
	pf.StringVar(&g.tlsDir, "tls-dir", "", "directory of ca.crt and the client certificate (default: sfld.tls_dir)")
	pf.StringVar(&g.certName, "cert", "admin", "client certificate name (NAME.crt, NAME.key in --tls-dir)")
	pf.DurationVar(&g.timeout, "timeout", 10*time.Minute, "give up after this long")
	pf.BoolVar(&g.json, "json", false, "print results as JSON")
	vm := &cobra.Command{Use: "vm", Short: "Start, list, stop VMs and run commands in them"}
	vm.AddCommand(newVMStartCmd(g), newVMListCmd(g), newVMStopCmd(g), newVMExecCmd(g))
	root.AddCommand(vm, newCloneCmd(g), newCheckpointCmd(g), newKillCmd(g), newTicketListCmd(g), newInfoCmd(g))
	return root
}

// call dials sfld and runs fn with a context bounded by --timeout and
// cancelled by SIGINT/SIGTERM.
func (g *globals) call(parent context.Context, fn func(context.Context, *daemonapi.Client) error) error {
	addr, dir := g.addr, g.tlsDir
	if addr == "" || dir == "" {
		file, err := egosf.LoadConfig(config.Options{File: g.configFile})
		if err != nil {
			return err
		}
		d, err := daemonapi.LoadConfig(file)
		if err != nil {
			return err
		}
		if addr == "" {
			addr = d.Listen
		}
		if dir == "" {
			dir = d.TLSDir
		}
	}
	tlsCfg, err := pki.LoadClientTLS(dir, g.certName)
	if err != nil {
		return fmt.Errorf("client certificate (see `sfld init-ca`): %v", err) // not a usage error: exit 1
	}
	c, err := daemonapi.Dial(addr, tlsCfg)
	if err != nil {
		return err
	}
	defer c.Close()
	ctx, stop := signal.NotifyContext(parent, os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, g.timeout)
	defer cancel()
	if err := fn(ctx, c); err != nil {
		return fmt.Errorf("sfld at %s: %w", addr, err)
	}
	return nil
}

// print writes v as indented JSON with --json, else calls human.
func (g *globals) print(v any, human func(w io.Writer)) error {
	if g.json {
		enc := json.NewEncoder(g.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(jsonOf(v))
	}
	tw := tabwriter.NewWriter(g.stdout, 2, 4, 2, ' ', 0)
	human(tw)
	return tw.Flush()
}

// protoJSON writes protobuf messages with their proto field names and
// every field, zero or not, so that scripts can rely on them.
var protoJSON = protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true}

// jsonOf turns protobuf messages (and slices of them) into raw JSON for
// encoding/json; other values pass unchanged.
func jsonOf(v any) any {
	if m, ok := v.(proto.Message); ok {
		b, err := protoJSON.Marshal(m)
		if err != nil {
			return v
		}
		return json.RawMessage(b)
	}
	rv := reflect.ValueOf(v)
	if rv.Kind() == reflect.Slice {
		out := make([]any, rv.Len())
		for i := range out {
			out[i] = jsonOf(rv.Index(i).Interface())
		}
		return out
	}
	return v
}
