package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/snowflock/snowflock/egosf"
	"github.com/snowflock/snowflock/egosf/guestproto"
)

func newExitCmd(g *globals) *cobra.Command {
	var text, file string
	cmd := &cobra.Command{
		Use:   "exit",
		Short: "End this clone, passing a result to the parent's join (sf_exit)",
		Long: fmt.Sprintf(`exit ends this clone: sfld records the result (at most %d bytes) for the
parent's join and destroys the clone's VM.`, guestproto.MaxResult),
		Example: `  sfguest exit --result "$count"
  sfguest exit --result-file /tmp/out.json
  ./solve | sfguest exit --result-file -`,
		Args: nArgs(0, "no arguments (the result goes in --result or --result-file)"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			result, err := readResult(cmd, text, file)
			if err != nil {
				return err
			}
			return g.withGuest(cmd, func(ctx context.Context, guest *egosf.Guest) error {
				return guest.Exit(ctx, result)
			})
		},
	}
	cmd.Flags().StringVar(&text, "result", "", "the result, as text")
	cmd.Flags().StringVar(&file, "result-file", "", "read the result from this file (- for stdin)")
	return cmd
}

// readResult returns exit's result from --result or --result-file.
func readResult(cmd *cobra.Command, text, file string) ([]byte, error) {
	switch {
	case cmd.Flags().Changed("result") && file != "":
		return nil, usageError{Err: errors.New("--result and --result-file exclude each other")}
	case file == "":
		return []byte(text), nil
	}
	var r io.Reader = cmd.InOrStdin()
	if file != "-" {
		f, err := os.Open(file)
		if err != nil {
			return nil, usageError{Err: fmt.Errorf("--result-file: %w", err)}
		}
		defer f.Close()
		r = f
	}
	b, err := io.ReadAll(io.LimitReader(r, guestproto.MaxResult+1))
	if err != nil {
		return nil, fmt.Errorf("--result-file: %w", err)
	}
	if len(b) > guestproto.MaxResult {
		return nil, usageError{Err: fmt.Errorf("--result-file %s: longer than %d bytes", file, guestproto.MaxResult)}
	}
	return b, nil
}

func newWhoAmICmd(g *globals) *cobra.Command {
	var o output
	cmd := &cobra.Command{
		Use:     "whoami",
		Short:   "Print this VM's name, clone family and clone ID",
		Example: "  sfguest whoami            # vm=… family=… clone_id=0\n  sfguest whoami --quiet    # the clone ID",
		Args:    nArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.withGuest(cmd, func(ctx context.Context, guest *egosf.Guest) error {
				me, err := guest.WhoAmI(ctx)
				if err != nil {
					return err
				}
				return o.print(cmd.OutOrStdout(), me, strconv.Itoa(me.CloneID),
					fmt.Sprintf("vm=%s family=%s clone_id=%d", me.VM, me.Family, me.CloneID))
			})
		},
	}
	o.register(cmd, "print only the clone ID")
	return cmd
}
