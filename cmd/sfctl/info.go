package main

import (
	"context"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/snowflock/snowflock/clonesvc/daemonapi"
	"github.com/snowflock/snowflock/clonesvc/sfldpb"
)

func newInfoCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "info",
		Short: "Describe the sfld: version, host, backend, allocator",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.call(cmd.Context(), func(ctx context.Context, c *daemonapi.Client) error {
				r, err := c.Info(ctx, &sfldpb.InfoRequest{})
				if err != nil {
					return err
				}
				return g.print(r, func(w io.Writer) {
					fmt.Fprintf(w, "host\t%s\nversion\t%s\nbackend\t%s\nallocator\t%s\napi\tv%d\n", r.Host, r.Version, r.Backend, r.Allocator, r.ApiVersion)
				})
			})
		},
	}
}
