package clonesvc

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/snowflock/snowflock/allocator"
)

// recover rebuilds the service from its records after a restart:
// reattach to every VM still running, clean up every VM, checkpoint and
// ticket an earlier sfld left half-done, release slots nobody can use.
// It never leaves a QEMU process or a slot that no record accounts for.
func (s *Service) recover(ctx context.Context) error {
	var vms []VMRecord
	var tickets []TicketRecord
	var cps []CheckpointRecord
	if err := load(s.store, bucketVMs, func(r VMRecord) { vms = append(vms, r) }); err != nil {
		return err
	}
	if err := load(s.store, bucketTickets, func(r TicketRecord) { tickets = append(tickets, r) }); err != nil {
		return err
	}
	if err := load(s.store, bucketCheckpoints, func(r CheckpointRecord) { cps = append(cps, r) }); err != nil {
		return err
	}
	known := map[string]bool{}
	for _, rec := range vms {
		known[rec.Dir] = true
		if rec.Backend != nil {
			vm, err := s.cfg.Backend.Attach(ctx, *rec.Backend)
			if err == nil {
				// sfld may have died with the VM stopped for a checkpoint.
				if rerr := vm.Resume(ctx); rerr != nil {
					s.log.Warn().Str("vm", rec.ID).Err(rerr).Msg("resume after reattach")
				}
				s.adopt(rec, vm)
				s.log.Info().Str("vm", rec.ID).Msg("reattached")
				continue
			}
			s.log.Warn().Str("vm", rec.ID).Err(err).Msg("cannot reattach: cleaning up")
		} else {
			s.log.Warn().Str("vm", rec.ID).Msg("vm was starting when sfld stopped: cleaning up")
		}
		s.cleanupDir(ctx, rec.Dir)
		s.store.delete(bucketVMs, rec.ID)
	}
	for _, cp := range cps {
		known[cp.Dir] = true
		if cp.Checkpoint == nil {
			os.RemoveAll(cp.Dir)
			s.store.delete(bucketCheckpoints, cp.ID)
			continue
		}
		s.checkpoints[cp.ID] = &cp
	}
	for _, rec := range tickets {
		s.recoverTicket(ctx, rec)
	}
	s.recoverMemoryServers(ctx)
	// Clones whose ticket is gone cannot be joined: stop them.
	for _, rec := range s.ListVMs() {
		if rec.Role != RoleClone {
			continue
		}
		if _, err := s.lookupTicket(rec.Ticket, ""); err != nil {
			if e, err := s.lookupVM(rec.ID); err == nil {
				s.removeVM(ctx, e, "ticket lost")
			}
		}
	}
	// Checkpoints whose owner or ticket is gone serve nobody.
	s.mu.Lock()
	var stale []string
	for id, cp := range s.checkpoints {
		_, owner := s.vms[cp.Owner]
		_, tk := s.tickets[cp.Ticket]
		if !owner || (cp.Ticket != "" && !tk) {
			stale = append(stale, id)
		}
	}
	s.mu.Unlock()
	for _, id := range stale {
		s.deleteCheckpoint(id)
	}
	// Directories no record names: a crash between mkdir and the record.
	for _, sub := range []string{"vms", "checkpoints"} {
		ents, _ := os.ReadDir(filepath.Join(s.cfg.StateDir, sub))
		for _, d := range ents {
			dir := filepath.Join(s.cfg.StateDir, sub, d.Name())
			if !known[dir] {
				s.cleanupDir(ctx, dir)
			}
		}
	}
	return nil
}

// recoverTicket keeps a ticket whose owner lives and whose clones were
// all started; anything else is killed and its slots released.
func (s *Service) recoverTicket(ctx context.Context, rec TicketRecord) {
	t := &ticket{rec: rec, done: make(chan struct{})}
	var alive []string
	for _, e := range s.vmsOfTicket(rec.ID) {
		alive = append(alive, e.id())
	}
	lost := func(reason string) {
		s.log.Warn().Str("ticket", rec.ID).Str("reason", reason).Msg("releasing ticket")
		s.mu.Lock()
		s.tickets[rec.ID] = t
		t.rec.Clones = alive
		s.mu.Unlock()
		s.killClones(ctx, t, reason)
		s.dropTicket(ctx, t)
	}
	if _, err := s.lookupVM(rec.Owner); err != nil {
		lost("its VM is gone")
		return
	}
	if rec.State == TicketCloning {
		lost("sfld stopped while cloning")
		return
	}
	if rec.Allocation != "" {
		gctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_, err := s.cfg.Allocator.Get(gctx, rec.Allocation)
		cancel()
		if errors.Is(err, allocator.ErrUnknownAllocation) {
			lost("its slots expired while sfld was down")
			return
		}
	}
	for id := range rec.Remote {
		alive = append(alive, id) // on other hosts: they report their end
	}
	for _, id := range rec.Clones {
		if !slices.Contains(alive, id) {
			t.rec.Exits = append(t.rec.Exits, Exit{CloneID: -1, Killed: true, Reason: "clone " + id + " was lost while sfld was down"})
		}
	}
	t.rec.Clones = alive
	if t.rec.State == TicketActive && len(alive) == 0 {
		close(t.done)
	}
	s.mu.Lock()
	s.tickets[rec.ID] = t
	s.mu.Unlock()
	s.saveTicket(t)
}

// vmsOfTicket returns the clones of ticket id that are running.
func (s *Service) vmsOfTicket(id string) []*vmEntry {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*vmEntry
	for _, e := range s.vms {
		if e.rec.Role == RoleClone && e.rec.Ticket == id {
			out = append(out, e)
		}
	}
	return out
}

// cleanupDir stops whatever the backend started in dir and removes it.
func (s *Service) cleanupDir(ctx context.Context, dir string) {
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := s.cfg.Backend.Cleanup(cctx, dir); err != nil {
		s.log.Warn().Str("dir", dir).Err(err).Msg("cleanup")
	}
	os.RemoveAll(dir)
}

// recoverMemoryServers serves again, at the same address, the memory of
// the families whose clones run on other hosts: those clones' faults wait
// (up to the fetch bound) for a server that answers.
func (s *Service) recoverMemoryServers(ctx context.Context) {
	s.mu.Lock()
	var cps []*CheckpointRecord
	for _, t := range s.tickets {
		if len(t.rec.Remote) == 0 {
			continue
		}
		for _, cp := range s.checkpoints {
			if cp.Family == t.rec.Family && cp.Checkpoint != nil {
				cps = append(cps, cp)
				break
			}
		}
	}
	s.mu.Unlock()
	for _, cp := range cps {
		if _, err := s.serveFamily(ctx, cp); err != nil {
			s.log.Error().Str("family", cp.Family).Err(err).Msg("memory server not restarted: the family's clones on other hosts will be stopped")
		}
	}
}
