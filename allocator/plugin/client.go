package plugin

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	goplugin "github.com/hashicorp/go-plugin"

	"github.com/snowflock/snowflock/allocator"
	pb "github.com/snowflock/snowflock/allocator/plugin/proto"
)

// Options tune Launch. The zero value is ready to use.
type Options struct {
	// Logger receives go-plugin's messages and the plugin's log lines;
	// nil discards them.
	Logger hclog.Logger
	// StartTimeout bounds the plugin's start-up and handshake (default 10 s).
	StartTimeout time.Duration
	// CallTimeout bounds each call other than Request and Events whose
	// context has no deadline (default 60 s): a plugin that does not
	// answer in time is taken as hung and stopped.
	CallTimeout time.Duration
	// AbandonTimeout bounds the Abandon sent after a Request the host gave
	// up on (default 10 s).
	AbandonTimeout time.Duration
	// Versions are the protocol versions offered (default APIVersions).
	Versions []int
}

func (o Options) withDefaults() Options {
	if o.Logger == nil {
		o.Logger = hclog.NewNullLogger()
	}
	if o.StartTimeout <= 0 {
		o.StartTimeout = 10 * time.Second
	}
	if o.CallTimeout <= 0 {
		o.CallTimeout = 60 * time.Second
	}
	if o.AbandonTimeout <= 0 {
		o.AbandonTimeout = 10 * time.Second
	}
	if len(o.Versions) == 0 {
		o.Versions = APIVersions
	}
	return o
}

// Client is the host's proxy for one plugin process: an allocator.Allocator
// whose calls run in the plugin. It restarts a plugin that died on the next
// call. Launch returns it; callers see only allocator.Allocator (and
// allocator.HostReporter when the backend has it).
type Client struct {
	name, path string
	config     []byte
	stateDir   string
	abandoned  tokenDir
	opts       Options

	mu   sync.Mutex // guards the fields below
	pc   *goplugin.Client
	api  pb.AllocatorClient
	info Info
	caps []string
	pid  int
}

var _ allocator.Allocator = (*Client)(nil)

// hostsClient is a Client whose backend reports hosts.
type hostsClient struct{ *Client }

var _ allocator.HostReporter = hostsClient{}

// Launch starts plugin binary path as backend name, configures it with its
// configuration section and state directory (stateDir/NAME; the host keeps
// its record of abandoned requests in stateDir/NAME.abandoned), and returns
// the proxy. The binary must be found with Find or Discover first.
func Launch(ctx context.Context, name, path string, section map[string]any, stateDir string, opts Options) (allocator.Allocator, error) {
	if err := checkBinary(path); err != nil {
		return nil, fmt.Errorf("allocator plugin %s: %w", path, err)
	}
	cfg := []byte("{}")
	if section != nil {
		b, err := json.Marshal(section)
		if err != nil {
			return nil, fmt.Errorf("allocator.%s: %v: %w", name, err, allocator.ErrInvalidArgument)
		}
		cfg = b
	}
	if !filepath.IsAbs(stateDir) {
		abs, err := filepath.Abs(stateDir)
		if err != nil {
			return nil, fmt.Errorf("state_dir %q: %v: %w", stateDir, err, allocator.ErrInvalidArgument)
		}
		stateDir = abs
	}
	c := &Client{
		name: name, path: path, config: cfg,
		stateDir:  filepath.Join(stateDir, name),
		abandoned: tokenDir{dir: filepath.Join(stateDir, name+".abandoned")},
		opts:      opts.withDefaults(),
	}
	if _, err := c.ensure(ctx); err != nil {
		return nil, err
	}
	if slices.Contains(c.caps, CapabilityHosts) {
		return hostsClient{c}, nil
	}
	return c, nil
}

// PluginInfo returns what the plugin said of itself.
func (c *Client) PluginInfo() Info {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.info
}

// PID returns the plugin process's ID (0 when none runs).
func (c *Client) PID() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pc == nil || c.pc.Exited() {
		return 0
	}
	return c.pid
}

// Info names the backend, as the plugin describes it.
func (c *Client) Info() allocator.Info {
	c.mu.Lock()
	defer c.mu.Unlock()
	return allocator.Info{Name: c.name, Description: c.info.Description}
}

