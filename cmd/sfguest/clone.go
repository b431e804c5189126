package main

import (
	"context"
	"fmt"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/snowflock/snowflock/egosf"
)

func newCloneCmd(g *globals) *cobra.Command {
	var o output
	cmd := ticketCmd(g, "clone", "Clone this VM (sf_clone); prints 0 in the parent, 1..m-1 in clones",
		`clone makes the clones TICKET granted. This sfguest process is cloned with
the VM and returns in every copy: it prints 0 in the parent and the clone's
ID (1..m-1) in each clone, where the script goes on from the same point.`,
		func(ctx context.Context, cmd *cobra.Command, guest *egosf.Guest, ticket string) error {
			id, err := guest.Clone(ctx, ticket)
			if err != nil {
				return err
			}
			return o.print(cmd.OutOrStdout(), map[string]int{"clone_id": id}, strconv.Itoa(id), strconv.Itoa(id))
		})
	cmd.Example = `  id=$(sfguest clone "$t")
  if [ "$id" -gt 0 ]; then echo "I am clone $id"; fi`
	o.register(cmd, "print only the clone ID (the default)")
	return cmd
}

// checkpointView is checkpoint's output.
type checkpointView struct {
	Checkpoint string `json:"checkpoint"`
	CloneID    int    `json:"clone_id"`
}

func newCheckpointCmd(g *globals) *cobra.Command {
	var o output
	cmd := &cobra.Command{
		Use:   "checkpoint",
		Short: "Freeze this VM into a checkpoint to clone later (sf_checkpoint_parent)",
		Long: `checkpoint freezes this VM into an immutable checkpoint and prints its ID
with clone ID 0. Clones made later with create-clones resume inside this
command, which then prints the same checkpoint ID with their clone ID.`,
		Example: `  sfguest checkpoint                 # checkpoint=cp-… clone_id=0
  set -- $(sfguest checkpoint --quiet)   # $1 checkpoint, $2 clone ID`,
		Args: nArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.withGuest(cmd, func(ctx context.Context, guest *egosf.Guest) error {
				cp, id, err := guest.CheckpointParent(ctx)
				if err != nil {
					return err
				}
				return o.print(cmd.OutOrStdout(), checkpointView{cp, id}, fmt.Sprintf("%s %d", cp, id),
					fmt.Sprintf("checkpoint=%s clone_id=%d", cp, id))
			})
		},
	}
	o.register(cmd, `print "CHECKPOINT CLONE_ID"`)
	return cmd
}

func newCreateClonesCmd(g *globals) *cobra.Command {
	var o output
	cmd := &cobra.Command{
		Use:   "create-clones CHECKPOINT TICKET",
		Short: "Start clones of a checkpoint (sf_create_clones)",
		Long: `create-clones starts the clones TICKET granted from CHECKPOINT; each resumes
inside the checkpoint command that made it. Prints how many were created;
wait for them with join.`,
		Example: `  sfguest create-clones "$cp" "$t" && sfguest join "$t"`,
		Args:    nArgs(2, "CHECKPOINT and TICKET"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.withGuest(cmd, func(ctx context.Context, guest *egosf.Guest) error {
				n, err := guest.CreateClones(ctx, args[0], args[1])
				if err != nil {
					return err
				}
				return o.print(cmd.OutOrStdout(), map[string]int{"created": n}, strconv.Itoa(n), fmt.Sprintf("created=%d", n))
			})
		},
	}
	o.register(cmd, "print only the number created")
	return cmd
}
