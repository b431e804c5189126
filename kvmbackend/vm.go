package kvmbackend

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/snowflock/snowflock/clonesvc"
	"github.com/snowflock/snowflock/kvmbackend/qmp"
)

// VM is one QEMU process.
type VM struct {
	l    launch
	log  zerolog.Logger
	proc *process
	mon  *qmp.Monitor
	// started is how long the start took: launch → QMP ready (Start), or
	// launch → running (Restore).
	started time.Duration

	mu      sync.Mutex // guards channel and destroyed
	channel net.Conn
	// destroyed is set once Destroy has removed the VM.
	destroyed bool
}

var _ clonesvc.VM = (*VM)(nil)

func (b *Backend) newVM(l launch) *VM {
	return &VM{l: l, log: b.log.With().Str("vm", l.ID).Logger()}
}

// Started is how long the VM took to start: for a clone, from launching
// QEMU until the guest runs again.
func (v *VM) Started() time.Duration { return v.started }

// PID is the QEMU process's id.
func (v *VM) PID() int { return v.proc.pid }

// ID is the spec's ID.
func (v *VM) ID() string { return v.l.ID }

// ConsolePath is the file receiving the guest's serial console.
func (v *VM) ConsolePath() string { return filepath.Join(v.l.Dir, fileConsole) }

// Done is closed when QEMU has exited.
func (v *VM) Done() <-chan struct{} { return v.proc.done }

// Record is the VM's durable state for Attach.
func (v *VM) Record() clonesvc.Record {
	st, _ := json.Marshal(recordState{
		ID: v.l.ID, Dir: v.l.Dir, PID: v.proc.pid, StartTime: v.proc.start,
		MemPath: v.l.MemPath, Share: v.l.Share, Machine: v.l.machine, Hostname: v.l.Hostname,
	})
	return clonesvc.Record{Backend: Name, Version: recordVersion, State: st}
}

// failed wraps an error of QEMU, with the end of its log if it died.
func (v *VM) failed(err error) error {
	select {
	case <-v.proc.done:
		return fmt.Errorf("kvm: VM %s: %w: %w (QEMU exited: %s)", v.l.ID, clonesvc.ErrVMFailed, err, v.logTail())
	default:
		return fmt.Errorf("kvm: VM %s: %w: %w", v.l.ID, clonesvc.ErrVMFailed, err)
	}
}

// logTail is the end of QEMU's own output.
func (v *VM) logTail() string {
	f, err := os.Open(filepath.Join(v.l.Dir, fileLog))
	if err != nil {
		return "no log"
	}
	defer f.Close()
	const tail = 2048
	if fi, err := f.Stat(); err == nil && fi.Size() > tail {
		f.Seek(fi.Size()-tail, io.SeekStart)
	}
	b, _ := io.ReadAll(io.LimitReader(f, tail))
	return strings.TrimSpace(string(b))
}

// connect opens the QMP monitor, waiting for QEMU to create its socket.
func (v *VM) connect(ctx context.Context) error {
	path := filepath.Join(v.l.Dir, fileQMP)
	mon, err := retryDial(ctx, fileQMP, v.proc.done, func() (*qmp.Monitor, error) { return qmp.Dial(ctx, path) })
	if err != nil {
		// QEMU closing the socket is usually QEMU exiting: give it a moment
		// so that the error carries its last words.
		select {
		case <-v.proc.done:
		case <-time.After(2 * time.Second):
		}
		return v.failed(err)
	}
	v.mon = mon
	return nil
}

// execute runs a QMP command; errors wrap ErrVMFailed.
func (v *VM) execute(ctx context.Context, cmd string, args, result any) error {
	if err := v.mon.Execute(ctx, cmd, args, result); err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("kvm: VM %s: %w", v.l.ID, err)
		}
		return v.failed(err)
	}
	return nil
}

// running says whether the guest's vCPUs run.
func (v *VM) running(ctx context.Context) (bool, error) {
	var st struct {
		Running bool `json:"running"`
	}
	err := v.execute(ctx, "query-status", nil, &st)
	return st.Running, err
}

func (v *VM) setIgnoreShared(ctx context.Context, on bool) error {
	return v.execute(ctx, "migrate-set-capabilities", map[string]any{
		"capabilities": []map[string]any{{"capability": "x-ignore-shared", "state": on}},
	}, nil)
}

