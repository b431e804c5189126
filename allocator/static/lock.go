package static

import (
	"context"
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/snowflock/snowflock/allocator"
)

// lockPool takes the pool's lock file (state_dir/static.db.lock): shared for
// readers, exclusive for writers. Waiters block in flock(2), so the kernel
// wakes them as soon as the holder is done (bbolt's own lock polls every
// 50 ms, which under contention made some callers wait hundreds of
// milliseconds). It returns the function that releases the lock.
func lockPool(ctx context.Context, path string, shared bool) (func(), error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("opening pool lock: %v: %w", err, allocator.ErrBackendDown)
	}
	how := unix.LOCK_EX
	if shared {
		how = unix.LOCK_SH
	}
	fd := int(f.Fd())
	if err := unix.Flock(fd, how|unix.LOCK_NB); err == nil {
		return func() { f.Close() }, nil
	} else if !errors.Is(err, unix.EWOULDBLOCK) {
		f.Close()
		return nil, fmt.Errorf("locking pool %s: %v: %w", path, err, allocator.ErrBackendDown)
	}
	got := make(chan error, 1)
	go func() {
		for {
			err := unix.Flock(fd, how)
			if !errors.Is(err, unix.EINTR) {
				got <- err
				return
			}
		}
	}()
	select {
	case err := <-got:
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("locking pool %s: %v: %w", path, err, allocator.ErrBackendDown)
		}
		return func() { f.Close() }, nil
	case <-ctx.Done():
		// Closing the file ends our claim, whether the flock call is
		// still waiting or has just succeeded.
		go func() { <-got; f.Close() }()
		return nil, fmt.Errorf("pool %s stayed locked by another process: %w", path, ctxErr(ctx))
	}
}
