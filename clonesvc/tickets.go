package clonesvc

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/snowflock/snowflock/allocator"
)

// ticket is a grant of clone slots to one VM, with the clones made from
// it. done is closed when every clone of an active ticket has ended.
type ticket struct {
	rec  TicketRecord
	done chan struct{}
}

// RequestTicket asks the allocator for slots so that owner can become n
// VMs in all (itself as clone 0 and n-1 clones): m ≤ n are granted, m ≥ 2
// unless n is 1. Without Peers only slots on this host are kept.
func (s *Service) RequestTicket(ctx context.Context, owner string, n int) (TicketRecord, error) {
	if n < 1 {
		return TicketRecord{}, fmt.Errorf("a ticket is for at least 1 VM, got %d: %w", n, ErrInvalidArgument)
	}
	if n > 1024 {
		return TicketRecord{}, fmt.Errorf("a ticket is for at most 1024 VMs, got %d: %w", n, ErrInvalidArgument)
	}
	if _, err := s.lookupVM(owner); err != nil {
		return TicketRecord{}, err
	}
	rec := TicketRecord{ID: newID("tk-"), Owner: owner, Granted: 1, State: TicketIssued, Created: time.Now()}
	if n > 1 {
		rctx, cancel := context.WithTimeout(ctx, s.cfg.RequestTimeout)
		defer cancel()
		a, err := s.cfg.Allocator.Request(rctx, allocator.Request{Min: 1, Max: n - 1, Name: "sfld:" + owner, Lease: s.cfg.Lease})
		if err != nil {
			return TicketRecord{}, fmt.Errorf("clone slots for %s: %w", owner, err)
		}
		slots, err := s.keepUsable(ctx, *a)
		if err != nil {
			return TicketRecord{}, err
		}
		rec.Allocation, rec.Slots, rec.Granted = a.ID, slots, allocator.Total(slots)+1
	}
	if err := s.store.put(bucketTickets, rec.ID, rec); err != nil {
		s.releaseAllocation(rec)
		return TicketRecord{}, err
	}
	s.mu.Lock()
	s.tickets[rec.ID] = &ticket{rec: rec, done: make(chan struct{})}
	s.mu.Unlock()
	s.log.Info().Str("ticket", rec.ID).Str("vm", owner).Int("asked", n).Int("granted", rec.Granted).Str("allocation", rec.Allocation).Msg("ticket granted")
	return rec, nil
}

// keepUsable returns the slots of a that clones can use: all of them with
// Peers, else only this host's (the others are given back).
func (s *Service) keepUsable(ctx context.Context, a allocator.Allocation) ([]allocator.Slot, error) {
	if s.cfg.Peers != nil {
		return a.Slots, nil
	}
	var local, remote []allocator.Slot
	for _, sl := range a.Slots {
		if sl.Host == s.cfg.Host {
			local = append(local, sl)
		} else {
			remote = append(remote, sl)
		}
	}
	if len(local) == 0 {
		s.cfg.Allocator.Release(context.WithoutCancel(ctx), a.ID, nil)
		return nil, fmt.Errorf("the allocator granted slots only on other hosts (%s), and this sfld has no peers configured: %w",
			allocator.FormatSlots(a.Slots), allocator.ErrNoneAvailable)
	}
	if len(remote) > 0 {
		if _, err := s.cfg.Allocator.Release(ctx, a.ID, remote); err != nil {
			s.cfg.Allocator.Release(context.WithoutCancel(ctx), a.ID, nil)
			return nil, fmt.Errorf("give back slots on other hosts: %w", err)
		}
		s.log.Info().Str("allocation", a.ID).Str("released", allocator.FormatSlots(remote)).Msg("kept only this host's slots")
	}
	return local, nil
}

// lookupTicket returns ticket id if owner may use it.
func (s *Service) lookupTicket(id, owner string) (*ticket, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.tickets[id]
	if !ok {
		return nil, fmt.Errorf("no ticket %q: %w", id, ErrNotFound)
	}
	if owner != "" && t.rec.Owner != owner {
		return nil, fmt.Errorf("ticket %q belongs to another VM: %w", id, ErrPermissionDenied)
	}
	return t, nil
}

// saveTicket stores t's record (caller holds no lock).
func (s *Service) saveTicket(t *ticket) error {
	s.mu.Lock()
	rec := t.rec
	s.mu.Unlock()
	return s.store.put(bucketTickets, rec.ID, rec)
}