// describe names the plugin in errors.
func (c *Client) describe() string {
	if c.pid != 0 {
		return fmt.Sprintf("allocator plugin %s (%s, pid %d)", c.name, c.path, c.pid)
	}
	return fmt.Sprintf("allocator plugin %s (%s)", c.name, c.path)
}

// ensure returns the API of a running, opened plugin, starting one if none
// runs (first use, or the last one died).
func (c *Client) ensure(ctx context.Context) (pb.AllocatorClient, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pc != nil && !c.pc.Exited() {
		return c.api, nil
	}
	if c.pc != nil {
		c.pc.Kill()
		c.pc = nil
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("%s: not started: %w", c.describe(), allocator.ErrTimeout)
	}
	pc, api, info, pid, err := start(ctx, c.name, c.path, c.opts)
	if err != nil {
		return nil, err
	}
	c.pid = pid
	fail := func(what string, err error) (pb.AllocatorClient, error) {
		pc.Kill()
		return nil, fmt.Errorf("%s: %s: %w", c.describe(), what, err)
	}
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.opts.CallTimeout)
	defer cancel()
	toks, err := c.abandoned.list()
	if err != nil {
		c.opts.Logger.Warn("reading abandoned requests", "error", err)
	}
	open, err := api.Open(cctx, &pb.OpenRequest{ConfigJson: c.config, StateDir: c.stateDir, AbandonedTokens: toks})
	if err != nil {
		return fail("opening the backend", FromStatus(err))
	}
	for _, tok := range open.GetSettledTokens() {
		if err := c.abandoned.remove(tok); err != nil {
			c.opts.Logger.Warn("forgetting a settled request", "token", tok, "error", err)
		}
	}
	c.pc, c.api, c.info, c.caps = pc, api, info, open.GetCapabilities()
	return api, nil
}

// start starts plugin binary path, which must serve backend name, and asks
// its PluginInfo.
func start(ctx context.Context, name, path string, opts Options) (*goplugin.Client, pb.AllocatorClient, Info, int, error) {
	pc := goplugin.NewClient(&goplugin.ClientConfig{
		HandshakeConfig:  Handshake,
		VersionedPlugins: pluginSets(nil, opts.Versions),
		Cmd:              exec.Command(path),
		AllowedProtocols: []goplugin.Protocol{goplugin.ProtocolGRPC},
		AutoMTLS:         true,
		Logger:           opts.Logger.Named(name),
		StartTimeout:     opts.StartTimeout,
		SyncStdout:       io.Discard,
		SyncStderr:       io.Discard,
	})
	pid := 0
	fail := func(what string, err error) (*goplugin.Client, pb.AllocatorClient, Info, int, error) {
		pc.Kill()
		desc := fmt.Sprintf("allocator plugin %s (%s)", name, path)
		if pid != 0 {
			desc = fmt.Sprintf("allocator plugin %s (%s, pid %d)", name, path, pid)
		}
		return nil, nil, Info{}, 0, fmt.Errorf("%s: %s: %w", desc, what, err)
	}
	rpc, err := pc.Client()
	if err != nil {
		return fail("start", fmt.Errorf("%s: %w", oneLine(err.Error()), allocator.ErrBackendDown))
	}
	if id, err := strconv.Atoi(pc.ID()); err == nil {
		pid = id
	}
	raw, err := rpc.Dispense(pluginKey)
	if err != nil {
		return fail("dispense", fmt.Errorf("%v: %w", err, allocator.ErrBackendDown))
	}
	api, ok := raw.(pb.AllocatorClient)
	if !ok {
		return fail("dispense", fmt.Errorf("unexpected client type %T: %w", raw, allocator.ErrBackendDown))
	}
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), opts.CallTimeout)
	defer cancel()
	pi, err := api.PluginInfo(cctx, &pb.PluginInfoRequest{})
	if err != nil {
		return fail("PluginInfo", FromStatus(err))
	}
	if pi.GetName() != name {
		return fail("PluginInfo", fmt.Errorf("the binary serves backend %q, not %q: %w", pi.GetName(), name, allocator.ErrBackendDown))
	}
	info := Info{Name: pi.GetName(), Description: pi.GetDescription(), Version: pi.GetVersion()}
	for _, v := range pi.GetApiVersions() {
		info.APIVersions = append(info.APIVersions, int(v))
	}
	return pc, api, info, pid, nil
}

