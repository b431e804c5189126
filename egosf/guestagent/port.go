package guestagent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// DefaultPortName is the name of SnowFlock's virtio-serial port.
const DefaultPortName = "org.snowflock.guest"

// SysVirtioPorts is where Linux lists virtio-serial ports with their names.
const SysVirtioPorts = "/sys/class/virtio-ports"

// FindPort returns the device of the virtio-serial port called name, looking
// in sysDir (SysVirtioPorts) for vportNpM/name files: /dev/vportNpM.
func FindPort(sysDir, name string) (string, error) {
	entries, err := os.ReadDir(sysDir)
	if err != nil {
		return "", fmt.Errorf("list virtio-serial ports: %w", err)
	}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(sysDir, e.Name(), "name"))
		if err == nil && strings.TrimSpace(string(b)) == name {
			return filepath.Join("/dev", e.Name()), nil
		}
	}
	return "", fmt.Errorf("no virtio-serial port named %q in %s: %w", name, sysDir, os.ErrNotExist)
}

// OpenPort opens the virtio-serial port called name, waiting for it to
// appear (the driver may still be probing) until ctx ends. Only one process
// may have the port open.
func OpenPort(ctx context.Context, name string) (*os.File, error) {
	for {
		dev, err := FindPort(SysVirtioPorts, name)
		if err == nil {
			f, err := os.OpenFile(dev, os.O_RDWR, 0)
			if err != nil {
				return nil, fmt.Errorf("open guest channel: %w", err)
			}
			return f, nil
		}
		if !errors.Is(err, os.ErrNotExist) {
			return nil, err
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%w (waited: %w)", err, context.Cause(ctx))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// eofRetryReader reads a virtio-serial port, on which a read returns EOF
// while the host side is not connected: it waits and reads again until
// data comes or ctx ends, so that the frame reader above sees one stream.
type eofRetryReader struct {
	ctx   context.Context
	r     io.Reader
	delay time.Duration
}

func (e *eofRetryReader) Read(b []byte) (int, error) {
	for {
		n, err := e.r.Read(b)
		if n > 0 || !errors.Is(err, io.EOF) {
			if errors.Is(err, io.EOF) {
				err = nil
			}
			return n, err
		}
		sleep(e.ctx, e.delay)
		if e.ctx.Err() != nil {
			return 0, context.Cause(e.ctx)
		}
	}
}