// ListTickets returns every ticket, oldest first.
func (s *Service) ListTickets() []TicketRecord {
	s.mu.Lock()
	out := make([]TicketRecord, 0, len(s.tickets))
	for _, t := range s.tickets {
		r := t.rec
		if ms, ok := s.servers[r.Family]; ok && r.Family != "" {
			r.MemoryBytesSent = ms.srv.Stats().BytesSent
		}
		out = append(out, r)
	}
	s.mu.Unlock()
	slices.SortFunc(out, func(a, b TicketRecord) int { return a.Created.Compare(b.Created) })
	return out
}

// cloneEnded records clone e's end once: in its ticket here, or at its
// parent's host.
func (s *Service) cloneEnded(e *vmEntry, exit Exit) {
	if !e.markEnded() {
		return
	}
	rec := e.record()
	if rec.ParentHost != "" {
		s.reportEnded(rec, exit)
		return
	}
	s.cloneGone(rec, exit)
}

// cloneGone records a clone's end in its ticket; when it was the last
// one, the ticket's joiners wake up.
func (s *Service) cloneGone(rec VMRecord, exit Exit) {
	s.mu.Lock()
	t, ok := s.tickets[rec.Ticket]
	if !ok {
		s.mu.Unlock()
		return
	}
	if !slices.ContainsFunc(t.rec.Exits, func(x Exit) bool { return x.CloneID == exit.CloneID }) {
		t.rec.Exits = append(t.rec.Exits, exit)
	}
	t.rec.Clones = slices.DeleteFunc(t.rec.Clones, func(id string) bool { return id == rec.ID })
	delete(t.rec.Remote, rec.ID)
	last := t.rec.State == TicketActive && len(t.rec.Clones) == 0
	s.mu.Unlock()
	s.saveTicket(t)
	if last {
		closeOnce(t.done)
	}
}

func closeOnce(c chan struct{}) {
	select {
	case <-c:
	default:
		close(c)
	}
}

// Join waits until every clone of ticket id has ended, then releases its
// slots and forgets it. owner "" skips the ownership check (operator).
func (s *Service) Join(ctx context.Context, id, owner string) ([]Exit, error) {
	t, err := s.lookupTicket(id, owner)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	state := t.rec.State
	s.mu.Unlock()
	if state == TicketIssued {
		return nil, fmt.Errorf("ticket %s has no clones yet (call clone first, or release it): %w", id, ErrInvalidArgument)
	}
	select {
	case <-t.done:
	case <-ctx.Done():
		return nil, fmt.Errorf("join %s: %w", id, ctx.Err())
	case <-s.ctx.Done():
		return nil, errClosed
	}
	s.mu.Lock()
	exits := slices.Clone(t.rec.Exits)
	s.mu.Unlock()
	slices.SortFunc(exits, func(a, b Exit) int { return a.CloneID - b.CloneID })
	return exits, s.dropTicket(ctx, t)
}

// Kill destroys every clone of ticket id and releases the ticket.
func (s *Service) Kill(ctx context.Context, id, owner string) (int, error) {
	t, err := s.lookupTicket(id, owner)
	if err != nil {
		return 0, err
	}
	n := s.killClones(ctx, t, "killed")
	return n, s.dropTicket(ctx, t)
}

// killClones destroys the clones of t, here and on other hosts, recording
// them as killed.
func (s *Service) killClones(ctx context.Context, t *ticket, reason string) int {
	s.mu.Lock()
	clones := slices.Clone(t.rec.Clones)
	remote := maps.Clone(t.rec.Remote)
	s.mu.Unlock()
	var n int
	hosts := map[string]bool{}
	for _, ref := range remote {
		hosts[ref.Address] = true
	}
	for _, vid := range clones {
		if _, ok := remote[vid]; ok {
			continue
		}
		if e, err := s.lookupVM(vid); err == nil {
			s.removeVM(ctx, e, reason)
			n++
		}
	}
	for addr := range hosts {
		if s.cfg.Peers == nil {
			break
		}
		if err := s.cfg.Peers.KillClones(ctx, addr, t.rec.ID); err != nil {
			s.log.Warn().Str("host", addr).Str("ticket", t.rec.ID).Err(err).Msg("kill remote clones")
		}
	}
	// Whatever the clone hosts report later is a duplicate; record the
	// remote clones as killed now so that nothing waits for them.
	for vid, ref := range remote {
		s.cloneGone(VMRecord{ID: vid, Ticket: t.rec.ID, CloneID: ref.CloneID}, Exit{CloneID: ref.CloneID, Killed: true, Reason: reason})
		n++
	}
	return n
}

