package clonesvc

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/snowflock/snowflock/egosf/guestproto"
)

// vmEntry is one VM the service owns.
type vmEntry struct {
	mu  sync.Mutex
	rec VMRecord
	// inflightReqs are the guest requests being handled now.
	inflightReqs map[uint64]bool
	// stopping is set when the service destroys the VM on purpose.
	stopping bool
	// ended is set once a clone's end was recorded (or reported to its
	// parent's host): a clone ends once.
	ended bool

	vm VM
	ch *channel
}

func (e *vmEntry) id() string { return e.rec.ID }

func (e *vmEntry) record() VMRecord {
	e.mu.Lock()
	defer e.mu.Unlock()
	r := e.rec
	return r
}

func (e *vmEntry) inflight(id uint64) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.inflightReqs[id]
}

// begin marks guest request id as being handled; false if it already is
// (the agent re-sent it).
func (e *vmEntry) begin(id uint64) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.inflightReqs[id] {
		return false
	}
	e.inflightReqs[id] = true
	return true
}

// markEnded reports whether this is the first end of the clone.
func (e *vmEntry) markEnded() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	first := !e.ended
	e.ended = true
	return first
}

func (e *vmEntry) end(id uint64) {
	e.mu.Lock()
	delete(e.inflightReqs, id)
	e.mu.Unlock()
}

// StartVM boots a new VM. With waitReady it returns once the guest agent
// answered; otherwise once the VM's process runs.
func (s *Service) StartVM(ctx context.Context, spec VMSpec, waitReady bool) (VMRecord, error) {
	if s.closed() {
		return VMRecord{}, errClosed
	}
	if spec.CPUs < 0 || spec.MemoryMiB < 0 {
		return VMRecord{}, fmt.Errorf("cpus and memory must not be negative: %w", ErrInvalidArgument)
	}
	if spec.ID != "" || spec.Dir != "" {
		return VMRecord{}, fmt.Errorf("a VM's id and directory are chosen by sfld: %w", ErrInvalidArgument)
	}
	fillSpec(&spec, s.cfg.Defaults)
	id := newID("vm-")
	name := spec.Hostname
	if name == "" {
		name = id
	}
	if err := checkName(name); err != nil {
		return VMRecord{}, err
	}
	spec.ID, spec.Hostname = id, name
	rec := VMRecord{ID: id, Name: name, Hostname: name, Role: RoleRoot, State: StateStarting, Spec: spec, Created: time.Now()}
	e, err := s.launch(ctx, rec, func(ctx context.Context, spec VMSpec) (VM, error) {
		return s.cfg.Backend.Start(ctx, spec)
	})
	if err != nil {
		return VMRecord{}, err
	}
	if waitReady {
		if err := e.ch.waitReady(ctx); err != nil {
			return e.record(), err
		}
	}
	return e.record(), nil
}

// launch records a VM as starting, starts it with start, records it as
// running and connects its guest channel. On failure nothing is left: no
// process, directory or record.
func (s *Service) launch(ctx context.Context, rec VMRecord, start func(context.Context, VMSpec) (VM, error)) (*vmEntry, error) {
	rec.Dir = filepath.Join(s.cfg.StateDir, "vms", rec.ID)
	rec.Spec.ID, rec.Spec.Dir = rec.ID, rec.Dir
	if err := os.Mkdir(rec.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("vm %s directory: %w", rec.ID, err)
	}
	undo := func() {
		s.store.delete(bucketVMs, rec.ID)
		os.RemoveAll(rec.Dir)
	}
	if err := s.store.put(bucketVMs, rec.ID, rec); err != nil {
		undo()
		return nil, err
	}
	vm, err := start(ctx, rec.Spec)
	if err != nil {
		cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		s.cfg.Backend.Cleanup(cctx, rec.Dir)
		cancel()
		undo()
		return nil, fmt.Errorf("start vm %s: %w", rec.ID, err)
	}
	br := vm.Record()
	rec.Backend = &br
	rec.State = StateRunning
	rec.Console = vm.ConsolePath()
	if err := s.store.put(bucketVMs, rec.ID, rec); err != nil {
		vm.Destroy(context.Background())
		undo()
		return nil, err
	}
	return s.adopt(rec, vm), nil
}

// adopt makes a running VM the service's: registry, channel, watcher.
func (s *Service) adopt(rec VMRecord, vm VM) *vmEntry {
	e := &vmEntry{rec: rec, vm: vm, inflightReqs: map[uint64]bool{}}
	e.ch = newChannel(s, e)
	s.mu.Lock()
	s.vms[rec.ID] = e
	s.mu.Unlock()
	s.goBackground(e.ch.run)
	s.goBackground(func() { s.watch(e) })
	return e
}

