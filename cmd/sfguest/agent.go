package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/snowflock/snowflock/egosf/guestagent"
)

func newAgentCmd(g *globals) *cobra.Command {
	var portName, channel string
	var wait time.Duration
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Run the in-guest agent (started by the guest's init, as root)",
		Long: `agent owns the VM's guest channel — under QEMU/KVM the virtio-serial port
named --port-name (found under /sys/class/virtio-ports), under Xen a stream
over xenstore nodes in the domain's own data/snowflock (/dev/xen/xenbus) —
and serves programs on --socket: it
forwards their guest API requests to sfld and routes the replies back. When
this VM turns out to be a new clone it sets the clone's hostname and reseeds
the kernel RNG before the program that cloned sees the reply. It also runs
commands for sfld (sfctl vm exec), copying their output to /dev/console.`,
		Example: `  sfguest agent &                                     # in the guest's /init
  sfguest agent --socket /tmp/sf.sock --log-level debug`,
		Args: nArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return g.runAgent(ctx, channel, portName, wait)
		},
	}
	cmd.Flags().StringVar(&portName, "port-name", guestagent.DefaultPortName, "name of the virtio-serial port to sfld")
	cmd.Flags().StringVar(&channel, "channel", guestagent.ChannelAuto, "guest channel: auto (the virtio port if there is one, else xenstore), virtio or xen")
	cmd.Flags().DurationVar(&wait, "port-wait", 30*time.Second, "how long to wait for the channel to appear")
	return cmd
}

func (g *globals) runAgent(ctx context.Context, channel, portName string, wait time.Duration) error {
	wctx, cancel := context.WithTimeout(ctx, wait)
	port, portDesc, err := guestagent.OpenChannel(wctx, channel, portName)
	cancel()
	if err != nil {
		return err
	}
	l, err := listen(g.socket)
	if err != nil {
		port.Close()
		return err
	}
	defer os.Remove(g.socket)
	var console io.Writer = g.stderr
	if f, err := os.OpenFile("/dev/console", os.O_WRONLY|syscall.O_NOCTTY, 0); err == nil {
		defer f.Close()
		console = f
	}
	g.log.Info().Str("port", portDesc).Str("socket", g.socket).Str("version", version).Msg("agent started")
	a := guestagent.New(guestagent.Config{Port: port, Listener: l, Version: version, Console: console, Log: g.log})
	return a.Run(ctx)
}

// listen opens the programs' socket, replacing a stale one. Every local
// program may use the guest API: the socket is world-writable.
func listen(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("socket directory: %w", err)
	}
	fi, err := os.Lstat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("socket %s: %w", path, err)
	case fi.Mode().Type() != fs.ModeSocket:
		return nil, fmt.Errorf("socket %s: exists and is not a socket", path)
	default:
		if c, err := net.Dial("unix", path); err == nil {
			c.Close()
			return nil, fmt.Errorf("another agent already listens on %s", path)
		}
		os.Remove(path)
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen: %w", err)
	}
	if err := os.Chmod(path, 0o666); err != nil {
		l.Close()
		return nil, fmt.Errorf("socket %s: %w", path, err)
	}
	return l, nil
}
