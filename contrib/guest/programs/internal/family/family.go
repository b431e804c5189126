// Package family turns a guest program into a clone family: one ticket, one
// sf_clone, and the parent gathering each clone's result (the guest API's
// exit value) with sf_join. It serves the in-guest demo and test programs.
package family

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/snowflock/snowflock/egosf"
	"github.com/snowflock/snowflock/egosf/guestproto"
)

// Family is this VM's place in a clone family.
type Family struct {
	Guest  *egosf.Guest
	Ticket egosf.GuestTicket
	// ID is 0 in the parent, 1..Ticket.Granted-1 in the clones.
	ID int
	// CloneTook is how long sf_clone took, seen from inside the guest.
	CloneTook time.Duration
	// Timing is sfld's account of the clone (in the parent; may be nil).
	Timing *guestproto.Timing
}

// Fork asks for n VMs (the parent counts as one) and clones this VM; it
// returns in the parent and in every clone.
func Fork(ctx context.Context, g *egosf.Guest, n int) (*Family, error) {
	t, err := g.RequestTicket(ctx, n)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	id, timing, err := g.CloneWithTiming(ctx, t.ID)
	if err != nil {
		return nil, err
	}
	return &Family{Guest: g, Ticket: t, ID: id, CloneTook: time.Since(start), Timing: timing}, nil
}

// Exit ends this clone with v, JSON-encoded, as its result.
func (f *Family) Exit(ctx context.Context, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode result: %w", err)
	}
	return f.Guest.Exit(ctx, b)
}

// Result is one clone's decoded result.
type Result[T any] struct {
	CloneID int
	Value   T
}

// Gather joins the family's ticket and decodes each clone's result, by
// clone ID. A clone that was killed or left an undecodable result fails it.
func Gather[T any](ctx context.Context, f *Family) ([]Result[T], error) {
	exits, err := f.Guest.Join(ctx, f.Ticket.ID)
	if err != nil {
		return nil, err
	}
	out := make([]Result[T], 0, len(exits))
	for _, e := range exits {
		if e.Killed {
			return nil, fmt.Errorf("clone %d did not exit: %s", e.CloneID, e.Reason)
		}
		r := Result[T]{CloneID: e.CloneID}
		if err := json.Unmarshal(e.Result, &r.Value); err != nil {
			return nil, fmt.Errorf("clone %d's result %q: %w", e.CloneID, e.Result, err)
		}
		out = append(out, r)
	}
	slices.SortFunc(out, func(a, b Result[T]) int { return a.CloneID - b.CloneID })
	return out, nil
}
