package clonesvc

import (
	"context"

	"github.com/snowflock/snowflock/egosf/guestproto"
)

// Peers reaches the clone services of other hosts (the daemon API of their
// sfld, over mutual TLS). A Service without Peers makes clones only on its
// own host.
type Peers interface {
	// StartClones asks the host at address to start clones of a family.
	StartClones(ctx context.Context, address string, req RemoteClones) ([]VMRecord, error)
	// KillClones asks the host at address to stop the clones of ticket.
	KillClones(ctx context.Context, address, ticket string) error
	// CloneEnded tells the parent's host at address that a clone ended.
	CloneEnded(ctx context.Context, address, ticket, vm string, exit Exit) error
}

// RemoteClones is what a clone host needs to start clones of a family:
// the descriptor, where the family's memory is served, and the clones.
type RemoteClones struct {
	Ticket     string
	ParentHost string // the parent host's daemon API address
	ParentVM   string
	Family     string
	Descriptor []byte
	Memory     MemoryEndpoint
	Clones     []RemoteClone
	CPUs       int
	MemoryMiB  int
}

// RemoteClone is one clone to start on another host.
type RemoteClone struct {
	CloneID  int
	Hostname string
	// Resume is the reply the clone's agent waits for (nil when the clone
	// was made without the guest's cooperation).
	Resume *guestproto.Message
	// Identity is sent instead when Resume is nil.
	Identity *guestproto.Identity
}

// MemoryEndpoint is where a family's frozen memory is served: the memory
// server's unicast address and the family's multicast group (both
// host:port, UDP).
type MemoryEndpoint struct {
	Server string
	Group  string
}
