package main

import (
	"context"
	"errors"
	"fmt"
	"unicode/utf8"

	"github.com/snowflock/snowflock/egosf"
)

// resumedMarker is the result of a clone that resumed in a checkpoint.
const resumedMarker = "resumed-at-checkpoint:"

// checkpoint makes a checkpoint of this VM. The parent prints it and exits
// without cloning; clones made from it later resume here and exit with
// "resumed-at-checkpoint:<id>". N is accepted for symmetry and unused.
func checkpoint(ctx context.Context, g *egosf.Guest, args []string) (any, error) {
	if len(args) > 1 {
		return nil, errors.New("checkpoint takes at most N")
	}
	cp, id, err := g.CheckpointParent(ctx)
	if err != nil {
		return nil, err
	}
	if id > 0 {
		return nil, g.Exit(ctx, fmt.Appendf(nil, "%s%d", resumedMarker, id))
	}
	return map[string]any{"checkpoint": cp, "clone_id": id}, nil
}

type exitView struct {
	CloneID int    `json:"clone_id"`
	Result  string `json:"result"`
	Killed  bool   `json:"killed,omitempty"`
	Reason  string `json:"reason,omitempty"`
}

// createClones: in the parent, N clones of checkpoint CP, joined.
func createClones(ctx context.Context, g *egosf.Guest, args []string) (any, error) {
	if len(args) != 2 {
		return nil, errors.New("create-clones wants CHECKPOINT N")
	}
	n, err := count(args, 1)
	if err != nil {
		return nil, err
	}
	t, err := g.RequestTicket(ctx, n)
	if err != nil {
		return nil, err
	}
	created, err := g.CreateClones(ctx, args[0], t.ID)
	if err != nil {
		g.Release(context.WithoutCancel(ctx), t.ID)
		return nil, err
	}
	exits, err := g.Join(ctx, t.ID)
	if err != nil {
		return nil, err
	}
	views := make([]exitView, len(exits))
	for i, e := range exits {
		r := e.Result
		if !utf8.Valid(r) {
			r = []byte(fmt.Sprintf("%x", r))
		}
		views[i] = exitView{CloneID: e.CloneID, Result: string(r), Killed: e.Killed, Reason: e.Reason}
	}
	return map[string]any{"granted": t.Granted, "created": created, "exits": views}, nil
}
