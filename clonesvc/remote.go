package clonesvc

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"time"

	"github.com/snowflock/snowflock/allocator"
	"github.com/snowflock/snowflock/egosf/guestproto"
)

// hostClones are the clone IDs placed on one other host.
type hostClones struct {
	host, address string
	ids           []int
}

// place deals clone IDs 1..m-1 to the ticket's slots: this host's slots
// first (no memory crosses the network for them), then the others in the
// allocation's order, several per host as its slots allow.
func (s *Service) place(slots []allocator.Slot, m int) (local []int, remote []hostClones) {
	ordered := append([]allocator.Slot(nil), slots...)
	sort.SliceStable(ordered, func(i, j int) bool {
		return ordered[i].Host == s.cfg.Host && ordered[j].Host != s.cfg.Host
	})
	k := 1
	for _, sl := range ordered {
		if k >= m {
			break
		}
		var ids []int
		for c := 0; c < sl.Count && k < m; c++ {
			ids = append(ids, k)
			k++
		}
		if sl.Host == s.cfg.Host || s.cfg.Peers == nil {
			local = append(local, ids...)
			continue
		}
		remote = append(remote, hostClones{host: sl.Host, address: s.peerAddress(sl), ids: ids})
	}
	// A ticket granted without slots (n = 1) or short of them keeps the
	// rest here.
	for ; k < m; k++ {
		local = append(local, k)
	}
	return local, remote
}

// peerAddress is the daemon API address of the host of slot sl: its
// address with this host's API port.
func (s *Service) peerAddress(sl allocator.Slot) string {
	_, port, err := net.SplitHostPort(s.cfg.Address)
	if err != nil || sl.Address == "" {
		return sl.Address
	}
	return net.JoinHostPort(sl.Address, port)
}

// cloneHostname is clone k's host name: the parent's, the family's last
// four characters, k.
func cloneHostname(parent, family string, k int) string {
	host := fmt.Sprintf("%s-%s-%d", parent, family[len(family)-4:], k)
	if len(host) > 63 {
		host = host[len(host)-63:]
	}
	return host
}

// startRemote starts the clones placed on other hosts: the family's memory
// server first, then one StartClones call per host, in parallel.
func (s *Service) startRemote(ctx context.Context, t *ticket, cp *CheckpointRecord, parent VMRecord, remote []hostClones, m int) ([]VMRecord, error) {
	ep, err := s.serveFamily(ctx, cp)
	if err != nil {
		return nil, err
	}
	desc, err := os.ReadFile(cp.Descriptor)
	if err != nil {
		return nil, fmt.Errorf("descriptor: %w", err)
	}
	type result struct {
		recs []VMRecord
		err  error
	}
	results := make(chan result, len(remote))
	for _, hc := range remote {
		go func() {
			req := RemoteClones{
				Ticket: t.rec.ID, ParentHost: s.cfg.Address, ParentVM: parent.ID, Family: cp.Family,
				Descriptor: desc, Memory: ep, CPUs: parent.Spec.CPUs, MemoryMiB: parent.Spec.MemoryMiB,
			}
			for _, k := range hc.ids {
				host := cloneHostname(parent.Hostname, cp.Family, k)
				identity := &guestproto.Identity{Hostname: host, Seed: randomBytes(32)}
				rc := RemoteClone{CloneID: k, Hostname: host, Identity: identity}
				if cp.Request != 0 {
					rc.Resume = &guestproto.Message{ID: cp.Request, Op: cp.Op, CloneID: k, Granted: m, Checkpoint: cp.ID, Identity: identity}
				}
				req.Clones = append(req.Clones, rc)
			}
			recs, err := s.cfg.Peers.StartClones(ctx, hc.address, req)
			if err != nil {
				err = fmt.Errorf("clones %v on %s: %w", hc.ids, hc.host, err)
			}
			results <- result{recs, err}
		}()
	}
	var all []VMRecord
	var errs []error
	for range remote {
		r := <-results
		all = append(all, r.recs...)
		if r.err != nil {
			errs = append(errs, r.err)
		}
	}
	s.mu.Lock()
	if t.rec.Remote == nil {
		t.rec.Remote = map[string]RemoteRef{}
	}
	for _, r := range all {
		for _, hc := range remote {
			if slices.Contains(hc.ids, r.CloneID) {
				t.rec.Remote[r.ID] = RemoteRef{Address: hc.address, CloneID: r.CloneID}
			}
		}
	}
	s.mu.Unlock()
	if len(errs) > 0 {
		return all, fmt.Errorf("%v", errs)
	}
	return all, nil
}

