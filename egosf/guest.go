package egosf

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/snowflock/snowflock/egosf/guestproto"
)

// The guest API: what a program inside a SnowFlock VM calls to clone the VM
// it runs in (sf_request_ticket, sf_clone, sf_join, ...). Requests go to the
// in-guest agent (sfguest agent) over a unix socket, and from it to sfld.

// DefaultGuestSocket is the in-guest agent's socket; GuestSocketEnv names
// the variable that overrides it.
const (
	DefaultGuestSocket = "/run/sfguest.sock"
	GuestSocketEnv     = "SF_GUEST_SOCKET"
)

// ErrNotInGuest: there is no agent to talk to (the program does not run in
// a SnowFlock guest).
var ErrNotInGuest = guestproto.ErrNotInGuest

// GuestSocket returns the agent's socket path: $SF_GUEST_SOCKET, else
// DefaultGuestSocket.
func GuestSocket() string {
	if p := os.Getenv(GuestSocketEnv); p != "" {
		return p
	}
	return DefaultGuestSocket
}

// GuestTicket is a grant of clones from sf_request_ticket.
type GuestTicket struct {
	ID      string `json:"ticket"`
	Granted int    `json:"granted"` // clones granted, m ≤ n
}

// GuestInfo is what sf_whoami says about this VM.
type GuestInfo struct {
	VM      string `json:"vm"`
	Family  string `json:"family,omitempty"`
	CloneID int    `json:"clone_id"`
}

// Guest is a connection to the in-guest agent. It is safe for concurrent
// use; every call blocks until its reply or ctx ends. Errors from sfld are
// *guestproto.Error, which errors.Is-matches its class
// (guestproto.ErrNotFound, allocator.ErrNoneAvailable, ...).
//
// The connection survives sf_clone: each clone continues with its own copy
// of the Guest, connected to its own copy of the agent.
type Guest struct {
	conn net.Conn
	done chan struct{} // closed when the reader stops

	// wmu serialises frames written to conn.
	wmu sync.Mutex

	mu      sync.Mutex
	nextID  uint64
	pending map[uint64]chan *guestproto.Message
	err     error // why the reader stopped
}

// OpenGuest connects to the agent at GuestSocket().
func OpenGuest(ctx context.Context) (*Guest, error) { return OpenGuestAt(ctx, GuestSocket()) }

// OpenGuestAt connects to the agent listening at path.
func OpenGuestAt(ctx context.Context, path string) (*Guest, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ENOTSOCK) {
			return nil, fmt.Errorf("%w (no agent at %s)", ErrNotInGuest, path)
		}
		return nil, fmt.Errorf("connect to the guest agent at %s: %w", path, err)
	}
	g := &Guest{conn: conn, done: make(chan struct{}), pending: map[uint64]chan *guestproto.Message{}}
	go g.read()
	return g, nil
}

// Close closes the connection; calls in flight fail.
func (g *Guest) Close() error { return g.conn.Close() }

// read routes replies to their callers until the connection ends.
func (g *Guest) read() {
	r := guestproto.NewReader(g.conn)
	for {
		m, err := r.Read()
		if err != nil {
			g.mu.Lock()
			g.err = err
			g.mu.Unlock()
			close(g.done)
			return
		}
		g.mu.Lock()
		ch := g.pending[m.ID]
		delete(g.pending, m.ID)
		g.mu.Unlock()
		if ch != nil && m.Reply {
			ch <- m
		}
	}
}

// call sends req and waits for its reply; a reply's error is returned as
// the *guestproto.Error it carries.
func (g *Guest) call(ctx context.Context, req *guestproto.Message) (*guestproto.Message, error) {
	ch := make(chan *guestproto.Message, 1)
	g.mu.Lock()
	g.nextID++
	req.ID = g.nextID
	g.pending[req.ID] = ch
	g.mu.Unlock()
	forget := func() {
		g.mu.Lock()
		delete(g.pending, req.ID)
		g.mu.Unlock()
	}
	if err := g.write(ctx, req); err != nil {
		forget()
		return nil, fmt.Errorf("sf_%s: %w", req.Op, err)
	}
	select {
	case m := <-ch:
		if m.Error != nil {
			return nil, fmt.Errorf("sf_%s: %w", req.Op, m.Error)
		}
		return m, nil
	case <-ctx.Done():
		forget()
		return nil, fmt.Errorf("sf_%s: %w", req.Op, context.Cause(ctx))
	case <-g.done:
		g.mu.Lock()
		err := g.err
		g.mu.Unlock()
		return nil, fmt.Errorf("sf_%s: connection to the guest agent lost: %w (%w)", req.Op, guestproto.ErrUnavailable, err)
	}
}

