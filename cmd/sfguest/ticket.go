package main

import (
	"context"
	"fmt"
	"strconv"
	"unicode/utf8"

	"github.com/spf13/cobra"

	"github.com/snowflock/snowflock/egosf"
	"github.com/snowflock/snowflock/egosf/guestproto"
)

func newRequestTicketCmd(g *globals) *cobra.Command {
	var o output
	cmd := &cobra.Command{
		Use:   "request-ticket N",
		Short: "Ask for up to N clones (sf_request_ticket)",
		Long: `request-ticket asks sfld for N clones of this VM and prints the ticket and
how many were granted (m ≤ N). Clone with the ticket, or give it back with
release.`,
		Example: `  sfguest request-ticket 4            # ticket=t-… granted=4
  t=$(sfguest request-ticket 4 --quiet)
  t=$(sfguest request-ticket 4 --json | sed 's/.*"ticket":"\([^"]*\)".*/\1/')`,
		Args: nArgs(1, "N, the number of clones wanted"),
		RunE: func(cmd *cobra.Command, args []string) error {
			n, err := strconv.Atoi(args[0])
			if err != nil || n <= 0 {
				return usageError{Err: fmt.Errorf("N %q: want a whole number of clones, at least 1", args[0])}
			}
			return g.withGuest(cmd, func(ctx context.Context, guest *egosf.Guest) error {
				t, err := guest.RequestTicket(ctx, n)
				if err != nil {
					return err
				}
				return o.print(cmd.OutOrStdout(), t, t.ID, fmt.Sprintf("ticket=%s granted=%d", t.ID, t.Granted))
			})
		},
	}
	o.register(cmd, "print only the ticket ID")
	return cmd
}

// ticketCmd is a subcommand whose one argument is a ticket.
func ticketCmd(g *globals, use, short, long string, fn func(ctx context.Context, cmd *cobra.Command, guest *egosf.Guest, ticket string) error) *cobra.Command {
	return &cobra.Command{
		Use:   use + " TICKET",
		Short: short,
		Long:  long,
		Args:  nArgs(1, "TICKET"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.withGuest(cmd, func(ctx context.Context, guest *egosf.Guest) error {
				return fn(ctx, cmd, guest, args[0])
			})
		},
	}
}

func newReleaseCmd(g *globals) *cobra.Command {
	return ticketCmd(g, "release", "Give back a ticket not used to clone",
		"release gives back the clones a ticket granted, when the VM will not clone with it.",
		func(ctx context.Context, _ *cobra.Command, guest *egosf.Guest, ticket string) error {
			return guest.Release(ctx, ticket)
		})
}

func newKillCmd(g *globals) *cobra.Command {
	return ticketCmd(g, "kill", "Destroy every clone of a ticket at once (sf_kill)",
		"kill destroys every clone made with TICKET at once and frees their slots.",
		func(ctx context.Context, _ *cobra.Command, guest *egosf.Guest, ticket string) error {
			return guest.Kill(ctx, ticket)
		})
}

// exitView is one clone's exit as join prints it: the result as text
// when it is UTF-8, else base64.
type exitView struct {
	CloneID      int    `json:"clone_id"`
	Result       string `json:"result,omitempty"`
	ResultBase64 []byte `json:"result_base64,omitempty"`
	Killed       bool   `json:"killed,omitempty"`
	Reason       string `json:"reason,omitempty"`
}

func viewExit(e guestproto.Exit) exitView {
	v := exitView{CloneID: e.CloneID, Killed: e.Killed, Reason: e.Reason}
	if utf8.Valid(e.Result) {
		v.Result = string(e.Result)
	} else {
		v.ResultBase64 = e.Result
	}
	return v
}

func (v exitView) String() string {
	switch {
	case v.Killed:
		return fmt.Sprintf("clone_id=%d killed reason=%q", v.CloneID, v.Reason)
	case v.ResultBase64 != nil:
		return fmt.Sprintf("clone_id=%d exited result_base64=%x", v.CloneID, v.ResultBase64)
	}
	return fmt.Sprintf("clone_id=%d exited result=%q", v.CloneID, v.Result)
}

func newJoinCmd(g *globals) *cobra.Command {
	var o output
	cmd := ticketCmd(g, "join", "Wait for every clone of a ticket to exit (sf_join)",
		`join blocks until every clone made with TICKET has called exit (or died),
then prints one line per clone: its ID and its result (or why it was killed).
The ticket is gone afterwards.`,
		func(ctx context.Context, cmd *cobra.Command, guest *egosf.Guest, ticket string) error {
			exits, err := guest.Join(ctx, ticket)
			if err != nil {
				return err
			}
			views := make([]exitView, len(exits))
			for i, e := range exits {
				views[i] = viewExit(e)
			}
			if o.json {
				return o.print(cmd.OutOrStdout(), map[string][]exitView{"exits": views}, "", "")
			}
			for _, v := range views {
				if _, err := fmt.Fprintln(cmd.OutOrStdout(), v); err != nil {
					return err
				}
			}
			return nil
		})
	cmd.Example = `  sfguest join "$t"
  sfguest join "$t" --json    # {"exits":[{"clone_id":1,"result":"…"},…]}`
	o.register(cmd, "")
	return cmd
}
