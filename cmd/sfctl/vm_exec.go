package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/snowflock/snowflock/clonesvc/daemonapi"
	"github.com/snowflock/snowflock/clonesvc/sfldpb"
)

func errorf(format string, a ...any) error { return fmt.Errorf(format, a...) }

func newVMExecCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "exec VM -- COMMAND [ARG...]",
		Short: "Run a command in a VM through its guest agent",
		Long: `exec runs COMMAND inside the VM (through the sfguest agent), prints its
output and exits with its status. Its output also goes to the VM's console.`,
		Example: `  sfctl vm exec worker -- sfprimes -n 4
  sfctl vm exec worker --json -- hostname`,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) < 2 {
				return usageError{Err: errors.New("want VM -- COMMAND [ARG...]")}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			var code int32
			err := g.call(cmd.Context(), func(ctx context.Context, c *daemonapi.Client) error {
				r, err := c.Exec(ctx, &sfldpb.ExecRequest{Vm: args[0], Args: args[1:]})
				if err != nil {
					return err
				}
				code = r.ExitCode
				if g.json {
					return g.print(map[string]any{"exit_code": r.ExitCode, "output": string(r.Output)}, nil)
				}
				_, err = g.stdout.Write(r.Output)
				return err
			})
			if err == nil && code != 0 && !g.json {
				return exitError{Code: int(code)}
			}
			return err
		},
	}
}
