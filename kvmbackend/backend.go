// Package kvmbackend runs VMs under QEMU (KVM or TCG acceleration), driven
// over QMP, with guest RAM in a file that checkpoints freeze and clones map
// copy-on-write.
package kvmbackend

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/snowflock/snowflock/clonesvc"
)

// Name is the backend's configuration name.
const Name = "kvm"

// Backend starts, restores and reattaches QEMU VMs.
type Backend struct {
	cfg      Config
	qemu     string // resolved binary
	launcher string // resolved Config.Launcher ("" when NoTHP is never)
	log      zerolog.Logger
}

var _ clonesvc.Backend = (*Backend)(nil)

// New checks cfg and the QEMU binary and returns a backend.
func New(cfg Config) (*Backend, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("kvm backend: %w: %w", clonesvc.ErrInvalidArgument, err)
	}
	cfg = cfg.withDefaults()
	bin, err := exec.LookPath(cfg.QEMU)
	if err != nil {
		return nil, fmt.Errorf("kvm backend: qemu binary %q: %w (install qemu-system-x86)", cfg.QEMU, err)
	}
	launcher, err := resolveLauncher(cfg)
	if err == nil && launcher != "" {
		err = checkLauncher(launcher, bin)
	}
	if err != nil {
		return nil, fmt.Errorf("kvm backend: %w", err)
	}
	return &Backend{cfg: cfg, qemu: bin, launcher: launcher, log: cfg.Logger.With().Str("backend", Name).Logger()}, nil
}

// Name returns "kvm".
func (b *Backend) Name() string { return Name }

// invalid wraps a bad request.
func invalid(format string, a ...any) error {
	return fmt.Errorf("kvm: %w: %s", clonesvc.ErrInvalidArgument, fmt.Sprintf(format, a...))
}

// checkSpec validates what Start and Restore share in a spec.
func checkSpec(spec clonesvc.VMSpec) error {
	if err := spec.Check(); err != nil {
		return fmt.Errorf("kvm: %w", err)
	}
	return nil
}

// Start boots a new VM.
func (b *Backend) Start(ctx context.Context, spec clonesvc.VMSpec) (clonesvc.VM, error) {
	if err := checkSpec(spec); err != nil {
		return nil, err
	}
	if err := checkSize(spec.CPUs, spec.MemoryMiB); err != nil {
		return nil, invalid("VM %s: %v", spec.ID, err)
	}
	boot, err := b.cfg.Boot.Apply(spec)
	if err != nil {
		return nil, fmt.Errorf("kvm: VM %s: %w", spec.ID, err)
	}
	m := machine{
		Type: b.cfg.Machine, Accel: b.cfg.Accel,
		CPUs: boot.CPUs, MemoryMiB: boot.MemoryMiB,
		Kernel: boot.Kernel, Initrd: boot.Initrd, Append: boot.Append,
	}
	if err := m.validate(); err != nil {
		return nil, invalid("VM %s: %v", spec.ID, err)
	}
	if err := boot.CheckFiles(); err != nil {
		return nil, fmt.Errorf("kvm: VM %s: %w", spec.ID, err)
	}
	vm, undo, err := b.launch(ctx, launch{
		machine: m, ID: spec.ID, Dir: spec.Dir, Hostname: spec.Hostname,
		MemPath: filepath.Join(spec.Dir, fileMem), Share: true,
		NoTHP: b.cfg.NoTHP == NoTHPAlways,
	})
	if err != nil {
		return nil, err
	}
	undo.release()
	b.log.Info().Str("vm", spec.ID).Int("pid", vm.proc.pid).Dur("took", vm.started).Msg("started")
	return vm, nil
}

