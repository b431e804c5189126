package plugin

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	goplugin "github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/snowflock/snowflock/allocator"
	pb "github.com/snowflock/snowflock/allocator/plugin/proto"
)

// Opener opens the backend inside the plugin process from its
// configuration section (a JSON object, empty when there is none) and its
// private state directory.
type Opener func(ctx context.Context, configJSON []byte, stateDir string) (allocator.Allocator, error)

// journalAge is how long a grant stays in the journal: long enough for any
// host to come back and abandon it.
const journalAge = 7 * 24 * time.Hour

// Server answers the plugin protocol for one backend inside a plugin
// process. Plugin authors use allocator/plugin/sdk, which builds one.
type Server struct {
	pb.UnimplementedAllocatorServer
	info Info
	open Opener

	mu       sync.Mutex // guards the fields below
	impl     allocator.Allocator
	journal  tokenDir
	inflight map[string]*inflight
}

// inflight is a Request being served.
type inflight struct {
	cancel context.CancelFunc
	done   chan struct{}
}

var _ pb.AllocatorServer = (*Server)(nil)

// NewServer returns a server for the backend that open opens. info.APIVersions
// is filled in by Serve.
func NewServer(info Info, open Opener) *Server {
	return &Server{info: info, open: open, inflight: map[string]*inflight{}}
}

// PluginInfo names the plugin.
func (s *Server) PluginInfo(context.Context, *pb.PluginInfoRequest) (*pb.PluginInfoResponse, error) {
	r := &pb.PluginInfoResponse{Name: s.info.Name, Description: s.info.Description, Version: s.info.Version}
	for _, v := range s.info.APIVersions {
		r.ApiVersions = append(r.ApiVersions, int32(v))
	}
	return r, nil
}

// Open opens the backend, then settles the requests the host abandoned.
func (s *Server) Open(ctx context.Context, r *pb.OpenRequest) (*pb.OpenResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.impl != nil {
		return nil, status.Error(codes.FailedPrecondition, "backend already opened")
	}
	if r.GetStateDir() == "" || !filepath.IsAbs(r.GetStateDir()) {
		return nil, ToStatus(fmt.Errorf("state directory %q is not an absolute path: %w", r.GetStateDir(), allocator.ErrInvalidArgument))
	}
	if err := os.MkdirAll(r.GetStateDir(), 0o700); err != nil {
		return nil, ToStatus(fmt.Errorf("creating state directory: %v: %w", err, allocator.ErrBackendDown))
	}
	impl, err := s.open(ctx, r.GetConfigJson(), r.GetStateDir())
	if err != nil {
		return nil, ToStatus(err)
	}
	s.impl = impl
	s.journal = tokenDir{dir: filepath.Join(r.GetStateDir(), "plugin-grants")}
	s.journal.prune(journalAge)
	resp := &pb.OpenResponse{}
	for _, tok := range r.GetAbandonedTokens() {
		if err := s.settle(ctx, tok); err != nil {
			hclog.Default().Warn("abandoned request not settled", "token", tok, "error", err)
			continue
		}
		resp.SettledTokens = append(resp.SettledTokens, tok)
	}
	if _, ok := impl.(allocator.HostReporter); ok {
		resp.Capabilities = append(resp.Capabilities, CapabilityHosts)
	}
	return resp, nil
}

// backend returns the opened backend.
func (s *Server) backend() (allocator.Allocator, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.impl == nil {
		return nil, status.Error(codes.FailedPrecondition, "backend not opened: the host must call Open first")
	}
	return s.impl, nil
}

// settle releases what the request named tok was granted, if anything.
// Preconditions: s.impl is set.
func (s *Server) settle(ctx context.Context, tok string) error {
	id, ok, err := s.journal.get(tok)
	if err != nil || !ok {
		return err
	}
	if _, err := s.impl.Release(ctx, id, nil); err != nil && !errors.Is(err, allocator.ErrUnknownAllocation) {
		return fmt.Errorf("releasing %s: %w", id, err)
	}
	return s.journal.remove(tok)
}

