package clonesvc

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/snowflock/snowflock/egosf/guestproto"
)

// checkpoint freezes VM e into a new checkpoint. request and op name the
// guest request it is made inside (0 for an operator's checkpoint); ticket
// ties its life to a ticket (sf_clone), or "" for a lasting checkpoint.
func (s *Service) checkpoint(ctx context.Context, e *vmEntry, request uint64, op, ticket string) (*CheckpointRecord, error) {
	rec := &CheckpointRecord{
		ID: newID("cp-"), Owner: e.id(), Request: request, Op: op, Ticket: ticket,
		Family: newID("fam-"), Key: randomBytes(32), Created: time.Now(),
	}
	rec.Dir = filepath.Join(s.cfg.StateDir, "checkpoints", rec.ID)
	if err := os.Mkdir(rec.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("checkpoint directory: %w", err)
	}
	fail := func(err error) (*CheckpointRecord, error) {
		s.store.delete(bucketCheckpoints, rec.ID)
		os.RemoveAll(rec.Dir)
		return nil, err
	}
	// Journal first: a restarted sfld deletes checkpoints it finds
	// without their Checkpoint.
	if err := s.store.put(bucketCheckpoints, rec.ID, rec); err != nil {
		return fail(err)
	}
	cp, err := e.vm.Checkpoint(ctx, rec.Dir)
	if err != nil {
		return fail(fmt.Errorf("checkpoint vm %s: %w", e.id(), err))
	}
	rec.Checkpoint = cp
	start := time.Now()
	size, err := s.writeDescriptor(rec)
	if err != nil {
		return fail(err)
	}
	rec.DescMS, rec.DescBytes = ms(time.Since(start)), size
	if err := s.store.put(bucketCheckpoints, rec.ID, rec); err != nil {
		return fail(err)
	}
	s.mu.Lock()
	s.checkpoints[rec.ID] = rec
	s.mu.Unlock()
	s.log.Info().Str("vm", e.id()).Str("checkpoint", rec.ID).Float64("pause_ms", ms(cp.Paused)).
		Float64("checkpoint_ms", ms(cp.Took)).Int64("descriptor_bytes", size).Msg("checkpoint")
	return rec, nil
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// createClones starts the clones of ticket t from checkpoint cp: clone IDs
// 1..m-1, each resuming inside the guest request the checkpoint was made
// in (when there is one). All or nothing: on failure every clone started
// is destroyed and the error returned; the ticket is left for the caller.
func (s *Service) createClones(ctx context.Context, t *ticket, cp *CheckpointRecord, parent VMRecord) ([]VMRecord, []float64, error) {
	if err := checkDescriptor(cp); err != nil {
		return nil, nil, err
	}
	s.mu.Lock()
	if t.rec.State != TicketIssued {
		s.mu.Unlock()
		return nil, nil, fmt.Errorf("ticket %s was already used (%s): request another: %w", t.rec.ID, t.rec.State, ErrInvalidArgument)
	}
	t.rec.State = TicketCloning
	t.rec.Family = cp.Family
	if cp.Ticket == t.rec.ID {
		t.rec.Checkpoint = cp.ID
	}
	m := t.rec.Granted
	s.mu.Unlock()
	if err := s.saveTicket(t); err != nil {
		return nil, nil, err
	}
	local, remote := s.place(t.rec.Slots, m)
	recs := make([]VMRecord, m-1)
	starts := make([]float64, m-1)
	var errs []error
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, k := range local {
		wg.Go(func() {
			r, took, err := s.startClone(ctx, t.rec.ID, m, k, cp, parent)
			mu.Lock()
			recs[k-1], starts[k-1] = r, took
			errs = append(errs, err)
			mu.Unlock()
		})
	}
	if len(remote) > 0 {
		wg.Go(func() {
			rs, err := s.startRemote(ctx, t, cp, parent, remote, m)
			mu.Lock()
			for _, r := range rs {
				recs[r.CloneID-1], starts[r.CloneID-1] = r, r.StartMS
			}
			errs = append(errs, err)
			mu.Unlock()
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		for _, r := range recs {
			if e, lerr := s.lookupVM(r.ID); r.ID != "" && lerr == nil {
				s.removeVM(context.WithoutCancel(ctx), e, "clone failed")
			}
		}
		s.killRemote(context.WithoutCancel(ctx), t.rec.ID, remote)
		s.mu.Lock()
		t.rec.Exits = nil
		s.mu.Unlock()
		return nil, nil, fmt.Errorf("create clones of %s: %w", parent.ID, err)
	}
	s.mu.Lock()
	t.rec.State = TicketActive
	for _, r := range recs {
		// A clone may have ended already (sf_exit before its siblings
		// were all started): its exit is recorded, it is not running.
		if !slices.ContainsFunc(t.rec.Exits, func(x Exit) bool { return x.CloneID == r.CloneID }) {
			t.rec.Clones = append(t.rec.Clones, r.ID)
		} else {
			delete(t.rec.Remote, r.ID)
		}
	}
	none := len(t.rec.Clones) == 0
	s.mu.Unlock()
	if none {
		closeOnce(t.done)
	}
	return recs, starts, s.saveTicket(t)
}

// startClone starts clone k of m.
func (s *Service) startClone(ctx context.Context, ticketID string, m, k int, cp *CheckpointRecord, parent VMRecord) (VMRecord, float64, error) {
	host := cloneHostname(parent.Hostname, cp.Family, k)
	rec := VMRecord{
		ID: newID("vm-"), Name: host, Hostname: host, Role: RoleClone, State: StateStarting,
		Spec:   VMSpec{CPUs: parent.Spec.CPUs, MemoryMiB: parent.Spec.MemoryMiB, Hostname: host},
		Parent: parent.ID, Ticket: ticketID, CloneID: k, Family: cp.Family, Created: time.Now(),
	}
	identity := &guestproto.Identity{Hostname: host, Seed: randomBytes(32)}
	if cp.Request != 0 {
		rec.Resume = &guestproto.Message{ID: cp.Request, Op: cp.Op, CloneID: k, Granted: m, Checkpoint: cp.ID, Identity: identity}
	}
	start := time.Now()
	e, err := s.launch(ctx, rec, func(ctx context.Context, spec VMSpec) (VM, error) {
		return s.cfg.Backend.Restore(ctx, spec, cp.Checkpoint)
	})
	if err != nil {
		return VMRecord{}, 0, fmt.Errorf("clone %d: %w", k, err)
	}
	took := ms(time.Since(start))
	e.mu.Lock()
	e.rec.StartMS = took
	rec = e.rec
	e.mu.Unlock()
	s.store.put(bucketVMs, rec.ID, rec)
	if cp.Request == 0 {
		// No guest call to resume in: tell the agent its identity.
		s.goBackground(func() { s.sendIdentity(e, identity) })
	}
	return rec, took, nil
}

// sendIdentity gives a clone made without the guest's cooperation its
// identity once its agent answers.
func (s *Service) sendIdentity(e *vmEntry, id *guestproto.Identity) {
	ctx, cancel := context.WithTimeout(s.ctx, 2*time.Minute)
	defer cancel()
	if err := e.ch.waitReady(ctx); err != nil {
		return
	}
	if _, err := e.ch.call(ctx, &guestproto.Message{Op: guestproto.OpIdentity, Identity: id}); err != nil {
		s.log.Warn().Str("vm", e.id()).Err(err).Msg("clone identity")
	}
}

// takeResume returns (once) the reply clone e's agent waits for as
// request id, or nil.
func (s *Service) takeResume(e *vmEntry, id uint64) *guestproto.Message {
	e.mu.Lock()
	r := e.rec.Resume
	if r == nil || r.ID != id {
		e.mu.Unlock()
		return nil
	}
	e.rec.Resume = nil
	rec := e.rec
	e.mu.Unlock()
	s.store.put(bucketVMs, rec.ID, rec)
	out := *r
	out.Op = ""
	return &out
}

// Clone forks VM id into n VMs in all (n-1 clones) without the guest's
// cooperation: a ticket, a checkpoint, the clones.
func (s *Service) Clone(ctx context.Context, id string, n int) (TicketRecord, []VMRecord, *guestproto.Timing, error) {
	begin := time.Now()
	e, err := s.lookupVM(id)
	if err != nil {
		return TicketRecord{}, nil, nil, err
	}
	t, err := s.RequestTicket(ctx, e.id(), n)
	if err != nil {
		return TicketRecord{}, nil, nil, err
	}
	tk, _ := s.lookupTicket(t.ID, "")
	clones, timing, err := s.cloneWith(ctx, e, tk, 0, "")
	if err != nil {
		s.dropTicket(context.WithoutCancel(ctx), tk)
		return TicketRecord{}, nil, nil, err
	}
	timing.TotalMS = ms(time.Since(begin))
	s.mu.Lock()
	rec := tk.rec
	s.mu.Unlock()
	return rec, clones, timing, nil
}

// cloneWith checkpoints e for ticket t and starts its clones.
func (s *Service) cloneWith(ctx context.Context, e *vmEntry, t *ticket, request uint64, op string) ([]VMRecord, *guestproto.Timing, error) {
	s.mu.Lock()
	if t.rec.State != TicketIssued {
		s.mu.Unlock()
		return nil, nil, fmt.Errorf("ticket %s was already used (%s): request another: %w", t.rec.ID, t.rec.State, ErrInvalidArgument)
	}
	s.mu.Unlock()
	cp, err := s.checkpoint(ctx, e, request, op, t.rec.ID)
	if err != nil {
		return nil, nil, err
	}
	clones, starts, err := s.createClones(ctx, t, cp, e.record())
	if err != nil {
		s.deleteCheckpoint(cp.ID)
		return nil, nil, err
	}
	return clones, timingOf(cp, starts), nil
}

func timingOf(cp *CheckpointRecord, starts []float64) *guestproto.Timing {
	return &guestproto.Timing{
		CheckpointMS: ms(cp.Checkpoint.Took), PauseMS: ms(cp.Checkpoint.Paused),
		DescriptorMS: cp.DescMS, DescriptorBytes: cp.DescBytes, CloneStartMS: starts,
	}
}

// Checkpoint freezes VM id into a lasting checkpoint (operator).
func (s *Service) Checkpoint(ctx context.Context, id string) (*CheckpointRecord, error) {
	e, err := s.lookupVM(id)
	if err != nil {
		return nil, err
	}
	return s.checkpoint(ctx, e, 0, "", "")
}

// CreateClones starts clones from lasting checkpoint cpID for ticket
// ticketID; owner "" skips the ownership checks (operator).
func (s *Service) CreateClones(ctx context.Context, cpID, ticketID, owner string) ([]VMRecord, *guestproto.Timing, error) {
	s.mu.Lock()
	cp, ok := s.checkpoints[cpID]
	s.mu.Unlock()
	if !ok {
		return nil, nil, fmt.Errorf("no checkpoint %q: %w", cpID, ErrNotFound)
	}
	if owner != "" && cp.Owner != owner {
		return nil, nil, fmt.Errorf("checkpoint %q belongs to another VM: %w", cpID, ErrPermissionDenied)
	}
	if cp.Ticket != "" {
		return nil, nil, fmt.Errorf("checkpoint %q was made by clone and serves only its ticket: %w", cpID, ErrInvalidArgument)
	}
	t, err := s.lookupTicket(ticketID, owner)
	if err != nil {
		return nil, nil, err
	}
	if t.rec.Owner != cp.Owner {
		return nil, nil, fmt.Errorf("ticket %s and checkpoint %s belong to different VMs: %w", ticketID, cpID, ErrPermissionDenied)
	}
	e, err := s.lookupVM(cp.Owner)
	if err != nil {
		return nil, nil, err
	}
	clones, starts, err := s.createClones(ctx, t, cp, e.record())
	if err != nil {
		return nil, nil, err
	}
	timing := timingOf(cp, starts)
	return clones, timing, nil
}

// deleteCheckpointIfTicket deletes checkpoint id if it belongs to ticket.
func (s *Service) deleteCheckpointIfTicket(id, ticket string) {
	s.mu.Lock()
	cp, ok := s.checkpoints[id]
	s.mu.Unlock()
	if ok && cp.Ticket == ticket {
		s.deleteCheckpoint(id)
	}
}

// deleteCheckpoint removes a checkpoint's files and record. Clones still
// running keep their memory image open; its blocks go when they end.
func (s *Service) deleteCheckpoint(id string) {
	s.mu.Lock()
	cp, ok := s.checkpoints[id]
	delete(s.checkpoints, id)
	s.mu.Unlock()
	if ok {
		os.RemoveAll(cp.Dir)
	}
	s.store.delete(bucketCheckpoints, id)
}

// CheckpointOwner returns the VM that made checkpoint id.
func (s *Service) CheckpointOwner(id string) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cp, ok := s.checkpoints[id]
	if !ok {
		return "", fmt.Errorf("no checkpoint %q: %w", id, ErrNotFound)
	}
	return cp.Owner, nil
}