// Restore starts a clone from cp: the same machine, RAM mapped
// copy-on-write from the frozen image, device state loaded; it is running
// when Restore returns.
func (b *Backend) Restore(ctx context.Context, spec clonesvc.VMSpec, cp *clonesvc.Checkpoint) (clonesvc.VM, error) {
	if err := checkSpec(spec); err != nil {
		return nil, err
	}
	if cp == nil || cp.Backend != Name {
		return nil, invalid("VM %s: not a checkpoint of the kvm backend", spec.ID)
	}
	m, err := decodeMachine(cp.Machine)
	if err != nil {
		return nil, invalid("VM %s: checkpoint: %v", spec.ID, err)
	}
	if len(cp.Memory) != 1 || cp.Memory[0].Name != "mem" {
		return nil, invalid("VM %s: checkpoint has %d memory images, want one named mem", spec.ID, len(cp.Memory))
	}
	img := cp.Memory[0]
	if img.Size != uint64(m.MemoryMiB)<<20 {
		return nil, invalid("VM %s: memory image of %d bytes for a machine of %d MiB", spec.ID, img.Size, m.MemoryMiB)
	}
	memPath := img.Path
	if spec.MemoryPath != "" {
		memPath = spec.MemoryPath // the same image, filled on demand
	}
	if fi, err := os.Stat(memPath); err != nil || !fi.Mode().IsRegular() || uint64(fi.Size()) != img.Size {
		return nil, invalid("VM %s: memory image %q is missing or not %d bytes", spec.ID, memPath, img.Size)
	}
	if err := clonesvc.CheckFile("device state", cp.DeviceState); err != nil || cp.DeviceState == "" {
		return nil, invalid("VM %s: device state %q is not a readable file", spec.ID, cp.DeviceState)
	}
	if err := (clonesvc.Boot{Kernel: m.Kernel, Initrd: m.Initrd}).CheckFiles(); err != nil {
		return nil, fmt.Errorf("kvm: VM %s: %w", spec.ID, err)
	}
	return b.restore(ctx, launch{
		machine: m, ID: spec.ID, Dir: spec.Dir, Hostname: spec.Hostname,
		MemPath: memPath, Share: false, Incoming: true,
		NoTHP: b.cfg.NoTHP == NoTHPAlways || (b.cfg.NoTHP == NoTHPAuto && spec.MemoryPath != ""),
	}, cp.DeviceState, true)
}

// restore launches l (Incoming), loads the device state from statePath
// and runs the VM. ignoreShared must match how the state was saved.
func (b *Backend) restore(ctx context.Context, l launch, statePath string, ignoreShared bool) (*VM, error) {
	t0 := time.Now()
	vm, undo, err := b.launch(ctx, l)
	if err != nil {
		return nil, err
	}
	defer undo.run()
	if err := vm.setIgnoreShared(ctx, ignoreShared); err != nil {
		return nil, err
	}
	if err := vm.execute(ctx, "migrate-incoming", map[string]string{"uri": "exec:cat " + shellQuote(statePath)}, nil); err != nil {
		return nil, err
	}
	if err := vm.waitMigration(ctx); err != nil {
		return nil, fmt.Errorf("load device state %s: %w", statePath, err)
	}
	running, err := vm.running(ctx)
	if err != nil {
		return nil, err
	}
	if !running {
		if err := vm.execute(ctx, "cont", nil, nil); err != nil {
			return nil, err
		}
	}
	launched := vm.started
	vm.started = time.Since(t0)
	undo.release()
	b.log.Info().Str("vm", l.ID).Int("pid", vm.proc.pid).Dur("launch_to_qmp", launched).
		Dur("launch_to_running", vm.started).Msg("restored")
	return vm, nil
}

// launch starts QEMU for l and connects to its QMP socket. The returned
// cleanup kills QEMU and removes its files unless released.
func (b *Backend) launch(ctx context.Context, l launch) (_ *VM, _ *cleanup, err error) {
	t0 := time.Now()
	undo := &cleanup{}
	defer func() {
		if err != nil {
			undo.run()
		}
	}()
	vm := b.newVM(l)
	undo.add(vm.removeFiles)
	logFile, err := os.OpenFile(filepath.Join(l.Dir, fileLog), os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, nil, fmt.Errorf("kvm: VM %s: %w", l.ID, err)
	}
	defer logFile.Close()
	if l.Share {
		// QEMU creates the file; it must not be an old one.
		if err := os.Remove(l.MemPath); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, nil, fmt.Errorf("kvm: VM %s: %w", l.ID, err)
		}
	}
	bin, args := b.command(l)
	p, err := startProcess(bin, args, logFile)
	if err != nil {
		return nil, nil, fmt.Errorf("kvm: VM %s: %w: %w", l.ID, clonesvc.ErrVMFailed, err)
	}
	vm.proc = p
	undo.add(func() { vm.stop(context.Background(), 0) })
	if err := vm.connect(ctx); err != nil {
		return nil, nil, err
	}
	vm.started = time.Since(t0)
	return vm, undo, nil
}

