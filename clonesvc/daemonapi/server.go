// Package daemonapi serves the clone service over gRPC with mutual TLS
// (the sfld daemon API, clonesvc/sfldpb) and dials it.
package daemonapi

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"

	"github.com/rs/zerolog"

	"github.com/snowflock/snowflock/clonesvc"
	"github.com/snowflock/snowflock/clonesvc/apierr"
	"github.com/snowflock/snowflock/clonesvc/sfldpb"
	"github.com/snowflock/snowflock/egosf/guestproto"
)

// APIVersion is the daemon API's version (the proto package's).
const APIVersion = 1

// Server adapts a clonesvc.Service to the gRPC service.
type Server struct {
	sfldpb.UnimplementedSfldServer
	svc *clonesvc.Service
	log zerolog.Logger
}

var _ sfldpb.SfldServer = (*Server)(nil)

// NewGRPC returns a gRPC server for svc: TLS from tlsCfg (which must
// require client certificates), every call logged with its caller's
// certificate name, errors mapped to status codes.
func NewGRPC(svc *clonesvc.Service, tlsCfg *tls.Config, log zerolog.Logger) *grpc.Server {
	s := &Server{svc: svc, log: log}
	g := grpc.NewServer(
		grpc.Creds(credentials.NewTLS(tlsCfg)),
		grpc.UnaryInterceptor(s.intercept),
	)
	sfldpb.RegisterSfldServer(g, s)
	return g
}

func (s *Server) intercept(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	start := time.Now()
	resp, err := h(ctx, req)
	ev := s.log.Debug()
	if err != nil {
		ev = s.log.Info().Err(err)
	}
	ev.Str("call", info.FullMethod).Str("caller", caller(ctx)).Dur("took", time.Since(start)).Msg("api")
	return resp, apierr.ToGRPC(err)
}

// caller is the verified certificate name of the peer.
func caller(ctx context.Context) string {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return "?"
	}
	if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok && len(ti.State.VerifiedChains) > 0 {
		return ti.State.VerifiedChains[0][0].Subject.CommonName
	}
	return p.Addr.String()
}

// Serve serves g on lis until ctx ends, then stops gracefully.
func Serve(ctx context.Context, g *grpc.Server, lis net.Listener) error {
	errc := make(chan error, 1)
	go func() { errc <- g.Serve(lis) }()
	select {
	case err := <-errc:
		return fmt.Errorf("daemon API: %w", err)
	case <-ctx.Done():
		stopped := make(chan struct{})
		go func() { g.GracefulStop(); close(stopped) }()
		select {
		case <-stopped:
		case <-time.After(5 * time.Second):
			g.Stop()
		}
		return nil
	}
}

func (s *Server) Info(ctx context.Context, _ *sfldpb.InfoRequest) (*sfldpb.InfoReply, error) {
	i := s.svc.Info()
	return &sfldpb.InfoReply{Version: i.Version, Host: i.Host, Backend: i.Backend, Allocator: i.Allocator, ApiVersion: APIVersion}, nil
}

func (s *Server) StartVM(ctx context.Context, r *sfldpb.StartVMRequest) (*sfldpb.VM, error) {
	rec, err := s.svc.StartVM(ctx, clonesvc.VMSpec{
		Hostname: r.Name, CPUs: int(r.Cpus), MemoryMiB: int(r.MemoryMib),
		Kernel: r.Kernel, Initrd: r.Initrd, Append: r.Append,
	}, r.WaitReady)
	if err != nil {
		return nil, err
	}
	return vmpb(rec), nil
}

func (s *Server) ListVMs(ctx context.Context, _ *sfldpb.ListVMsRequest) (*sfldpb.ListVMsReply, error) {
	out := &sfldpb.ListVMsReply{}
	for _, r := range s.svc.ListVMs() {
		out.Vms = append(out.Vms, vmpb(r))
	}
	return out, nil
}

func (s *Server) StopVM(ctx context.Context, r *sfldpb.StopVMRequest) (*sfldpb.StopVMReply, error) {
	return &sfldpb.StopVMReply{}, s.svc.StopVM(ctx, r.Vm)
}

func (s *Server) Exec(ctx context.Context, r *sfldpb.ExecRequest) (*sfldpb.ExecReply, error) {
	code, out, err := s.svc.Exec(ctx, r.Vm, r.Args)
	if err != nil {
		return nil, err
	}
	return &sfldpb.ExecReply{ExitCode: int32(code), Output: out}, nil
}

func (s *Server) Clone(ctx context.Context, r *sfldpb.CloneRequest) (*sfldpb.CloneReply, error) {
	t, clones, timing, err := s.svc.Clone(ctx, r.Vm, int(r.N))
	if err != nil {
		return nil, err
	}
	out := &sfldpb.CloneReply{Ticket: t.ID, Family: t.Family, Granted: int32(t.Granted), Timing: timingpb(timing)}
	for _, c := range clones {
		out.Clones = append(out.Clones, vmpb(c))
	}
	return out, nil
}

func (s *Server) Checkpoint(ctx context.Context, r *sfldpb.CheckpointRequest) (*sfldpb.CheckpointReply, error) {
	cp, err := s.svc.Checkpoint(ctx, r.Vm)
	if err != nil {
		return nil, err
	}
	return &sfldpb.CheckpointReply{Checkpoint: cp.ID, Timing: &sfldpb.Timing{
		DescriptorMs: cp.DescMS, DescriptorBytes: cp.DescBytes,
		PauseMs: ms(cp.Checkpoint.Paused), CheckpointMs: ms(cp.Checkpoint.Took),
	}}, nil
}