// watch waits for a VM's process to end. A VM that ends on its own (the
// guest powered off, QEMU crashed) is cleaned up like a stopped one.
func (s *Service) watch(e *vmEntry) {
	select {
	case <-e.vm.Done():
	case <-s.ctx.Done():
		return
	}
	e.mu.Lock()
	purposeful := e.stopping
	e.mu.Unlock()
	if purposeful {
		return
	}
	s.log.Warn().Str("vm", e.id()).Msg("vm exited on its own")
	s.removeVM(context.Background(), e, "vm exited")
}

// agentReady records that a VM's agent answered.
func (s *Service) agentReady(e *vmEntry, agent string) {
	e.mu.Lock()
	first := e.rec.State != StateReady
	e.rec.State = StateReady
	rec := e.rec
	e.mu.Unlock()
	if first {
		s.log.Info().Str("vm", rec.ID).Str("agent", agent).Msg("guest agent ready")
		s.store.put(bucketVMs, rec.ID, rec)
	}
}

// lookupVM returns the VM called id (ID or name).
func (s *Service) lookupVM(id string) (*vmEntry, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.vms[id]; ok {
		return e, nil
	}
	for _, e := range s.vms {
		if e.rec.Name == id {
			return e, nil
		}
	}
	return nil, fmt.Errorf("no VM %q on this host: %w", id, ErrNotFound)
}

// ListVMs returns every VM, oldest first.
func (s *Service) ListVMs() []VMRecord {
	s.mu.Lock()
	out := make([]VMRecord, 0, len(s.vms))
	for _, e := range s.vms {
		r := e.record()
		if ft, ok := s.taps[r.Family]; ok && r.ParentHost != "" {
			r.FetchedBytes = ft.tap.Stats().BytesFetched
		}
		out = append(out, r)
	}
	s.mu.Unlock()
	slices.SortFunc(out, func(a, b VMRecord) int { return a.Created.Compare(b.Created) })
	return out
}

// StopVM stops a VM and removes it. A clone's slot is given back when its
// ticket is joined or killed; a root VM's tickets die with it.
func (s *Service) StopVM(ctx context.Context, id string) error {
	e, err := s.lookupVM(id)
	if err != nil {
		return err
	}
	return s.removeVM(ctx, e, "stopped by operator")
}

// removeVM destroys a VM, deletes its record and settles what depended on
// it: a clone's exit is recorded in its ticket; a parent's tickets are
// killed and its checkpoints deleted.
func (s *Service) removeVM(ctx context.Context, e *vmEntry, reason string) error {
	e.mu.Lock()
	e.stopping = true
	e.mu.Unlock()
	e.ch.close()
	err := e.vm.Destroy(ctx)
	s.mu.Lock()
	delete(s.vms, e.id())
	s.mu.Unlock()
	rec := e.record()
	s.store.delete(bucketVMs, rec.ID)
	os.RemoveAll(rec.Dir)
	if rec.Role == RoleClone && rec.Ticket != "" {
		s.cloneEnded(e, Exit{CloneID: rec.CloneID, Killed: true, Reason: reason})
	}
	if rec.ParentHost != "" {
		s.releaseTap(rec.Family)
	}
	s.ownerGone(ctx, rec.ID)
	if err != nil {
		return fmt.Errorf("stop vm %s: %w", rec.ID, err)
	}
	return nil
}

// Exec runs args in a VM through its agent.
func (s *Service) Exec(ctx context.Context, id string, args []string) (exitCode int, output []byte, err error) {
	if len(args) == 0 {
		return 0, nil, fmt.Errorf("exec needs a command: %w", ErrInvalidArgument)
	}
	e, err := s.lookupVM(id)
	if err != nil {
		return 0, nil, err
	}
	if err := e.ch.waitReady(ctx); err != nil {
		return 0, nil, err
	}
	r, err := e.ch.call(ctx, &guestproto.Message{Op: guestproto.OpExec, Args: args})
	if err != nil {
		return 0, nil, err
	}
	return r.ExitCode, r.Output, nil
}

// fillSpec fills spec's zero fields from defaults.
func fillSpec(spec *VMSpec, d VMSpec) {
	if spec.CPUs == 0 {
		spec.CPUs = d.CPUs
	}
	if spec.MemoryMiB == 0 {
		spec.MemoryMiB = d.MemoryMiB
	}
	if spec.Kernel == "" {
		spec.Kernel = d.Kernel
	}
	if spec.Initrd == "" {
		spec.Initrd = d.Initrd
	}
	if spec.Append == "" {
		spec.Append = d.Append
	}
}

// checkName accepts host names: letters, digits and '-', 1–63 long.
func checkName(n string) error {
	if len(n) == 0 || len(n) > 63 || strings.HasPrefix(n, "-") ||
		strings.IndexFunc(n, func(r rune) bool {
			return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-')
		}) >= 0 {
		return fmt.Errorf("VM name %q: use 1 to 63 letters, digits and '-': %w", n, ErrInvalidArgument)
	}
	return nil
}
