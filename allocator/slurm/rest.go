package slurm

import (
	"fmt"

	"github.com/snowflock/snowflock/allocator"
)

func newREST(cfg Config, user string) (scheduler, error) {
	return nil, fmt.Errorf("rest mode: not built yet: %w", allocator.ErrInvalidArgument)
}