// Record format versions.
const recordVersion = 1

// recordState is a VM's durable state (clonesvc.Record.State).
type recordState struct {
	ID        string  `json:"id"`
	Dir       string  `json:"dir"`
	PID       int     `json:"pid"`
	StartTime uint64  `json:"start_time"`
	MemPath   string  `json:"mem_path"`
	Share     bool    `json:"share"`
	Machine   machine `json:"machine"`
	Hostname  string  `json:"hostname,omitempty"`
}

// decodeRecord parses and validates a VM's record.
func decodeRecord(rec clonesvc.Record) (recordState, error) {
	var st recordState
	if err := rec.Decode(Name, recordVersion, &st); err != nil {
		return st, err
	}
	switch {
	case st.ID == "":
		return st, errors.New("record has no VM id")
	case st.PID <= 0:
		return st, fmt.Errorf("record pid %d", st.PID)
	case !clonesvc.IsVMDir(st.Dir):
		return st, fmt.Errorf("record directory %q is not a clean absolute path", st.Dir)
	case !filepath.IsAbs(st.MemPath):
		return st, fmt.Errorf("record memory path %q is not absolute", st.MemPath)
	}
	if err := clonesvc.CheckHostname(st.Hostname); err != nil {
		return st, err
	}
	return st, st.Machine.validate()
}

// Attach reattaches to a VM from its Record. If the VM's QEMU is gone it
// removes the VM's files and returns an error wrapping ErrNotFound.
func (b *Backend) Attach(ctx context.Context, rec clonesvc.Record) (clonesvc.VM, error) {
	st, err := decodeRecord(rec)
	if err != nil {
		return nil, invalid("attach: %v", err)
	}
	vm := b.newVM(launch{
		machine: st.Machine, ID: st.ID, Dir: st.Dir, Hostname: st.Hostname,
		MemPath: st.MemPath, Share: st.Share,
	})
	p, err := attachProcess(st.PID, st.StartTime)
	if errors.Is(err, errGone) {
		vm.removeFiles()
		return nil, fmt.Errorf("kvm: attach VM %s: %w: %w", st.ID, clonesvc.ErrNotFound, err)
	}
	if err != nil {
		return nil, fmt.Errorf("kvm: attach VM %s: %w", st.ID, err)
	}
	vm.proc = p
	if err := vm.connect(ctx); err != nil {
		select {
		case <-p.done:
			vm.removeFiles()
			return nil, fmt.Errorf("kvm: attach VM %s: %w: %w", st.ID, clonesvc.ErrNotFound, err)
		default:
			return nil, err
		}
	}
	var name struct {
		Name string `json:"name"`
	}
	if err := vm.execute(ctx, "query-name", nil, &name); err != nil {
		vm.mon.Close()
		return nil, err
	}
	if name.Name != st.ID {
		vm.mon.Close()
		return nil, fmt.Errorf("kvm: attach VM %s: %w: pid %d runs VM %q", st.ID, clonesvc.ErrVMFailed, st.PID, name.Name)
	}
	b.log.Info().Str("vm", st.ID).Int("pid", st.PID).Msg("attached")
	return vm, nil
}

// retryDial calls dial until it succeeds, fails otherwise than because
// QEMU has not yet created the socket, QEMU exits (done) or ctx ends.
func retryDial[T any](ctx context.Context, what string, done <-chan struct{}, dial func() (T, error)) (T, error) {
	delay := time.Millisecond
	for {
		c, err := dial()
		if err == nil || !(errors.Is(err, os.ErrNotExist) || errors.Is(err, unix.ECONNREFUSED)) {
			return c, err
		}
		select {
		case <-done:
			return c, fmt.Errorf("QEMU exited before %s accepted connections", what)
		case <-ctx.Done():
			return c, fmt.Errorf("connect to %s: %w", what, ctx.Err())
		case <-time.After(delay):
		}
		delay = min(delay*2, 20*time.Millisecond)
	}
}
