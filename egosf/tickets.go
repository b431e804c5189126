// Package egosf is the library applications use to get clone slots: tickets
// (slot allocations) requested, listed, renewed and released through the
// configured allocator backend.
package egosf

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/snowflock/snowflock/allocator"
	"github.com/snowflock/snowflock/allocator/builtin"
	"github.com/snowflock/snowflock/allocator/loader"
	"github.com/snowflock/snowflock/egosf/config"
)

// Ticket is a grant of clone slots.
type Ticket struct {
	allocator.Allocation
}

// HostsString is the ticket's slots as "host:count,host:count" (SF_HOSTS).
func (t *Ticket) HostsString() string { return allocator.FormatSlots(t.Slots) }

// Hostfile is the ticket as an MPI hostfile in Open MPI's form: one
// "host slots=N" line per host.
func (t *Ticket) Hostfile() string {
	var b strings.Builder
	for _, s := range t.Slots {
		fmt.Fprintf(&b, "%s slots=%d\n", s.Host, s.Count)
	}
	return b.String()
}

// Env is the environment describing the ticket to a program:
// SF_ALLOC_ID, SF_NSLOTS, SF_HOSTS and, when hostfile is not empty,
// SF_HOSTFILE.
func (t *Ticket) Env(hostfile string) []string {
	env := []string{
		"SF_ALLOC_ID=" + t.ID,
		fmt.Sprintf("SF_NSLOTS=%d", t.Granted),
		"SF_HOSTS=" + t.HostsString(),
	}
	if hostfile != "" {
		env = append(env, "SF_HOSTFILE="+hostfile)
	}
	return env
}

// LoadConfig loads the configuration (see package config for the search
// order), letting SNOWFLOCK_* variables override every built-in backend's
// keys (a plugin applies those of its own keys itself), and checks that
// every section names a backend, built in or a plugin on the plugin path,
// and the selected backend's section when it is built in.
func LoadConfig(o config.Options) (*config.Config, error) {
	o.EnvKeys = append(o.EnvKeys, builtin.EnvKeys()...)
	cfg, err := config.Load(o)
	if err != nil {
		return nil, fmt.Errorf("%v: %w", err, allocator.ErrInvalidArgument)
	}
	for name := range cfg.Allocator.Sections {
		if !loader.Exists(name, cfg.Allocator.PluginPath) {
			return nil, fmt.Errorf("config %s: allocator.%s: no allocator backend of that name (built in: %s; no plugin on the plugin path): %w",
				cfg.Source, name, strings.Join(builtin.Names(), ", "), allocator.ErrInvalidArgument)
		}
	}
	if err := loader.Check(cfg.Allocator.Backend, backendEnv(cfg)); err != nil {
		return nil, fmt.Errorf("config %s: %w", cfg.Source, err)
	}
	return cfg, nil
}

func backendEnv(cfg *config.Config) loader.Env {
	return loader.Env{StateDir: cfg.StateDir, Section: cfg.Allocator.Section(cfg.Allocator.Backend), PluginPath: cfg.Allocator.PluginPath}
}

// Option changes how Open opens the backend.
type Option func(*loader.Env)

// WithPluginLogger sends the logs of a plugin backend's process to l.
func WithPluginLogger(l hclog.Logger) Option { return func(e *loader.Env) { e.Logger = l } }

// Client requests and manages tickets through one allocator backend.
type Client struct {
	cfg   *config.Config
	alloc allocator.Allocator
}

// Open opens the allocator backend that cfg selects: built in, or a plugin
// process.
func Open(ctx context.Context, cfg *config.Config, opts ...Option) (*Client, error) {
	env := backendEnv(cfg)
	for _, o := range opts {
		o(&env)
	}
	a, err := loader.Open(ctx, cfg.Allocator.Backend, env)
	if err != nil {
		return nil, err
	}
	return &Client{cfg: cfg, alloc: a}, nil
}

// Config returns the configuration the client was opened with.
func (c *Client) Config() *config.Config { return c.cfg }