// killRemote stops the clones of ticket on the given hosts.
func (s *Service) killRemote(ctx context.Context, ticket string, remote []hostClones) {
	for _, hc := range remote {
		if err := s.cfg.Peers.KillClones(ctx, hc.address, ticket); err != nil {
			s.log.Warn().Str("host", hc.host).Str("ticket", ticket).Err(err).Msg("kill remote clones")
		}
	}
}

// AcceptClones starts, on this host, clones of a family whose parent runs
// on another host: their memory comes on demand from the parent host's
// memory server through this host's tap of the family.
func (s *Service) AcceptClones(ctx context.Context, req RemoteClones) ([]VMRecord, error) {
	if s.closed() {
		return nil, errClosed
	}
	if len(req.Clones) == 0 || req.Ticket == "" || req.Family == "" || req.ParentHost == "" {
		return nil, fmt.Errorf("start clones: ticket, family, parent host and clones are required: %w", ErrInvalidArgument)
	}
	tap, cp, err := s.attachFamily(ctx, req)
	if err != nil {
		return nil, err
	}
	var out []VMRecord
	// fail undoes a partial start: the clones started are stopped (each
	// gives back its use of the tap), and the uses taken for the clones
	// never started are given back, so that the last one unmounts it.
	fail := func(err error) ([]VMRecord, error) {
		for range len(req.Clones) - len(out) {
			s.releaseTap(req.Family)
		}
		for _, r := range out {
			if e, lerr := s.lookupVM(r.ID); lerr == nil {
				s.removeVM(context.WithoutCancel(ctx), e, "clone failed")
			}
		}
		return nil, err
	}
	for _, c := range req.Clones {
		if err := checkName(c.Hostname); err != nil {
			return fail(err)
		}
		rec := VMRecord{
			ID: newID("vm-"), Name: c.Hostname, Hostname: c.Hostname, Role: RoleClone, State: StateStarting,
			Spec:   VMSpec{CPUs: req.CPUs, MemoryMiB: req.MemoryMiB, Hostname: c.Hostname, MemoryPath: tap.path()},
			Parent: req.ParentVM, ParentHost: req.ParentHost, Ticket: req.Ticket, CloneID: c.CloneID,
			Family: req.Family, Created: time.Now(), Resume: c.Resume,
		}
		start := time.Now()
		e, err := s.launch(ctx, rec, func(ctx context.Context, spec VMSpec) (VM, error) {
			return s.cfg.Backend.Restore(ctx, spec, cp)
		})
		if err != nil {
			return fail(fmt.Errorf("clone %d: %w", c.CloneID, err))
		}
		e.mu.Lock()
		e.rec.StartMS = ms(time.Since(start))
		r := e.rec
		e.mu.Unlock()
		s.store.put(bucketVMs, r.ID, r)
		if c.Resume == nil && c.Identity != nil {
			id := c.Identity
			s.goBackground(func() { s.sendIdentity(e, id) })
		}
		out = append(out, r)
	}
	return out, nil
}

// KillTicketClones stops this host's clones of ticket (for a parent on
// another host).
func (s *Service) KillTicketClones(ctx context.Context, ticket string) int {
	var n int
	for _, e := range s.vmsOfTicket(ticket) {
		s.removeVM(ctx, e, "killed")
		n++
	}
	return n
}

// RemoteCloneEnded records the end of a clone that ran on another host.
func (s *Service) RemoteCloneEnded(ticketID, vm string, exit Exit) error {
	if _, err := s.lookupTicket(ticketID, ""); err != nil {
		return err
	}
	s.cloneGone(VMRecord{ID: vm, Ticket: ticketID, CloneID: exit.CloneID}, exit)
	return nil
}

// reportEnded tells a clone's parent host that it ended, retrying for a
// while: the parent's sf_join waits for it.
func (s *Service) reportEnded(rec VMRecord, exit Exit) {
	s.goBackground(func() {
		delay := 100 * time.Millisecond
		for attempt := 0; attempt < 20; attempt++ {
			ctx, cancel := context.WithTimeout(s.ctx, 10*time.Second)
			err := s.cfg.Peers.CloneEnded(ctx, rec.ParentHost, rec.Ticket, rec.ID, exit)
			cancel()
			if err == nil || isGone(err) || s.closed() {
				return
			}
			s.log.Warn().Str("vm", rec.ID).Str("parent_host", rec.ParentHost).Err(err).Msg("report clone end")
			time.Sleep(delay)
			delay = min(2*delay, 5*time.Second)
		}
	})
}

// familyDir is where this host keeps a family's descriptor and tap.
func (s *Service) familyDir(family string) string {
	return filepath.Join(s.cfg.StateDir, "families", family)
}
