package slurm

import (
	"context"
	"fmt"

	"github.com/snowflock/snowflock/allocator"
)

var _ allocator.HostReporter = (*Allocator)(nil)

// Hosts reports the nodes of the configured partition: their CPUs, and how
// many of them are in use by any job (Slurm's view, not only ours). Nodes out
// of service (down, drained) count no slot.
func (a *Allocator) Hosts(ctx context.Context) ([]allocator.HostUsage, error) {
	if err := ctxErr(ctx); err != nil {
		return nil, fmt.Errorf("slurm allocator: %w", err)
	}
	nodes, err := a.nodes(ctx)
	if err != nil {
		return nil, fmt.Errorf("slurm allocator: %w", err)
	}
	in, _ := inPartition(nodes, a.cfg.Partition)
	if len(in) == 0 {
		return nil, fmt.Errorf("slurm allocator: no partition %q in the cluster: %w", a.cfg.Partition, allocator.ErrInvalidArgument)
	}
	out := make([]allocator.HostUsage, 0, len(in))
	for _, n := range in {
		h := allocator.HostUsage{Host: n.Name, Address: n.Addr}
		if n.Usable {
			h.Slots, h.Held = n.CPUs, n.CPUs-n.Idle
		}
		out = append(out, h)
	}
	return out, nil
}