// Probe starts plugin binary path, which must serve backend name, asks what
// it is, and stops it.
func Probe(ctx context.Context, name, path string, opts Options) (Info, error) {
	if err := checkBinary(path); err != nil {
		return Info{}, fmt.Errorf("allocator plugin %s: %w", path, err)
	}
	pc, _, info, _, err := start(ctx, name, path, opts.withDefaults())
	if err != nil {
		return Info{}, err
	}
	pc.Kill()
	return info, nil
}

// exited waits a little for the plugin process to be seen gone, and says
// whether it is.
func (c *Client) exited() bool {
	c.mu.Lock()
	pc := c.pc
	c.mu.Unlock()
	if pc == nil {
		return true
	}
	for range 20 {
		if pc.Exited() {
			return true
		}
		time.Sleep(10 * time.Millisecond)
	}
	return false
}

// kill stops the plugin process (hung, or after Close).
func (c *Client) kill() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pc != nil {
		c.pc.Kill()
		c.pc = nil
	}
}

// fault turns the error of a failed call into the error returned: the
// plugin's own error, or one that says the plugin died or hung.
func (c *Client) fault(what string, err error, hung bool) error {
	switch {
	case hung:
		desc := c.describe()
		c.kill()
		return fmt.Errorf("%s: %s: no answer within %s; plugin stopped: %w", desc, what, c.opts.CallTimeout, allocator.ErrBackendDown)
	case c.exited():
		return fmt.Errorf("%s: exited during %s: %w", c.describe(), what, allocator.ErrBackendDown)
	}
	return FromStatus(err)
}

// call runs one unary call, bounded by CallTimeout when ctx has no deadline.
func call[T any](c *Client, ctx context.Context, what string, fn func(context.Context, pb.AllocatorClient) (T, error)) (T, error) {
	var zero T
	api, err := c.ensure(ctx)
	if err != nil {
		return zero, err
	}
	cctx, own := ctx, false
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		cctx, cancel = context.WithTimeout(ctx, c.opts.CallTimeout)
		defer cancel()
		own = true
	}
	v, err := fn(cctx, api)
	if err != nil {
		return zero, c.fault(what, err, own && ctx.Err() == nil && nearDeadline(cctx))
	}
	return v, nil
}

func newToken() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Request asks the plugin for slots. If the request's context ends first,
// the plugin is told to abandon it (and releases anything granted); if the
// plugin dies or cannot be told, the request is recorded and settled when
// the plugin next starts.
func (c *Client) Request(ctx context.Context, req allocator.Request) (*allocator.Allocation, error) {
	api, err := c.ensure(ctx)
	if err != nil {
		return nil, err
	}
	tok := newToken()
	a, err := api.Request(ctx, requestToPB(req, tok))
	if err == nil {
		return allocationFromPB(a), nil
	}
	if ctx.Err() != nil || nearDeadline(ctx) {
		c.abandon(api, tok)
		e := FromStatus(err)
		if !errors.Is(e, allocator.ErrTimeout) && !errors.Is(ctx.Err(), context.Canceled) {
			e = fmt.Errorf("request: deadline passed: %w", allocator.ErrTimeout)
		}
		return nil, e
	}
	if c.exited() {
		c.record(tok)
		// Start it again now, so the grant (if any) is settled at once.
		_, rerr := c.ensure(context.WithoutCancel(ctx))
		note := "whatever it granted is released"
		if rerr != nil {
			note = "whatever it granted will be released when it next starts"
		}
		return nil, fmt.Errorf("%s: exited during Request; %s: %w", c.describe(), note, allocator.ErrBackendDown)
	}
	return nil, FromStatus(err)
}

// nearDeadline says whether ctx's deadline is reached or all but reached
// (the plugin's side, which gets the deadline with the call, may give up a
// moment before ours).
func nearDeadline(ctx context.Context) bool {
	dl, ok := ctx.Deadline()
	return ok && time.Until(dl) < 100*time.Millisecond
}

// abandon tells the plugin to drop request tok, or records it.
func (c *Client) abandon(api pb.AllocatorClient, tok string) {
	actx, cancel := context.WithTimeout(context.Background(), c.opts.AbandonTimeout)
	defer cancel()
	if _, err := api.Abandon(actx, &pb.AbandonRequest{Token: tok}); err != nil {
		c.opts.Logger.Warn("plugin did not abandon the request; stopping it and recording the request for release", "plugin", c.name, "error", err)
		c.record(tok)
		c.kill()
	}
}