// Request grants slots, journalling the grant under the request's token
// before answering.
func (s *Server) Request(ctx context.Context, r *pb.RequestRequest) (*pb.Allocation, error) {
	impl, err := s.backend()
	if err != nil {
		return nil, err
	}
	tok := r.GetToken()
	if tok != "" {
		if err := validToken(tok); err != nil {
			return nil, ToStatus(fmt.Errorf("%v: %w", err, allocator.ErrInvalidArgument))
		}
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	fl := &inflight{cancel: cancel, done: make(chan struct{})}
	defer close(fl.done)
	if tok != "" {
		s.mu.Lock()
		s.inflight[tok] = fl
		s.mu.Unlock()
		defer func() {
			s.mu.Lock()
			delete(s.inflight, tok)
			s.mu.Unlock()
		}()
	}
	a, err := impl.Request(ctx, requestFromPB(r))
	if err != nil {
		return nil, ToStatus(err)
	}
	if tok != "" {
		if err := s.journal.put(tok, a.ID); err != nil {
			// Without the journal a lost answer could not be settled:
			// refuse the grant rather than risk holding it forever.
			_, _ = impl.Release(context.WithoutCancel(ctx), a.ID, nil)
			return nil, ToStatus(fmt.Errorf("journalling grant %s: %v: %w", a.ID, err, allocator.ErrBackendDown))
		}
	}
	return s.out(a), nil
}

// out converts an allocation for the host. Its backend is the plugin's
// name, whatever backend the plugin delegates to.
func (s *Server) out(a *allocator.Allocation) *pb.Allocation {
	p := allocationToPB(a)
	if p != nil {
		p.Backend = s.info.Name
	}
	return p
}

// Abandon stops the request named by the token, waits for it to end and
// releases what it was granted.
func (s *Server) Abandon(ctx context.Context, r *pb.AbandonRequest) (*pb.AbandonResponse, error) {
	if _, err := s.backend(); err != nil {
		return nil, err
	}
	tok := r.GetToken()
	if err := validToken(tok); err != nil {
		return nil, ToStatus(fmt.Errorf("%v: %w", err, allocator.ErrInvalidArgument))
	}
	s.mu.Lock()
	fl := s.inflight[tok]
	s.mu.Unlock()
	if fl != nil {
		fl.cancel()
		select {
		case <-fl.done:
		case <-ctx.Done():
			return nil, ToStatus(fmt.Errorf("request %s did not stop: %w", tok, allocator.ErrTimeout))
		}
	}
	if err := s.settle(ctx, tok); err != nil {
		return nil, ToStatus(err)
	}
	return &pb.AbandonResponse{}, nil
}

// Release gives back slots.
func (s *Server) Release(ctx context.Context, r *pb.ReleaseRequest) (*pb.ReleaseResponse, error) {
	impl, err := s.backend()
	if err != nil {
		return nil, err
	}
	left, err := impl.Release(ctx, r.GetId(), slotsFromPB(r.GetSlots()))
	if err != nil {
		return nil, ToStatus(err)
	}
	return &pb.ReleaseResponse{Remaining: s.out(left)}, nil
}

// Renew extends a lease.
func (s *Server) Renew(ctx context.Context, r *pb.RenewRequest) (*pb.Allocation, error) {
	impl, err := s.backend()
	if err != nil {
		return nil, err
	}
	a, err := impl.Renew(ctx, r.GetId(), time.Duration(r.GetLeaseNanos()))
	if err != nil {
		return nil, ToStatus(err)
	}
	return s.out(a), nil
}

// Get returns one allocation.
func (s *Server) Get(ctx context.Context, r *pb.GetRequest) (*pb.Allocation, error) {
	impl, err := s.backend()
	if err != nil {
		return nil, err
	}
	a, err := impl.Get(ctx, r.GetId())
	if err != nil {
		return nil, ToStatus(err)
	}
	return s.out(a), nil
}

// List returns every allocation.
func (s *Server) List(ctx context.Context, _ *pb.ListRequest) (*pb.ListResponse, error) {
	impl, err := s.backend()
	if err != nil {
		return nil, err
	}
	as, err := impl.List(ctx)
	if err != nil {
		return nil, ToStatus(err)
	}
	resp := &pb.ListResponse{}
	for i := range as {
		resp.Allocations = append(resp.Allocations, s.out(&as[i]))
	}
	return resp, nil
}

// Events streams the backend's events until the host cancels.
func (s *Server) Events(_ *pb.EventsRequest, stream grpc.ServerStreamingServer[pb.Event]) error {
	impl, err := s.backend()
	if err != nil {
		return err
	}
	ch, err := impl.Events(stream.Context())
	if err != nil {
		return ToStatus(err)
	}
	for ev := range ch {
		if err := stream.Send(eventToPB(ev)); err != nil {
			return err
		}
	}
	return nil
}

// Hosts reports every host's slots, for backends that can.
func (s *Server) Hosts(ctx context.Context, _ *pb.HostsRequest) (*pb.HostsResponse, error) {
	impl, err := s.backend()
	if err != nil {
		return nil, err
	}
	hr, ok := impl.(allocator.HostReporter)
	if !ok {
		return nil, status.Error(codes.Unimplemented, s.info.Name+" cannot report hosts")
	}
	hosts, err := hr.Hosts(ctx)
	if err != nil {
		return nil, ToStatus(err)
	}
	resp := &pb.HostsResponse{}
	for _, h := range hosts {
		resp.Hosts = append(resp.Hosts, &pb.HostUsage{Host: h.Host, Address: h.Address, Slots: int64(h.Slots), Held: int64(h.Held), Exclusive: h.Exclusive})
	}
	return resp, nil
}

// close closes the backend when the plugin stops.
func (s *Server) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.impl != nil {
		_ = s.impl.Close()
		s.impl = nil
	}
}

// grpcPlugin is the go-plugin glue: it registers the server in the plugin
// process and makes the gRPC client on the host.
type grpcPlugin struct {
	goplugin.NetRPCUnsupportedPlugin
	server *Server
}

func (p *grpcPlugin) GRPCServer(_ *goplugin.GRPCBroker, s *grpc.Server) error {
	pb.RegisterAllocatorServer(s, p.server)
	return nil
}

func (p *grpcPlugin) GRPCClient(_ context.Context, _ *goplugin.GRPCBroker, c *grpc.ClientConn) (any, error) {
	return pb.NewAllocatorClient(c), nil
}

// pluginSets offers the allocator at each of the given protocol versions.
func pluginSets(s *Server, versions []int) map[int]goplugin.PluginSet {
	sets := map[int]goplugin.PluginSet{}
	for _, v := range versions {
		sets[v] = goplugin.PluginSet{pluginKey: &grpcPlugin{server: s}}
	}
	return sets
}

// Serve serves s over go-plugin at every API version this build speaks,
// until the host stops the plugin, then closes the backend. A binary
// started by hand, not by a host, prints a note and exits.
func Serve(s *Server) { ServeVersions(s, APIVersions...) }

// ServeVersions is Serve at the given protocol versions only; tests use it
// to play a plugin of another version.
func ServeVersions(s *Server, versions ...int) {
	s.info.APIVersions = versions
	goplugin.Serve(&goplugin.ServeConfig{
		HandshakeConfig:  Handshake,
		VersionedPlugins: pluginSets(s, versions),
		GRPCServer:       goplugin.DefaultGRPCServer,
	})
	s.close()
}