// write sends one frame; a write that ctx interrupts breaks the connection
// (the frame may be cut), so the Guest is closed.
func (g *Guest) write(ctx context.Context, m *guestproto.Message) error {
	g.wmu.Lock()
	defer g.wmu.Unlock()
	stop := context.AfterFunc(ctx, func() { g.conn.SetWriteDeadline(time.Unix(1, 0)) })
	err := guestproto.Write(g.conn, m)
	if !stop() {
		g.conn.Close()
		return context.Cause(ctx)
	}
	return err
}

func invalid(format string, args ...any) error {
	return fmt.Errorf(format+": %w", append(args, guestproto.ErrInvalidArgument)...)
}

// RequestTicket asks for n clones (sf_request_ticket); m ≤ n may be
// granted.
func (g *Guest) RequestTicket(ctx context.Context, n int) (GuestTicket, error) {
	if n <= 0 {
		return GuestTicket{}, invalid("sf_request_ticket: n = %d, want at least 1", n)
	}
	m, err := g.call(ctx, &guestproto.Message{Op: guestproto.OpRequestTicket, N: n})
	if err != nil {
		return GuestTicket{}, err
	}
	return GuestTicket{ID: m.Ticket, Granted: m.Granted}, nil
}

// Clone clones this VM with ticket (sf_clone): it returns 0 in the parent
// and 1..m-1 in each clone, which resumes inside this call.
func (g *Guest) Clone(ctx context.Context, ticket string) (int, error) {
	id, _, err := g.CloneWithTiming(ctx, ticket)
	return id, err
}

// CloneWithTiming is Clone that also returns how long sfld's steps took
// (checkpoint, parent pause, descriptor, each clone's start), when sfld
// reports it (in the parent; nil otherwise).
func (g *Guest) CloneWithTiming(ctx context.Context, ticket string) (int, *guestproto.Timing, error) {
	m, err := g.ticketCall(ctx, guestproto.OpClone, ticket)
	if err != nil {
		return 0, nil, err
	}
	return m.CloneID, m.Timing, nil
}

// CheckpointParent freezes this VM into an immutable checkpoint
// (sf_checkpoint_parent). It returns the checkpoint's ID and 0 here; clones
// made later with CreateClones resume inside this call with their own ID.
func (g *Guest) CheckpointParent(ctx context.Context) (checkpoint string, id int, err error) {
	m, err := g.call(ctx, &guestproto.Message{Op: guestproto.OpCheckpointParent})
	if err != nil {
		return "", 0, err
	}
	return m.Checkpoint, m.CloneID, nil
}

// CreateClones starts clones of checkpoint with ticket
// (sf_create_clones) and returns how many were made.
func (g *Guest) CreateClones(ctx context.Context, checkpoint, ticket string) (int, error) {
	if checkpoint == "" || ticket == "" {
		return 0, invalid("sf_create_clones: want a checkpoint and a ticket")
	}
	m, err := g.call(ctx, &guestproto.Message{Op: guestproto.OpCreateClones, Checkpoint: checkpoint, Ticket: ticket})
	if err != nil {
		return 0, err
	}
	return m.Granted, nil
}

// Exit ends this clone (sf_exit) with result (at most
// guestproto.MaxResult bytes), which the parent's Join returns.
func (g *Guest) Exit(ctx context.Context, result []byte) error {
	if len(result) > guestproto.MaxResult {
		return invalid("sf_exit: result of %d bytes exceeds %d", len(result), guestproto.MaxResult)
	}
	_, err := g.call(ctx, &guestproto.Message{Op: guestproto.OpExit, Result: result})
	return err
}

// Join waits until every clone of ticket has exited (sf_join) and returns
// their exits; the ticket is then gone.
func (g *Guest) Join(ctx context.Context, ticket string) ([]guestproto.Exit, error) {
	m, err := g.ticketCall(ctx, guestproto.OpJoin, ticket)
	if err != nil {
		return nil, err
	}
	return m.Exits, nil
}

// Kill destroys every clone of ticket at once (sf_kill).
func (g *Guest) Kill(ctx context.Context, ticket string) error {
	_, err := g.ticketCall(ctx, guestproto.OpKill, ticket)
	return err
}

// Release gives back a ticket that was not used to clone.
func (g *Guest) Release(ctx context.Context, ticket string) error {
	_, err := g.ticketCall(ctx, guestproto.OpRelease, ticket)
	return err
}

func (g *Guest) ticketCall(ctx context.Context, op, ticket string) (*guestproto.Message, error) {
	if ticket == "" {
		return nil, invalid("sf_%s: empty ticket", op)
	}
	return g.call(ctx, &guestproto.Message{Op: op, Ticket: ticket})
}

// WhoAmI says which VM this is and its place in its clone family.
func (g *Guest) WhoAmI(ctx context.Context) (GuestInfo, error) {
	m, err := g.call(ctx, &guestproto.Message{Op: guestproto.OpWhoAmI})
	if err != nil {
		return GuestInfo{}, err
	}
	return GuestInfo{VM: m.VM, Family: m.Family, CloneID: m.CloneID}, nil
}
