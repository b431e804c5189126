package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/snowflock/snowflock/clonesvc"
	"github.com/snowflock/snowflock/clonesvc/daemonapi"
	"github.com/snowflock/snowflock/clonesvc/pki"
	"github.com/snowflock/snowflock/egosf"
)

func newServeCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "serve",
		Short: "Run the daemon until SIGINT or SIGTERM",
		Long: `serve runs the daemon. VMs outlive it: a restarted sfld reattaches to the
VMs it left running and cleans up whatever an earlier one left half-done
(a clone being created, a checkpoint being written), releasing their slots.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return g.serve(ctx)
		},
	}
}

func (g *globals) serve(ctx context.Context) error {
	l, err := g.load()
	if err != nil {
		return err
	}
	tlsCfg, err := pki.LoadServerTLS(l.daemon.TLSDir, l.daemon.Name)
	if err != nil {
		return fmt.Errorf("daemon API certificate (run `sfld init-ca` or `sfld issue-cert %s` first): %w", l.daemon.Name, err)
	}
	alloc, err := egosf.Open(ctx, l.file)
	if err != nil {
		return err
	}
	defer alloc.Close()
	backend, err := l.hypervisor.open(l.backendCfg, g.Log.With().Str("backend", l.daemon.Hypervisor).Logger())
	if err != nil {
		return err
	}
	peerTLS, err := pki.LoadClientTLS(l.daemon.TLSDir, l.daemon.Name)
	if err != nil {
		return fmt.Errorf("this host's certificate as a client of other hosts: %w", err)
	}
	peers := daemonapi.NewPeers(peerTLS)
	defer peers.Close()
	svc, err := clonesvc.New(ctx, clonesvc.Config{
		Host: l.daemon.Name, StateDir: l.stateDir(), Backend: backend, Allocator: alloc.Allocator(),
		Lease: l.daemon.Lease, RequestTimeout: l.daemon.RequestTimeout, Log: g.Log, Version: version,
		Peers: peers, Address: l.daemon.Address, MemoryGroupPort: l.daemon.MemoryGroupPort, FetchTimeout: l.daemon.FetchTimeout,
		MemoryUnicast: l.daemon.MemoryUnicast,
	})
	if err != nil {
		return err
	}
	defer svc.Close()
	lis, err := net.Listen("tcp", l.daemon.Listen)
	if err != nil {
		return fmt.Errorf("daemon API: %w", err)
	}
	g.Log.Info().Str("listen", lis.Addr().String()).Str("host", l.daemon.Name).Str("allocator", l.file.Allocator.Backend).
		Str("state_dir", l.stateDir()).Str("version", version).Msg("sfld serving")
	return daemonapi.Serve(ctx, daemonapi.NewGRPC(svc, tlsCfg, g.Log), lis)
}