// Allocator returns the backend.
func (c *Client) Allocator() allocator.Allocator { return c.alloc }

// Close closes the backend; tickets stay held.
func (c *Client) Close() error { return c.alloc.Close() }

// RequestTicket asks for between req.Min and req.Max slots; the context's
// deadline bounds the wait.
func (c *Client) RequestTicket(ctx context.Context, req allocator.Request) (*Ticket, error) {
	a, err := c.alloc.Request(ctx, req)
	if err != nil {
		return nil, err
	}
	return &Ticket{*a}, nil
}

// Release gives back some slots of a ticket (all when slots is empty) and
// returns what remains, nil when nothing does.
func (c *Client) Release(ctx context.Context, id string, slots ...allocator.Slot) (*Ticket, error) {
	a, err := c.alloc.Release(ctx, id, slots)
	if err != nil || a == nil {
		return nil, err
	}
	return &Ticket{*a}, nil
}

// Renew extends a ticket's lease to lease from now (the backend's default
// when 0).
func (c *Client) Renew(ctx context.Context, id string, lease time.Duration) (*Ticket, error) {
	a, err := c.alloc.Renew(ctx, id, lease)
	if err != nil {
		return nil, err
	}
	return &Ticket{*a}, nil
}

// Get returns one ticket.
func (c *Client) Get(ctx context.Context, id string) (*Ticket, error) {
	a, err := c.alloc.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	return &Ticket{*a}, nil
}

// List returns the tickets held through the backend, oldest first.
func (c *Client) List(ctx context.Context) ([]Ticket, error) {
	as, err := c.alloc.List(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]Ticket, len(as))
	for i, a := range as {
		out[i] = Ticket{a}
	}
	return out, nil
}

// Holder keeps a ticket's lease alive. See Client.Hold.
type Holder struct {
	cancel context.CancelFunc
	done   chan struct{}
	mu     sync.Mutex
	err    error
	lost   chan struct{}
}

// Hold keeps ticket t alive until Stop or ctx ends: it renews the ticket
// after a third of the time left to its expiry (or of lease, if shorter),
// each time asking for lease (0: the backend's default). If the ticket is gone (released elsewhere, expired) or cannot be
// renewed before it expires, Lost is closed and Err says why. A ticket
// without expiry needs no renewal.
func (c *Client) Hold(ctx context.Context, t *Ticket, lease time.Duration) *Holder {
	ctx, cancel := context.WithCancel(ctx)
	h := &Holder{cancel: cancel, done: make(chan struct{}), lost: make(chan struct{})}
	go func() {
		defer close(h.done)
		expires := t.Expires
		if expires.IsZero() {
			<-ctx.Done()
			return
		}
		for {
			wait := time.Until(expires)
			if lease > 0 {
				wait = min(wait, lease)
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(max(wait/3, 10*time.Millisecond)):
			}
			// Try until the lease ends, but at least a few seconds: the
			// ticket may have been extended behind our back (sfalloc renew,
			// a suspended sfalloc run) while expires went stale.
			rctx, rcancel := context.WithTimeout(ctx, max(time.Until(expires), 5*time.Second))
			r, err := c.alloc.Renew(rctx, t.ID, lease)
			rcancel()
			switch {
			case err == nil:
				expires = r.Expires
			case ctx.Err() != nil:
				return
			case errors.Is(err, allocator.ErrUnknownAllocation) || !time.Now().Before(expires):
				h.mu.Lock()
				h.err = fmt.Errorf("ticket %s lost: %w", t.ID, err)
				h.mu.Unlock()
				close(h.lost)
				return
			}
		}
	}()
	return h
}

// Lost is closed when the ticket can no longer be held.
func (h *Holder) Lost() <-chan struct{} { return h.lost }

// Err says why the ticket was lost; nil while it is held.
func (h *Holder) Err() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.err
}

// Stop stops renewing and waits for the renewer to finish. It does not
// release the ticket.
func (h *Holder) Stop() {
	h.cancel()
	<-h.done
}