// waitMigration polls query-migrate until the migration (outgoing or
// incoming) completed.
func (v *VM) waitMigration(ctx context.Context) error {
	delay := 500 * time.Microsecond
	for {
		var st struct {
			Status    string `json:"status"`
			ErrorDesc string `json:"error-desc"`
		}
		if err := v.execute(ctx, "query-migrate", nil, &st); err != nil {
			return err
		}
		switch st.Status {
		case "completed":
			return nil
		case "failed", "cancelled":
			return v.failed(fmt.Errorf("migration %s: %s", st.Status, st.ErrorDesc))
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("kvm: VM %s: migration: %w", v.l.ID, ctx.Err())
		case <-time.After(delay):
		}
		delay = min(delay*2, 10*time.Millisecond)
	}
}

// Pause stops the guest's vCPUs.
func (v *VM) Pause(ctx context.Context) error { return v.execute(ctx, "stop", nil, nil) }

// Resume continues the guest's vCPUs.
func (v *VM) Resume(ctx context.Context) error { return v.execute(ctx, "cont", nil, nil) }

// Checkpoint freezes the VM into dir: the device state (dir/state, saved
// with x-ignore-shared: no RAM in it) and a copy of its RAM (dir/mem, zero
// pages left as holes). The RAM is copied first while the guest runs; the
// guest is then paused for the save and for bringing the copy up to date,
// and resumed after (unless it was paused before).
func (v *VM) Checkpoint(ctx context.Context, dir string) (_ *clonesvc.Checkpoint, err error) {
	if !v.l.Share {
		return nil, fmt.Errorf("kvm: VM %s: %w: a clone's RAM is a private copy-on-write mapping, not a file: checkpointing a clone is not supported yet", v.l.ID, clonesvc.ErrInvalidArgument)
	}
	if !filepath.IsAbs(dir) {
		return nil, invalid("checkpoint directory %q is not absolute", dir)
	}
	t0 := time.Now()
	statePath, memPath := filepath.Join(dir, "state"), filepath.Join(dir, "mem")
	defer func() {
		if err != nil {
			os.Remove(statePath)
			os.Remove(memPath)
		}
	}()
	wasRunning, err := v.running(ctx)
	if err != nil {
		return nil, err
	}
	if err := v.setIgnoreShared(ctx, true); err != nil {
		return nil, err
	}
	size := int64(v.l.MemoryMiB) << 20

	// A running guest's RAM is copied once while it runs; the pause then
	// only compares and rewrites what changed since (refreezeMemory).
	precopied := false
	if wasRunning {
		if _, _, err := freezeMemory(ctx, v.l.MemPath, memPath, size); err != nil {
			return nil, fmt.Errorf("kvm: VM %s: %w", v.l.ID, err)
		}
		precopied = true
	}
	pausedAt := time.Now()
	if err := v.execute(ctx, "stop", nil, nil); err != nil {
		return nil, err
	}
	zero, fst, err := v.saveFrozen(ctx, statePath, memPath, size, precopied)
	if wasRunning {
		// Resume even if the checkpoint failed.
		if cerr := v.execute(context.WithoutCancel(ctx), "cont", nil, nil); cerr != nil && err == nil {
			err = cerr
		}
	}
	paused := time.Since(pausedAt)
	if err != nil {
		return nil, err
	}
	mach, err := json.Marshal(v.l.machine)
	if err != nil {
		return nil, fmt.Errorf("kvm: VM %s: machine: %w", v.l.ID, err)
	}
	cp := &clonesvc.Checkpoint{
		Backend:     Name,
		Machine:     mach,
		DeviceState: statePath,
		Memory: []clonesvc.MemoryImage{{
			Name: "mem", Path: memPath, Size: uint64(size), PageSize: pageSize, Zero: zero,
		}},
		Paused: paused,
		Took:   time.Since(t0),
	}
	var stateSize int64
	if fi, serr := os.Stat(statePath); serr == nil {
		stateSize = fi.Size()
	}
	v.log.Info().Dur("paused", cp.Paused).Dur("took", cp.Took).Int64("state_bytes", stateSize).
		Int64("ram_data", fst.Data).Int64("ram_written", fst.Written).Int("zero_pages", fst.ZeroPages).
		Dur("freeze", fst.Took).Msg("checkpoint")
	return cp, nil
}

