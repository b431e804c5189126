package guestagent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/snowflock/snowflock/egosf/guestproto"
)

// programWriteTimeout bounds a reply's write to a program that does not
// read; the program is then disconnected rather than stalling the agent.
const programWriteTimeout = 5 * time.Second

// program is one connection from a program in the guest.
type program struct {
	conn net.Conn

	// mu serialises frames written to conn and guards gone.
	mu   sync.Mutex
	gone bool // the connection closed: replies are dropped
}

// send writes one frame to the program; a program that went away is
// skipped.
func (p *program) send(m *guestproto.Message) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.gone {
		return net.ErrClosed
	}
	p.conn.SetWriteDeadline(time.Now().Add(programWriteTimeout))
	return guestproto.Write(p.conn, m)
}

// accept serves programs' connections until the listener closes.
func (a *Agent) accept(ctx context.Context) error {
	for {
		conn, err := a.cfg.Listener.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return context.Cause(ctx)
			}
			return fmt.Errorf("program socket: %w", err)
		}
		p := &program{conn: conn}
		a.mu.Lock()
		if ctx.Err() != nil { // Run is closing the programs' connections
			a.mu.Unlock()
			conn.Close()
			return context.Cause(ctx)
		}
		a.programs[p] = struct{}{}
		a.mu.Unlock()
		a.wg.Go(func() { a.serveProgram(p) })
	}
}

// serveProgram relays one program's requests until its connection closes.
func (a *Agent) serveProgram(p *program) {
	defer func() {
		p.mu.Lock()
		p.gone = true
		p.mu.Unlock()
		p.conn.Close()
		a.mu.Lock()
		delete(a.programs, p)
		a.mu.Unlock()
	}()
	r := guestproto.NewReader(p.conn)
	for {
		m, err := r.Read()
		if err != nil {
			if !errors.Is(err, io.EOF) && !closed(err) {
				a.cfg.Log.Warn().Err(err).Msg("program sent a bad frame; disconnecting it")
			}
			return
		}
		switch {
		case m.Reply:
			a.cfg.Log.Warn().Uint64("id", m.ID).Msg("program sent a reply; ignored")
		case m.Op == guestproto.OpHello || m.Op == guestproto.OpExec || m.Op == guestproto.OpIdentity:
			p.send(&guestproto.Message{ID: m.ID, Op: m.Op, Reply: true, Error: guestproto.NewError("permission_denied",
				fmt.Errorf("%s comes only from the host, not from a program in the guest", m.Op))})
		default:
			a.forward(p, m)
		}
	}
}

// forward sends a program's request to sfld under an ID unique on the port.
func (a *Agent) forward(p *program, m *guestproto.Message) {
	a.mu.Lock()
	a.nextID++
	id := a.nextID
	a.pending[id] = &pendingRequest{prog: p, origID: m.ID, op: m.Op}
	a.mu.Unlock()
	fwd := *m
	fwd.ID = id
	if err := a.writePort(&fwd); err != nil {
		a.mu.Lock()
		delete(a.pending, id)
		a.mu.Unlock()
		p.send(&guestproto.Message{ID: m.ID, Op: m.Op, Reply: true,
			Error: guestproto.NewError("unavailable", fmt.Errorf("guest channel: %w", err))})
	}
}

// deliver routes sfld's reply to the program that asked. A reply to clone
// or checkpoint_parent that carries an Identity (this VM is a new clone)
// is applied before the program sees it.
func (a *Agent) deliver(m *guestproto.Message) {
	a.mu.Lock()
	req, ok := a.pending[m.ID]
	delete(a.pending, m.ID)
	a.mu.Unlock()
	if !ok {
		a.cfg.Log.Warn().Uint64("id", m.ID).Str("op", m.Op).Msg("reply to no pending request; dropped")
		return
	}
	if m.Identity != nil && (req.op == guestproto.OpClone || req.op == guestproto.OpCheckpointParent) {
		a.takeIdentity(m.Identity)
		// The seed is RNG state: it does not go further than the kernel.
		id := *m.Identity
		id.Seed = nil
		m.Identity = &id
	}
	m.ID = req.origID
	if err := req.prog.send(m); err != nil {
		a.cfg.Log.Debug().Err(err).Str("op", req.op).Msg("program gone; reply dropped")
	}
}
