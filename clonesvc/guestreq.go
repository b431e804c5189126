package clonesvc

import (
	"context"
	"fmt"
	"time"

	"github.com/snowflock/snowflock/allocator"
	"github.com/snowflock/snowflock/egosf/guestproto"
)

// guestErrorCodes maps the allocator classes guestproto has no code of its
// own for (the service's classes are guestproto's).
var guestErrorCodes = map[error]string{
	allocator.ErrInvalidArgument:   "invalid_argument",
	allocator.ErrUnknownAllocation: "not_found",
	allocator.ErrBackendDown:       "unavailable",
}

// handleGuest serves one request from VM e's guest. A guest acts only on
// itself: every ticket and checkpoint it names must be its own, and the
// requests only sfld may send (hello, exec, identity) are refused.
func (s *Service) handleGuest(e *vmEntry, m *guestproto.Message) {
	if !e.begin(m.ID) {
		return // the agent re-sent a request already in hand
	}
	defer e.end(m.ID)
	ctx, cancel := context.WithCancel(s.ctx)
	defer cancel()
	go func() { // a VM that dies ends its requests
		select {
		case <-e.vm.Done():
			cancel()
		case <-ctx.Done():
		}
	}()
	start := time.Now()
	reply, err := s.serveGuest(ctx, e, m)
	if err != nil {
		s.log.Info().Str("vm", e.id()).Str("op", m.Op).Err(err).Msg("guest request failed")
		reply = &guestproto.Message{Error: guestproto.NewError(guestproto.CodeOf(err, guestErrorCodes), err)}
	} else if reply.Timing != nil {
		reply.Timing.TotalMS = ms(time.Since(start))
	}
	if m.Op == guestproto.OpExit && err == nil {
		return // the clone is gone; nobody is left to answer
	}
	e.ch.reply(m.ID, reply)
}

func (s *Service) serveGuest(ctx context.Context, e *vmEntry, m *guestproto.Message) (*guestproto.Message, error) {
	self := e.id()
	switch m.Op {
	case guestproto.OpRequestTicket:
		t, err := s.RequestTicket(ctx, self, m.N)
		if err != nil {
			return nil, err
		}
		return &guestproto.Message{Ticket: t.ID, Granted: t.Granted}, nil
	case guestproto.OpClone:
		t, err := s.lookupTicket(m.Ticket, self)
		if err != nil {
			return nil, err
		}
		_, timing, err := s.cloneWith(ctx, e, t, m.ID, m.Op)
		if err != nil {
			return nil, err
		}
		return &guestproto.Message{CloneID: 0, Granted: t.rec.Granted, Family: t.rec.Family, Timing: timing}, nil
	case guestproto.OpCheckpointParent:
		cp, err := s.checkpoint(ctx, e, m.ID, m.Op, "")
		if err != nil {
			return nil, err
		}
		return &guestproto.Message{Checkpoint: cp.ID, CloneID: 0}, nil
	case guestproto.OpCreateClones:
		clones, timing, err := s.CreateClones(ctx, m.Checkpoint, m.Ticket, self)
		if err != nil {
			return nil, err
		}
		return &guestproto.Message{Granted: len(clones) + 1, Timing: timing}, nil
	case guestproto.OpExit:
		return s.guestExit(ctx, e, m)
	case guestproto.OpJoin:
		exits, err := s.Join(ctx, m.Ticket, self)
		if err != nil {
			return nil, err
		}
		return &guestproto.Message{Exits: exits}, nil
	case guestproto.OpKill:
		if _, err := s.Kill(ctx, m.Ticket, self); err != nil {
			return nil, err
		}
		return &guestproto.Message{}, nil
	case guestproto.OpRelease:
		if err := s.Release(ctx, m.Ticket, self); err != nil {
			return nil, err
		}
		return &guestproto.Message{}, nil
	case guestproto.OpWhoAmI:
		r := e.record()
		return &guestproto.Message{VM: r.ID, Family: r.Family, CloneID: r.CloneID}, nil
	default:
		return nil, fmt.Errorf("a guest may not send %q: %w", m.Op, ErrPermissionDenied)
	}
}

// guestExit ends a clone: its result is recorded for sf_join and the VM
// destroyed.
func (s *Service) guestExit(ctx context.Context, e *vmEntry, m *guestproto.Message) (*guestproto.Message, error) {
	r := e.record()
	if r.Role != RoleClone || r.Ticket == "" {
		return nil, fmt.Errorf("sf_exit is for clones; vm %s is not one: %w", r.ID, ErrInvalidArgument)
	}
	s.cloneEnded(e, Exit{CloneID: r.CloneID, Result: m.Result})
	s.removeVM(context.WithoutCancel(ctx), e, "exited")
	return &guestproto.Message{}, nil
}
