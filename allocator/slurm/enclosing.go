package slurm

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/snowflock/snowflock/allocator"
)

// Enclosing returns the allocation of the Slurm job this process runs in
// (SLURM_JOB_ID, set by salloc, sbatch and srun), or nil when there is none.
// That job is not SnowFlock's: the caller may use its slots but must not
// renew or release it; its ID is "slurm-JOBID" all the same. Only the CPUs
// of the job are counted (one slot each), as for allocations of ours.
func (a *Allocator) Enclosing(ctx context.Context) (*allocator.Allocation, error) {
	v := strings.TrimSpace(os.Getenv("SLURM_JOB_ID"))
	if v == "" {
		return nil, nil
	}
	id, err := strconv.Atoi(v)
	if err != nil || id <= 0 {
		return nil, fmt.Errorf("slurm allocator: SLURM_JOB_ID=%q is not a job ID: %w", v, allocator.ErrInvalidArgument)
	}
	if err := ctxErr(ctx); err != nil {
		return nil, fmt.Errorf("slurm allocator: %w", err)
	}
	j, err := a.s.job(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("slurm allocator: the enclosing job %d: %w", id, err)
	}
	if j == nil || !running[j.State] {
		return nil, fmt.Errorf("slurm allocator: SLURM_JOB_ID=%d is no running job of this cluster: %w", id, allocator.ErrUnknownAllocation)
	}
	slots, err := a.slots(ctx, j)
	if err != nil {
		return nil, fmt.Errorf("slurm allocator: %w", err)
	}
	al := &allocator.Allocation{ID: fmt.Sprintf("%s%d", idPrefix, id), Backend: Name, Name: j.Name, Consumer: j.Partition,
		Created: j.Start, Slots: slots}
	al.Granted = allocator.Total(al.Slots)
	if j.TimeLimit > 0 {
		al.Expires = j.End
	}
	return al, nil
}