// Release gives back a ticket that has no clones.
func (s *Service) Release(ctx context.Context, id, owner string) error {
	t, err := s.lookupTicket(id, owner)
	if err != nil {
		return err
	}
	s.mu.Lock()
	busy := len(t.rec.Clones) > 0
	s.mu.Unlock()
	if busy {
		return fmt.Errorf("ticket %s has running clones: join or kill it: %w", id, ErrInvalidArgument)
	}
	return s.dropTicket(ctx, t)
}

// dropTicket releases a ticket's slots, deletes its checkpoint (if made by
// clone) and forgets it.
func (s *Service) dropTicket(ctx context.Context, t *ticket) error {
	s.mu.Lock()
	if _, ok := s.tickets[t.rec.ID]; !ok {
		s.mu.Unlock()
		return nil
	}
	delete(s.tickets, t.rec.ID)
	rec := t.rec
	s.mu.Unlock()
	closeOnce(t.done)
	err := s.releaseAllocation(rec)
	if rec.Family != "" {
		s.stopServer(rec.Family)
	}
	if rec.Checkpoint != "" {
		s.deleteCheckpointIfTicket(rec.Checkpoint, rec.ID)
	}
	s.store.delete(bucketTickets, rec.ID)
	s.log.Info().Str("ticket", rec.ID).Int("exits", len(rec.Exits)).Msg("ticket released")
	return err
}

// releaseAllocation gives a ticket's slots back to the allocator. An
// allocation that is already gone (expired) is not an error.
func (s *Service) releaseAllocation(rec TicketRecord) error {
	if rec.Allocation == "" {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := s.cfg.Allocator.Release(ctx, rec.Allocation, nil); err != nil && !errors.Is(err, allocator.ErrUnknownAllocation) {
		s.log.Error().Str("ticket", rec.ID).Str("allocation", rec.Allocation).Err(err).Msg("release slots")
		return fmt.Errorf("release slots of ticket %s: %w", rec.ID, err)
	}
	return nil
}

// ownerGone kills the tickets and deletes the checkpoints of a VM that
// stopped: nobody is left to join them.
func (s *Service) ownerGone(ctx context.Context, vmID string) {
	s.mu.Lock()
	var ts []*ticket
	for _, t := range s.tickets {
		if t.rec.Owner == vmID {
			ts = append(ts, t)
		}
	}
	var cps []string
	for id, cp := range s.checkpoints {
		if cp.Owner == vmID && cp.Ticket == "" {
			cps = append(cps, id)
		}
	}
	s.mu.Unlock()
	for _, t := range ts {
		s.killClones(ctx, t, "parent stopped")
		s.dropTicket(ctx, t)
	}
	for _, id := range cps {
		s.deleteCheckpoint(id)
	}
}

// renewLoop keeps the allocations of held tickets alive. A ticket whose
// allocation the allocator no longer knows (it expired or was reclaimed)
// loses its clones.
func (s *Service) renewLoop() {
	defer s.wg.Done()
	tick := time.NewTicker(s.cfg.Lease / 3)
	defer tick.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-tick.C:
		}
		s.mu.Lock()
		var ts []*ticket
		for _, t := range s.tickets {
			if t.rec.Allocation != "" {
				ts = append(ts, t)
			}
		}
		s.mu.Unlock()
		for _, t := range ts {
			ctx, cancel := context.WithTimeout(s.ctx, s.cfg.Lease/3)
			_, err := s.cfg.Allocator.Renew(ctx, t.rec.Allocation, s.cfg.Lease)
			cancel()
			switch {
			case err == nil:
			case errors.Is(err, allocator.ErrUnknownAllocation):
				s.log.Error().Str("ticket", t.rec.ID).Msg("allocation lost (expired or reclaimed): killing its clones")
				s.killClones(s.ctx, t, "slots reclaimed")
				s.dropTicket(s.ctx, t)
			default:
				s.log.Warn().Str("ticket", t.rec.ID).Err(err).Msg("renew slots")
			}
		}
	}
}
