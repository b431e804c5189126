package daemonapi

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"sync"

	"github.com/snowflock/snowflock/clonesvc"
	"github.com/snowflock/snowflock/clonesvc/sfldpb"
	"github.com/snowflock/snowflock/egosf/guestproto"
)

// Peers reaches other hosts' sfld over the daemon API with this host's
// certificate. Connections are made on first use and kept.
type Peers struct {
	tls *tls.Config

	mu    sync.Mutex
	conns map[string]*Client
}

var _ clonesvc.Peers = (*Peers)(nil)

// NewPeers returns Peers that dial with tlsCfg (this host's client TLS).
func NewPeers(tlsCfg *tls.Config) *Peers {
	return &Peers{tls: tlsCfg, conns: map[string]*Client{}}
}

func (p *Peers) client(addr string) (*Client, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if c, ok := p.conns[addr]; ok {
		return c, nil
	}
	c, err := Dial(addr, p.tls)
	if err != nil {
		return nil, err
	}
	p.conns[addr] = c
	return c, nil
}

// Close closes every connection.
func (p *Peers) Close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for a, c := range p.conns {
		c.Close()
		delete(p.conns, a)
	}
}

// StartClones implements clonesvc.Peers.
func (p *Peers) StartClones(ctx context.Context, addr string, req clonesvc.RemoteClones) ([]clonesvc.VMRecord, error) {
	c, err := p.client(addr)
	if err != nil {
		return nil, err
	}
	pb := &sfldpb.StartClonesRequest{
		Ticket: req.Ticket, ParentHost: req.ParentHost, ParentVm: req.ParentVM, Family: req.Family,
		Descriptor_: req.Descriptor, MemoryServer: req.Memory.Server, MemoryGroup: req.Memory.Group,
		Cpus: int32(req.CPUs), MemoryMib: int32(req.MemoryMiB),
	}
	for _, rc := range req.Clones {
		resume, err := resumeBytes(rc)
		if err != nil {
			return nil, err
		}
		pb.Clones = append(pb.Clones, &sfldpb.RemoteClone{CloneId: int32(rc.CloneID), Hostname: rc.Hostname, Resume: resume})
	}
	r, err := c.StartClones(ctx, pb)
	if err != nil {
		return nil, err
	}
	var out []clonesvc.VMRecord
	for _, v := range r.Clones {
		out = append(out, clonesvc.VMRecord{
			ID: v.Id, Name: v.Name, Hostname: v.Hostname, Role: v.Role, State: v.State, Parent: v.Parent,
			Ticket: v.Ticket, CloneID: int(v.CloneId), Family: v.Family, Console: v.Console, StartMS: v.StartMs,
		})
	}
	return out, nil
}

// resumeBytes encodes what a remote clone's agent is to be told: the
// reply it waits for, or (made without the guest) its identity alone.
func resumeBytes(rc clonesvc.RemoteClone) ([]byte, error) {
	m := rc.Resume
	if m == nil {
		m = &guestproto.Message{Op: guestproto.OpIdentity, Identity: rc.Identity}
	}
	b, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("clone %d resume: %w", rc.CloneID, err)
	}
	return b, nil
}

// KillClones implements clonesvc.Peers.
func (p *Peers) KillClones(ctx context.Context, addr, ticket string) error {
	c, err := p.client(addr)
	if err != nil {
		return err
	}
	_, err = c.KillClones(ctx, &sfldpb.KillClonesRequest{Ticket: ticket})
	return err
}

// CloneEnded implements clonesvc.Peers.
func (p *Peers) CloneEnded(ctx context.Context, addr, ticket, vm string, exit clonesvc.Exit) error {
	c, err := p.client(addr)
	if err != nil {
		return err
	}
	_, err = c.CloneEnded(ctx, &sfldpb.CloneEndedRequest{
		Ticket: ticket, Vm: vm, CloneId: int32(exit.CloneID), Result: exit.Result, Killed: exit.Killed, Reason: exit.Reason,
	})
	return err
}