// saveFrozen saves the paused VM's device state to statePath while it
// copies its RAM to memPath (or, if precopied, brings the copy there up to
// date).
func (v *VM) saveFrozen(ctx context.Context, statePath, memPath string, size int64, precopied bool) ([]byte, freezeStats, error) {
	type frozen struct {
		zero []byte
		st   freezeStats
		err  error
	}
	fctx, cancel := context.WithCancel(ctx)
	defer cancel()
	fc := make(chan frozen, 1)
	go func() {
		var f frozen
		if precopied {
			f.zero, f.st, f.err = refreezeMemory(fctx, v.l.MemPath, memPath, size)
		} else {
			f.zero, f.st, f.err = freezeMemory(fctx, v.l.MemPath, memPath, size)
		}
		fc <- f
	}()
	migErr := v.execute(ctx, "migrate", map[string]string{"uri": "exec:cat > " + shellQuote(statePath)}, nil)
	if migErr == nil {
		migErr = v.waitMigration(ctx)
	}
	if migErr != nil {
		cancel()
	}
	f := <-fc
	if migErr != nil {
		return nil, f.st, fmt.Errorf("save device state: %w", migErr)
	}
	if f.err != nil {
		return nil, f.st, fmt.Errorf("kvm: VM %s: %w", v.l.ID, f.err)
	}
	return f.zero, f.st, nil
}

// DialChannel connects to the guest channel, closing any earlier
// connection.
func (v *VM) DialChannel(ctx context.Context) (io.ReadWriteCloser, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", filepath.Join(v.l.Dir, fileGuest))
	if err != nil {
		return nil, v.failed(fmt.Errorf("guest channel: %w", err))
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.channel != nil {
		v.channel.Close()
	}
	v.channel = c
	return c, nil
}

// quitGrace is how long Destroy waits for QEMU to quit before SIGKILL.
const quitGrace = 3 * time.Second

// Destroy stops QEMU (quit, then SIGKILL after a grace period) and removes
// the VM's files (not a checkpoint's).
func (v *VM) Destroy(ctx context.Context) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.destroyed {
		return nil
	}
	if v.channel != nil {
		v.channel.Close()
		v.channel = nil
	}
	if err := v.stop(ctx, quitGrace); err != nil {
		return err
	}
	v.removeFiles()
	v.destroyed = true
	v.log.Info().Msg("destroyed")
	return nil
}

// stop ends QEMU: quit over QMP and wait up to grace, then SIGKILL and
// wait for the exit.
func (v *VM) stop(ctx context.Context, grace time.Duration) error {
	if v.mon != nil {
		defer v.mon.Close()
	}
	select {
	case <-v.proc.done:
		return nil
	default:
	}
	if v.mon != nil && grace > 0 {
		qctx, cancel := context.WithTimeout(ctx, grace)
		defer cancel()
		v.mon.Execute(qctx, "quit", nil, nil) // the reply may be lost as QEMU exits
		select {
		case <-v.proc.done:
			return nil
		case <-qctx.Done():
		}
	}
	if err := v.proc.kill(); err != nil {
		select {
		case <-v.proc.done:
			return nil
		default:
		}
		return fmt.Errorf("kvm: VM %s: kill pid %d: %w", v.l.ID, v.proc.pid, err)
	}
	select {
	case <-v.proc.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("kvm: VM %s: waiting for pid %d to exit: %w", v.l.ID, v.proc.pid, ctx.Err())
	}
}

// removeFiles removes what the backend created in the VM's directory.
func (v *VM) removeFiles() {
	names := []string{fileQMP, fileGuest, fileConsole, fileLog, filePID}
	for _, n := range names {
		os.Remove(filepath.Join(v.l.Dir, n))
	}
	if v.l.Share && filepath.Dir(v.l.MemPath) == v.l.Dir {
		// A parent's RAM file; a clone's is the checkpoint's, not ours.
		if err := os.Remove(v.l.MemPath); err != nil && !errors.Is(err, os.ErrNotExist) {
			v.log.Warn().Err(err).Msg("remove memory file")
		}
	}
}
