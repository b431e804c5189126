package xenbackend

import (
	"context"
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Checkpoint images stream through named pipes: `xl save` writes into one
// while Split reads it, and Join writes into one while `xl restore` reads
// it. No whole image is ever stored twice.

// mkfifo makes a named pipe at path (replacing a stale one).
func mkfifo(path string) error {
	os.Remove(path)
	if err := unix.Mkfifo(path, 0o600); err != nil {
		return fmt.Errorf("mkfifo %s: %w", path, err)
	}
	return nil
}

// openFIFO opens the named pipe at path for reading (write false) or
// writing, waiting for the other end, which xl opens. If xl exits first
// (exited is closed) or ctx ends, openFIFO opens the other end itself to
// unblock, and fails.
func openFIFO(ctx context.Context, path string, write bool, exited <-chan struct{}) (*os.File, error) {
	flag, other := os.O_RDONLY, unix.O_WRONLY
	if write {
		flag, other = os.O_WRONLY, unix.O_RDONLY
	}
	type result struct {
		f   *os.File
		err error
	}
	ch := make(chan result, 1)
	go func() {
		f, err := os.OpenFile(path, flag, 0)
		ch <- result{f, err}
	}()
	var why error
	select {
	case r := <-ch:
		if r.err != nil {
			return nil, fmt.Errorf("open %s: %w", path, r.err)
		}
		growPipe(r.f)
		return r.f, nil
	case <-exited:
		why = errors.New("xl exited before opening its image pipe")
	case <-ctx.Done():
		why = ctx.Err()
	}
	// Unblock the open above: a reader's open returns once a writer
	// opened, and the other way round. A nonblocking open of the write
	// end fails with ENXIO until the reader is in open(2): retry.
	for {
		fd, err := unix.Open(path, other|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
		if err == nil {
			r := <-ch
			unix.Close(fd)
			if r.f != nil {
				r.f.Close()
			}
			return nil, why
		}
		if !errors.Is(err, syscall.ENXIO) {
			return nil, fmt.Errorf("%w (unblocking %s: %w)", why, path, err)
		}
		select {
		case r := <-ch:
			if r.f != nil {
				r.f.Close()
			}
			return nil, why
		case <-time.After(time.Millisecond):
		}
	}
}

// pipeSize is the buffer asked for the image pipes. With Linux's default
// 64 KiB, xl and sfld take turns every few pages, and each switch is dear
// in a PV dom0 (a hypercall); 1 MiB is the default pipe-max-size.
const pipeSize = 1 << 20

// growPipe enlarges f's pipe buffer to pipeSize, if the kernel lets it.
func growPipe(f *os.File) {
	if rc, err := f.SyscallConn(); err == nil {
		rc.Control(func(fd uintptr) { unix.FcntlInt(fd, unix.F_SETPIPE_SZ, pipeSize) })
	}
}
