package guestagent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/snowflock/snowflock/internal/xenchan"
	"github.com/snowflock/snowflock/internal/xenstore"
)

// Guest channel kinds.
const (
	ChannelAuto   = "auto"   // whichever appears: the virtio port, else xenstore
	ChannelVirtio = "virtio" // the virtio-serial port (KVM, QEMU)
	ChannelXen    = "xen"    // xenstore (Xen PV and PVH guests)
)

// xenChannel is the guest channel of a Xen guest: the stream over xenstore
// nodes under the domain's own data/snowflock (internal/xenchan), with the
// xenstore connection it runs on.
type xenChannel struct {
	*xenchan.Conn
	xs *xenstore.Client
}

func (x *xenChannel) Close() error {
	return errors.Join(x.Conn.Close(), x.xs.Close())
}

// OpenXen opens the guest channel over xenstore (the xenbus device).
func OpenXen(ctx context.Context) (io.ReadWriteCloser, error) {
	xs, err := xenstore.Dial(ctx, xenstore.DevicePath)
	if err != nil {
		return nil, fmt.Errorf("guest channel over xenstore: %w", err)
	}
	c, err := xenchan.Guest(ctx, xs)
	if err != nil {
		xs.Close()
		return nil, fmt.Errorf("guest channel over xenstore: %w", err)
	}
	return &xenChannel{Conn: c, xs: xs}, nil
}

// OpenChannel opens the guest channel of the given kind (ChannelAuto:
// the virtio-serial port named portName if this VM has one, else
// xenstore if this is a Xen guest), waiting for it until ctx ends. name
// says which it opened.
func OpenChannel(ctx context.Context, kind, portName string) (ch io.ReadWriteCloser, name string, err error) {
	switch kind {
	case ChannelVirtio:
		f, err := OpenPort(ctx, portName)
		if err != nil {
			return nil, "", err
		}
		return f, f.Name(), nil
	case ChannelXen:
		c, err := OpenXen(ctx)
		return c, "xenstore", err
	case ChannelAuto, "":
	default:
		return nil, "", fmt.Errorf("guest channel %q: want auto, virtio or xen", kind)
	}
	for {
		if dev, err := FindPort(SysVirtioPorts, portName); err == nil {
			f, err := os.OpenFile(dev, os.O_RDWR, 0)
			if err != nil {
				return nil, "", fmt.Errorf("open guest channel: %w", err)
			}
			return f, dev, nil
		}
		if _, err := os.Stat(xenstore.DevicePath); err == nil {
			c, err := OpenXen(ctx)
			return c, "xenstore", err
		}
		select {
		case <-ctx.Done():
			return nil, "", fmt.Errorf("no guest channel: no virtio-serial port %q under %s and no %s (waited: %w)",
				portName, SysVirtioPorts, xenstore.DevicePath, context.Cause(ctx))
		case <-time.After(100 * time.Millisecond):
		}
	}
}
