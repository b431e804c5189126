package daemonapi

import (
	"context"
	"crypto/tls"
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/snowflock/snowflock/clonesvc/apierr"
	"github.com/snowflock/snowflock/clonesvc/sfldpb"
)

// Client is a connection to an sfld. Its methods return errors of the
// clone service's classes (errors.Is(err, clonesvc.ErrNotFound)).
type Client struct {
	sfldpb.SfldClient
	conn *grpc.ClientConn
}

// Dial connects to the sfld at addr (host:port) with mutual TLS.
func Dial(addr string, tlsCfg *tls.Config) (*Client, error) {
	conn, err := grpc.NewClient(addr,
		grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg)),
		grpc.WithUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, inv grpc.UnaryInvoker, opts ...grpc.CallOption) error {
			return apierr.FromGRPC(inv(ctx, method, req, reply, cc, opts...))
		}))
	if err != nil {
		return nil, fmt.Errorf("sfld at %s: %w", addr, err)
	}
	return &Client{SfldClient: sfldpb.NewSfldClient(conn), conn: conn}, nil
}

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }
