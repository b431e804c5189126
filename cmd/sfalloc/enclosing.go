package main

import (
	"context"
	"fmt"
	"time"

	"github.com/snowflock/snowflock/allocator"
	"github.com/snowflock/snowflock/egosf"
)

// enclosingAllocator is implemented by backends whose scheduler may already
// have given this process an allocation: the slurm backend inside a Slurm
// job (SLURM_JOB_ID). Enclosing returns nil when there is none.
type enclosingAllocator interface {
	Enclosing(ctx context.Context) (*allocator.Allocation, error)
}

// enclosing returns the slots of the allocation sfalloc runs in, as a
// ticket for req (at most req.Max slots), or nil when the backend has none.
// The ticket has no expiry: it belongs to the enclosing job, which sfalloc
// neither renews nor releases.
func (g *globals) enclosing(ctx context.Context, c *egosf.Client, req allocator.Request) (*egosf.Ticket, error) {
	e, ok := c.Allocator().(enclosingAllocator)
	if !ok {
		return nil, nil
	}
	al, err := e.Enclosing(ctx)
	if err != nil || al == nil {
		return nil, err
	}
	if al.Granted < req.Min {
		return nil, fmt.Errorf("the enclosing allocation %s has %d slots, fewer than the %d asked for (--reuse-job=false requests new ones): %w",
			al.ID, al.Granted, req.Min, allocator.ErrNoneAvailable)
	}
	var slots []allocator.Slot
	left := req.Max
	for _, s := range al.Slots {
		if left == 0 {
			break
		}
		s.Count = min(s.Count, left)
		left -= s.Count
		slots = append(slots, s)
	}
	al.Slots, al.Granted, al.Expires = slots, allocator.Total(slots), time.Time{}
	g.Log.Info().Str("id", al.ID).Int("granted", al.Granted).Msg("using the enclosing allocation")
	return &egosf.Ticket{Allocation: *al}, nil
}
