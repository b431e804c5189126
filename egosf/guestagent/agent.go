// Package guestagent is the in-guest agent of SnowFlock (sfguest agent): it
// owns the VM's guest channel to sfld, relays the guest API requests of
// programs in the VM (over a unix socket) to sfld and their replies back,
// and answers sfld's own requests (hello, exec, identity).
package guestagent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/snowflock/snowflock/egosf/guestproto"
)

// DefaultRetryDelay is how long the agent waits after reading end-of-file
// on the guest channel (virtio-serial reports EOF while the host side is
// not connected, e.g. while sfld restarts or a clone is being started).
const DefaultRetryDelay = 50 * time.Millisecond

// Config configures an Agent.
type Config struct {
	// Port is the guest channel (the virtio-serial port). EOF on it means
	// "host not connected yet": the agent waits and reads again. Run closes
	// it on return if it is an io.Closer.
	Port io.ReadWriter
	// Listener accepts the programs' connections (unix socket); Run closes
	// it on return.
	Listener net.Listener
	// Version is reported in hello replies ("sfguest <Version>").
	Version string
	// Console receives a copy of exec'd commands' output (/dev/console, so
	// that clones' output lands in their console logs); nil discards.
	Console io.Writer
	// Identity makes the VM take on a clone's identity; nil: SetIdentity
	// (hostname and kernel RNG reseed).
	Identity func(*guestproto.Identity) error
	// RetryDelay is the wait after EOF or a read error on Port (zero:
	// DefaultRetryDelay).
	RetryDelay time.Duration
	// Log receives the agent's log (concise: it goes to the console).
	Log zerolog.Logger
}

// Agent relays guest API requests between programs and sfld. Create it
// with New and start it with Run.
type Agent struct {
	cfg Config

	// wg counts the goroutines Run waits for before returning.
	wg sync.WaitGroup

	// portMu serialises frames written to the port.
	portMu sync.Mutex

	mu       sync.Mutex
	nextID   uint64
	pending  map[uint64]*pendingRequest // by the ID used on the port
	programs map[*program]struct{}
}

// pendingRequest is a program's request forwarded to sfld.
type pendingRequest struct {
	prog   *program
	origID uint64 // the ID the program chose
	op     string
}

// New returns an agent for cfg.
func New(cfg Config) *Agent {
	if cfg.RetryDelay <= 0 {
		cfg.RetryDelay = DefaultRetryDelay
	}
	if cfg.Identity == nil {
		cfg.Identity = SetIdentity
	}
	if cfg.Console == nil {
		cfg.Console = io.Discard
	}
	return &Agent{cfg: cfg, pending: map[uint64]*pendingRequest{}, programs: map[*program]struct{}{}}
}

// Run serves until ctx ends or the port or listener fails for good (closed
// under it). It returns nil when ctx ended.
func (a *Agent) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	a.wg.Go(func() { cancel(a.readPort(ctx)) })
	a.wg.Go(func() { cancel(a.accept(ctx)) })
	<-ctx.Done()
	a.cfg.Listener.Close()
	if c, ok := a.cfg.Port.(io.Closer); ok {
		c.Close()
	}
	a.mu.Lock()
	for p := range a.programs {
		p.conn.Close()
	}
	a.mu.Unlock()
	a.wg.Wait()
	if err := context.Cause(ctx); !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

// readPort reads sfld's frames until ctx ends or the port is closed.
func (a *Agent) readPort(ctx context.Context) error {
	r := guestproto.NewReader(&eofRetryReader{ctx: ctx, r: a.cfg.Port, delay: a.cfg.RetryDelay})
	for {
		m, err := r.Read()
		switch {
		case ctx.Err() != nil:
			return context.Cause(ctx)
		case errors.Is(err, guestproto.ErrFrame):
			a.cfg.Log.Warn().Err(err).Msg("guest channel: skipping to the next frame")
			if err := r.Resync(); err != nil && closed(err) {
				return fmt.Errorf("guest channel: %w", err)
			}
			continue
		case err != nil && closed(err):
			return fmt.Errorf("guest channel: %w", err)
		case err != nil:
			a.cfg.Log.Warn().Err(err).Msg("guest channel read failed; retrying")
			sleep(ctx, a.cfg.RetryDelay)
			continue
		}
		if m.Reply {
			a.deliver(m)
			continue
		}
		a.wg.Go(func() { a.serveHost(ctx, m) })
	}
}

// closed reports whether err means the port or socket was closed under us.
func closed(err error) bool {
	return errors.Is(err, net.ErrClosed) || errors.Is(err, os.ErrClosed) || errors.Is(err, io.ErrClosedPipe)
}

// sleep waits for d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// writePort sends one frame to sfld. It blocks while the host side is not
// connected (virtio-serial holds writes until it is).
func (a *Agent) writePort(m *guestproto.Message) error {
	a.portMu.Lock()
	defer a.portMu.Unlock()
	return guestproto.Write(a.cfg.Port, m)
}

// serveHost answers one of sfld's own requests.
func (a *Agent) serveHost(ctx context.Context, req *guestproto.Message) {
	reply := &guestproto.Message{ID: req.ID, Op: req.Op, Reply: true}
	switch req.Op {
	case guestproto.OpHello:
		reply.Agent = "sfguest " + a.cfg.Version
		reply.Pending = a.pendingIDs()
		a.cfg.Log.Info().Uints64("pending", reply.Pending).Msg("host connected")
	case guestproto.OpExec:
		a.exec(ctx, req, reply)
	case guestproto.OpIdentity:
		if req.Identity == nil {
			reply.Error = guestproto.NewError("invalid_argument", errors.New("identity request without an identity"))
		} else if err := a.takeIdentity(req.Identity); err != nil {
			reply.Error = guestproto.NewError("unavailable", err)
		}
	default:
		reply.Error = guestproto.NewError("invalid_argument", fmt.Errorf("the guest agent does not serve %q", req.Op))
	}
	if err := a.writePort(reply); err != nil {
		a.cfg.Log.Warn().Err(err).Str("op", req.Op).Msg("cannot send reply to host")
	}
}

// pendingIDs lists the port IDs of forwarded requests awaiting a reply.
func (a *Agent) pendingIDs() []uint64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	ids := make([]uint64, 0, len(a.pending))
	for id := range a.pending {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// takeIdentity applies a clone's identity, logging the outcome.
func (a *Agent) takeIdentity(id *guestproto.Identity) error {
	if err := a.cfg.Identity(id); err != nil {
		a.cfg.Log.Error().Err(err).Str("hostname", id.Hostname).Msg("cannot take on the clone's identity")
		return err
	}
	a.cfg.Log.Info().Str("hostname", id.Hostname).Msg("took on the clone's identity (hostname, RNG reseeded)")
	return nil
}