func (s *Server) CreateClones(ctx context.Context, r *sfldpb.CreateClonesRequest) (*sfldpb.CloneReply, error) {
	owner, err := s.svc.CheckpointOwner(r.Checkpoint)
	if err != nil {
		return nil, err
	}
	t, err := s.svc.RequestTicket(ctx, owner, int(r.N))
	if err != nil {
		return nil, err
	}
	clones, timing, err := s.svc.CreateClones(ctx, r.Checkpoint, t.ID, "")
	if err != nil {
		s.svc.Release(context.WithoutCancel(ctx), t.ID, "")
		return nil, err
	}
	out := &sfldpb.CloneReply{Ticket: t.ID, Granted: int32(len(clones) + 1), Timing: timingpb(timing), Checkpoint: r.Checkpoint}
	for _, c := range clones {
		out.Clones = append(out.Clones, vmpb(c))
		out.Family = c.Family
	}
	return out, nil
}

func (s *Server) Kill(ctx context.Context, r *sfldpb.KillRequest) (*sfldpb.KillReply, error) {
	n, err := s.svc.Kill(ctx, r.Ticket, "")
	return &sfldpb.KillReply{Killed: int32(n)}, err
}

func (s *Server) ListTickets(ctx context.Context, _ *sfldpb.ListTicketsRequest) (*sfldpb.ListTicketsReply, error) {
	out := &sfldpb.ListTicketsReply{}
	for _, t := range s.svc.ListTickets() {
		out.Tickets = append(out.Tickets, &sfldpb.Ticket{
			Id: t.ID, Owner: t.Owner, Allocation: t.Allocation, Granted: int32(t.Granted),
			State: t.State, Clones: t.Clones, Family: t.Family, Exited: int32(len(t.Exits)),
			MemoryBytesSent: int64(t.MemoryBytesSent),
		})
	}
	return out, nil
}

func vmpb(r clonesvc.VMRecord) *sfldpb.VM {
	return &sfldpb.VM{
		Id: r.ID, Name: r.Name, Hostname: r.Hostname, State: r.State, Role: r.Role, Parent: r.Parent,
		Ticket: r.Ticket, CloneId: int32(r.CloneID), Family: r.Family, Console: consolePath(r),
		CreatedUnixMs: r.Created.UnixMilli(), Cpus: int32(r.Spec.CPUs), MemoryMib: int32(r.Spec.MemoryMiB), StartMs: r.StartMS,
		FetchedBytes: int64(r.FetchedBytes),
	}
}

func consolePath(r clonesvc.VMRecord) string { return r.Console }

func timingpb(t *guestproto.Timing) *sfldpb.Timing {
	if t == nil {
		return nil
	}
	return &sfldpb.Timing{
		DescriptorMs: t.DescriptorMS, DescriptorBytes: t.DescriptorBytes, PauseMs: t.PauseMS,
		CheckpointMs: t.CheckpointMS, CloneStartMs: t.CloneStartMS, TotalMs: t.TotalMS,
	}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// StartClones starts clones of another host's family here.
func (s *Server) StartClones(ctx context.Context, r *sfldpb.StartClonesRequest) (*sfldpb.CloneReply, error) {
	req := clonesvc.RemoteClones{
		Ticket: r.Ticket, ParentHost: r.ParentHost, ParentVM: r.ParentVm, Family: r.Family, Descriptor: r.Descriptor_,
		Memory: clonesvc.MemoryEndpoint{Server: r.MemoryServer, Group: r.MemoryGroup},
		CPUs:   int(r.Cpus), MemoryMiB: int(r.MemoryMib),
	}
	for _, c := range r.Clones {
		rc := clonesvc.RemoteClone{CloneID: int(c.CloneId), Hostname: c.Hostname}
		if len(c.Resume) > 0 {
			var m guestproto.Message
			if err := json.Unmarshal(c.Resume, &m); err != nil {
				return nil, fmt.Errorf("clone %d: resume message: %v: %w", c.CloneId, err, clonesvc.ErrInvalidArgument)
			}
			if m.Op == guestproto.OpIdentity {
				rc.Identity = m.Identity
			} else {
				rc.Resume = &m
			}
		}
		req.Clones = append(req.Clones, rc)
	}
	recs, err := s.svc.AcceptClones(ctx, req)
	if err != nil {
		return nil, err
	}
	out := &sfldpb.CloneReply{Ticket: r.Ticket, Family: r.Family}
	for _, v := range recs {
		out.Clones = append(out.Clones, vmpb(v))
	}
	return out, nil
}

// KillClones stops this host's clones of a ticket of another host.
func (s *Server) KillClones(ctx context.Context, r *sfldpb.KillClonesRequest) (*sfldpb.KillReply, error) {
	return &sfldpb.KillReply{Killed: int32(s.svc.KillTicketClones(ctx, r.Ticket))}, nil
}

// CloneEnded records the end of this host's ticket's clone on another host.
func (s *Server) CloneEnded(ctx context.Context, r *sfldpb.CloneEndedRequest) (*sfldpb.CloneEndedReply, error) {
	exit := clonesvc.Exit{CloneID: int(r.CloneId), Result: r.Result, Killed: r.Killed, Reason: r.Reason}
	return &sfldpb.CloneEndedReply{}, s.svc.RemoteCloneEnded(r.Ticket, r.Vm, exit)
}