// record keeps request tok for the next Open.
func (c *Client) record(tok string) {
	if err := c.abandoned.put(tok, time.Now().UTC().Format(time.RFC3339)); err != nil {
		c.opts.Logger.Error("recording an abandoned request failed: its slots may stay held", "plugin", c.name, "token", tok, "error", err)
	}
}

// Release gives back slots.
func (c *Client) Release(ctx context.Context, id string, slots []allocator.Slot) (*allocator.Allocation, error) {
	r, err := call(c, ctx, "Release", func(ctx context.Context, api pb.AllocatorClient) (*pb.ReleaseResponse, error) {
		return api.Release(ctx, &pb.ReleaseRequest{Id: id, Slots: slotsToPB(slots)})
	})
	if err != nil {
		return nil, err
	}
	return allocationFromPB(r.GetRemaining()), nil
}

// Renew extends a lease.
func (c *Client) Renew(ctx context.Context, id string, lease time.Duration) (*allocator.Allocation, error) {
	a, err := call(c, ctx, "Renew", func(ctx context.Context, api pb.AllocatorClient) (*pb.Allocation, error) {
		return api.Renew(ctx, &pb.RenewRequest{Id: id, LeaseNanos: int64(lease)})
	})
	return allocationFromPB(a), err
}

// Get returns one allocation.
func (c *Client) Get(ctx context.Context, id string) (*allocator.Allocation, error) {
	a, err := call(c, ctx, "Get", func(ctx context.Context, api pb.AllocatorClient) (*pb.Allocation, error) {
		return api.Get(ctx, &pb.GetRequest{Id: id})
	})
	return allocationFromPB(a), err
}

// List returns every allocation.
func (c *Client) List(ctx context.Context) ([]allocator.Allocation, error) {
	r, err := call(c, ctx, "List", func(ctx context.Context, api pb.AllocatorClient) (*pb.ListResponse, error) {
		return api.List(ctx, &pb.ListRequest{})
	})
	if err != nil {
		return nil, err
	}
	out := make([]allocator.Allocation, 0, len(r.GetAllocations()))
	for _, a := range r.GetAllocations() {
		out = append(out, *allocationFromPB(a))
	}
	return out, nil
}

// Events streams the plugin's events until ctx ends (or the plugin dies).
func (c *Client) Events(ctx context.Context) (<-chan allocator.Event, error) {
	api, err := c.ensure(ctx)
	if err != nil {
		return nil, err
	}
	stream, err := api.Events(ctx, &pb.EventsRequest{})
	if err != nil {
		return nil, c.fault("Events", err, false)
	}
	ch := make(chan allocator.Event)
	go func() {
		defer close(ch)
		for {
			ev, err := stream.Recv()
			if err != nil {
				if ctx.Err() == nil && !errors.Is(err, io.EOF) {
					c.opts.Logger.Error("event stream ended", "plugin", c.name, "error", c.fault("Events", err, false))
				}
				return
			}
			select {
			case ch <- eventFromPB(ev):
			case <-ctx.Done():
				return
			}
		}
	}()
	return ch, nil
}

// Hosts reports every host's slots.
func (h hostsClient) Hosts(ctx context.Context) ([]allocator.HostUsage, error) {
	r, err := call(h.Client, ctx, "Hosts", func(ctx context.Context, api pb.AllocatorClient) (*pb.HostsResponse, error) {
		return api.Hosts(ctx, &pb.HostsRequest{})
	})
	if err != nil {
		return nil, err
	}
	var out []allocator.HostUsage
	for _, u := range r.GetHosts() {
		out = append(out, allocator.HostUsage{Host: u.GetHost(), Address: u.GetAddress(), Slots: int(u.GetSlots()), Held: int(u.GetHeld()), Exclusive: u.GetExclusive()})
	}
	return out, nil
}

// Close stops the plugin process; allocations stay.
func (c *Client) Close() error {
	c.kill()
	return nil
}

// oneLine joins a multi-line message (go-plugin's) into one line.
func oneLine(s string) string {
	out := make([]byte, 0, len(s))
	space := false
	for i := 0; i < len(s); i++ {
		switch ch := s[i]; ch {
		case '\n', '\r', '\t', ' ':
			space = true
		default:
			if space && len(out) > 0 {
				out = append(out, ' ')
			}
			space = false
			out = append(out, ch)
		}
	}
	return string(out)
}
