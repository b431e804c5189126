package kvmbackend

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/snowflock/snowflock/clonesvc"
)

// testMemMiB keeps test VMs small.
const testMemMiB = 128

// patternAt is the guest-physical address (= offset in the RAM file) the
// fork-isolation test writes; SeaBIOS leaves it alone.
const patternAt = 64 << 20

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// newBackend returns a backend for test VMs: q35 under TCG with no kernel
// (SeaBIOS finds no boot device and waits), which is enough to start,
// checkpoint, restore, attach and destroy.
func newBackend(t testing.TB, cfg Config) *Backend {
	t.Helper()
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		t.Fatalf("qemu-system-x86_64 not found (%v): run `make deps` or `apt-get install --no-install-recommends qemu-system-x86`", err)
	}
	if cfg.MemoryMiB == 0 {
		cfg.MemoryMiB = testMemMiB
	}
	b, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// startVM starts a VM that is destroyed when the test ends.
func startVM(t testing.TB, b *Backend, id string) *VM {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	vm, err := b.Start(ctx, clonesvc.VMSpec{ID: id, Dir: t.TempDir(), Hostname: id})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { destroy(t, vm) })
	return vm.(*VM)
}

func restoreVM(t testing.TB, b *Backend, id string, cp *clonesvc.Checkpoint) *VM {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	vm, err := b.Restore(ctx, clonesvc.VMSpec{ID: id, Dir: t.TempDir(), Hostname: id}, cp)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { destroy(t, vm) })
	return vm.(*VM)
}

func destroy(t testing.TB, vm clonesvc.VM) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := vm.Destroy(ctx); err != nil {
		t.Errorf("destroy %s: %v", vm.ID(), err)
	}
}

// assertGone fails unless the process has exited.
func assertGone(t *testing.T, vm *VM) {
	t.Helper()
	select {
	case <-vm.Done():
	case <-time.After(30 * time.Second):
		t.Fatalf("QEMU pid %d still running", vm.PID())
	}
	if err := syscall.Kill(vm.PID(), 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("pid %d: kill(0) = %v, want ESRCH (no zombie, no orphan)", vm.PID(), err)
	}
}

// assertEmpty fails if dir holds any file.
func assertEmpty(t *testing.T, dir string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		t.Errorf("stray file %s left in %s", e.Name(), dir)
	}
}

// guestRead reads guest-physical memory through QEMU (pmemsave).
func guestRead(t *testing.T, vm *VM, addr, size int) []byte {
	t.Helper()
	f := filepath.Join(t.TempDir(), "pmem")
	err := vm.execute(testContext(t), "pmemsave", map[string]any{"val": addr, "size": size, "filename": f}, nil)
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(f)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func isRunning(t *testing.T, vm *VM) bool {
	t.Helper()
	r, err := vm.running(testContext(t))
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func page(text string) []byte { return bytes.Repeat([]byte(text), pageSize/len(text)+1)[:pageSize] }

func writeFileAt(t testing.TB, path string, data []byte, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(data, off); err != nil {
		t.Fatal(err)
	}
}

func readFileAt(t testing.TB, path string, size int, off int64) []byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, size)
	if _, err := f.ReadAt(buf, off); err != nil {
		t.Fatal(err)
	}
	return buf
}

func zeroBit(img clonesvc.MemoryImage, addr int) bool {
	p := addr / int(img.PageSize)
	return img.Zero[p/8]&(1<<(p%8)) != 0
}

// TestForkIsolation is the fork property: a clone sees guest memory
// exactly as it was at the checkpoint, never what the parent writes after
// it, while both run.
func TestForkIsolation(t *testing.T) {
	b := newBackend(t, Config{})
	ctx := testContext(t)
	parent := startVM(t, b, "parent")

	// Write pattern A into the parent's guest RAM through its share=on file
	// (the same pages the guest sees) and check QEMU sees it there.
	a, bb := page("snowflock-A "), page("parent-B ")
	writeFileAt(t, parent.l.MemPath, a, patternAt)
	if got := guestRead(t, parent, patternAt, pageSize); !bytes.Equal(got, a) {
		t.Fatalf("parent guest RAM at %#x does not show what was written to its memory file", patternAt)
	}

	cpDir := t.TempDir()
	cp, err := parent.Checkpoint(ctx, cpDir)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("checkpoint: paused %v, took %v", cp.Paused, cp.Took)
	if !isRunning(t, parent) {
		t.Error("parent is not running after the checkpoint")
	}
	if cp.Backend != Name || cp.Paused <= 0 || cp.Took < cp.Paused {
		t.Errorf("checkpoint backend %q paused %v took %v", cp.Backend, cp.Paused, cp.Took)
	}
	if len(cp.Memory) != 1 {
		t.Fatalf("checkpoint has %d memory images", len(cp.Memory))
	}
	img := cp.Memory[0]
	if img.Size != testMemMiB<<20 || img.PageSize != pageSize || len(img.Zero) != testMemMiB<<20/pageSize/8 {
		t.Errorf("memory image size %d page %d bitmap %d bytes", img.Size, img.PageSize, len(img.Zero))
	}
	if zeroBit(img, patternAt) || !zeroBit(img, patternAt+pageSize) {
		t.Errorf("zero bitmap: pattern page zero=%v, the page after it zero=%v; want false, true",
			zeroBit(img, patternAt), zeroBit(img, patternAt+pageSize))
	}
	if fi, err := os.Stat(cp.DeviceState); err != nil || fi.Size() == 0 || fi.Size() > 1<<20 {
		t.Errorf("device state: %v, %v (want 0 < size ≤ 1 MiB: no RAM in it)", fi, err)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(img.Path, &st); err != nil || st.Blocks*512 > int64(img.Size)/2 {
		t.Errorf("frozen image uses %d bytes on disk for %d of RAM (want holes for zero pages), %v", st.Blocks*512, img.Size, err)
	}

	// The parent writes B after the checkpoint.
	writeFileAt(t, parent.l.MemPath, bb, patternAt)

	clone := restoreVM(t, b, "clone1", cp)
	t.Logf("clone launch→running: %v", clone.Started())
	if !isRunning(t, clone) {
		t.Error("clone is not running after Restore")
	}
	if got := guestRead(t, clone, patternAt, pageSize); !bytes.Equal(got, a) {
		t.Errorf("clone reads %.24q at %#x, want the checkpoint's %.24q", got, patternAt, a)
	}
	if got := guestRead(t, clone, patternAt+pageSize, pageSize); !bytes.Equal(got, make([]byte, pageSize)) {
		t.Errorf("clone reads non-zero data in a page that was zero at the checkpoint")
	}
	if got := guestRead(t, parent, patternAt, pageSize); !bytes.Equal(got, bb) {
		t.Errorf("parent reads %.24q, want its own later write", got)
	}
	if got := readFileAt(t, img.Path, pageSize, patternAt); !bytes.Equal(got, a) {
		t.Errorf("frozen image changed after the checkpoint")
	}

	// Clones are distinct VMs: a second clone from the same image runs too.
	clone2 := restoreVM(t, b, "clone2", cp)
	if got := guestRead(t, clone2, patternAt, pageSize); !bytes.Equal(got, a) {
		t.Errorf("second clone reads %.24q, want the checkpoint's", got)
	}

	// Destroy removes the clone's files but not the checkpoint.
	cloneDir := clone.l.Dir
	destroy(t, clone)
	assertGone(t, clone)
	assertEmpty(t, cloneDir)
	if _, err := os.Stat(img.Path); err != nil {
		t.Errorf("destroying a clone removed the checkpoint's image: %v", err)
	}
	if err := clone.Destroy(ctx); err != nil {
		t.Errorf("second Destroy: %v", err)
	}
}

func TestCheckpointKeepsPausedVMPaused(t *testing.T) {
	b := newBackend(t, Config{})
	ctx := testContext(t)
	vm := startVM(t, b, "paused")
	if err := vm.Pause(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := vm.Checkpoint(ctx, t.TempDir()); err != nil {
		t.Fatal(err)
	}
	if isRunning(t, vm) {
		t.Error("a VM paused before its checkpoint runs after it")
	}
	if err := vm.Resume(ctx); err != nil {
		t.Fatal(err)
	}
	if !isRunning(t, vm) {
		t.Error("Resume after the checkpoint did not run the VM")
	}
}

// TestAttachAfterRestart: a new Backend (as after an sfld restart) finds
// the VM again from its Record.
func TestAttachAfterRestart(t *testing.T) {
	ctx := testContext(t)
	vm := startVM(t, newBackend(t, Config{}), "survivor")
	rec := vm.Record()
	// sfld dies: its QMP connection closes (QEMU serves one at a time).
	vm.mon.Close()

	b2 := newBackend(t, Config{})
	got, err := b2.Attach(ctx, rec)
	if err != nil {
		t.Fatal(err)
	}
	vm2 := got.(*VM)
	if vm2.PID() != vm.PID() || vm2.ID() != "survivor" {
		t.Errorf("attached pid %d id %s, want %d survivor", vm2.PID(), vm2.ID(), vm.PID())
	}
	if err := vm2.Pause(ctx); err != nil {
		t.Fatal(err)
	}
	if isRunning(t, vm2) {
		t.Error("Pause through the attached VM did not pause it")
	}
	if err := vm2.Destroy(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-vm2.Done():
	case <-time.After(30 * time.Second):
		t.Fatal("attached VM's Done not closed after Destroy")
	}
	assertGone(t, vm)
	assertEmpty(t, vm.l.Dir)

	// Attach refuses a record whose pid now names another process.
	var st recordState
	st, _ = decodeRecord(rec)
	st.PID = os.Getpid()
	if _, err := b2.Attach(ctx, recordOf(t, st)); !errors.Is(err, clonesvc.ErrNotFound) {
		t.Errorf("attach of a reused pid: %v, want ErrNotFound", err)
	}
}

func TestAttachDeadVMCleansUp(t *testing.T) {
	b := newBackend(t, Config{})
	vm := startVM(t, b, "dead")
	rec := vm.Record()
	if err := vm.proc.kill(); err != nil {
		t.Fatal(err)
	}
	assertGone(t, vm)
	if err := vm.Pause(testContext(t)); !errors.Is(err, clonesvc.ErrVMFailed) {
		t.Errorf("Pause of a dead VM: %v, want ErrVMFailed", err)
	}
	_, err := newBackend(t, Config{}).Attach(testContext(t), rec)
	if !errors.Is(err, clonesvc.ErrNotFound) {
		t.Fatalf("attach of a dead VM: %v, want ErrNotFound", err)
	}
	assertEmpty(t, vm.l.Dir)
}

func TestCleanupUnrecordedVM(t *testing.T) {
	b := newBackend(t, Config{})
	// A directory whose name needs escaping in QEMU's option syntax.
	dir := filepath.Join(t.TempDir(), "odd=dir,name 'q'")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	got, err := b.Start(testContext(t), clonesvc.VMSpec{ID: "unrecorded", Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	vm := got.(*VM)
	t.Cleanup(func() { destroy(t, vm) })
	if err := b.Cleanup(testContext(t), vm.l.Dir); err != nil {
		t.Fatal(err)
	}
	assertGone(t, vm)
	assertEmpty(t, vm.l.Dir)
	// Cleanup of a directory without a VM does nothing.
	if err := b.Cleanup(testContext(t), t.TempDir()); err != nil {
		t.Errorf("cleanup of an empty dir: %v", err)
	}
}

func TestStartFailuresLeaveNothing(t *testing.T) {
	b := newBackend(t, Config{})
	ctx := testContext(t)

	dir := t.TempDir()
	_, err := b.Start(ctx, clonesvc.VMSpec{ID: "nokernel", Dir: dir, Kernel: filepath.Join(dir, "absent")})
	if !errors.Is(err, clonesvc.ErrInvalidArgument) {
		t.Errorf("missing kernel: %v, want ErrInvalidArgument", err)
	}
	assertEmpty(t, dir)

	// A real QEMU that exits at once: the "kernel" is not a kernel.
	junk := filepath.Join(t.TempDir(), "junk")
	if err := os.WriteFile(junk, []byte("not a kernel"), 0o644); err != nil {
		t.Fatal(err)
	}
	dir = t.TempDir()
	_, err = b.Start(ctx, clonesvc.VMSpec{ID: "junk", Dir: dir, Kernel: junk})
	if !errors.Is(err, clonesvc.ErrVMFailed) {
		t.Errorf("junk kernel: %v, want ErrVMFailed", err)
	}
	t.Logf("junk kernel: %v", err)
	assertEmpty(t, dir)

	for _, spec := range []clonesvc.VMSpec{
		{ID: "", Dir: t.TempDir()},
		{ID: "x", Dir: "relative"},
		{ID: "x", Dir: t.TempDir(), Hostname: "bad host"},
		{ID: "x", Dir: t.TempDir(), CPUs: -1},
		{ID: "x", Dir: t.TempDir(), MemoryMiB: 1},
	} {
		if _, err := b.Start(ctx, spec); !errors.Is(err, clonesvc.ErrInvalidArgument) {
			t.Errorf("spec %+v: %v, want ErrInvalidArgument", spec, err)
		}
	}
}

func TestRestoreBadCheckpoint(t *testing.T) {
	b := newBackend(t, Config{})
	ctx := testContext(t)
	parent := startVM(t, b, "p")
	cp, err := parent.Checkpoint(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}

	bad := *cp
	bad.Machine = []byte(`{"type":"pc"}`)
	dir := t.TempDir()
	if _, err := b.Restore(ctx, clonesvc.VMSpec{ID: "c", Dir: dir}, &bad); !errors.Is(err, clonesvc.ErrInvalidArgument) {
		t.Errorf("bad machine: %v, want ErrInvalidArgument", err)
	}
	assertEmpty(t, dir)

	// A truncated device state: QEMU starts, the load fails, nothing stays.
	state, err := os.ReadFile(cp.DeviceState)
	if err != nil {
		t.Fatal(err)
	}
	cut := filepath.Join(t.TempDir(), "state")
	if err := os.WriteFile(cut, state[:len(state)/2], 0o644); err != nil {
		t.Fatal(err)
	}
	bad = *cp
	bad.DeviceState = cut
	dir = t.TempDir()
	_, err = b.Restore(ctx, clonesvc.VMSpec{ID: "c", Dir: dir}, &bad)
	if !errors.Is(err, clonesvc.ErrVMFailed) {
		t.Errorf("truncated state: %v, want ErrVMFailed", err)
	}
	assertEmpty(t, dir)
}

func TestDialChannelReplaces(t *testing.T) {
	vm := startVM(t, newBackend(t, Config{}), "chan")
	ctx := testContext(t)
	c1, err := vm.DialChannel(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c2, err := vm.DialChannel(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if _, err := c1.Write([]byte("x")); err == nil {
		t.Error("the first channel connection still works after a second was dialled")
	}
	if vm.ConsolePath() != filepath.Join(vm.l.Dir, fileConsole) {
		t.Errorf("console path %s", vm.ConsolePath())
	}
	if _, err := os.Stat(vm.ConsolePath()); err != nil {
		t.Errorf("console file: %v", err)
	}
}

func recordOf(t *testing.T, st recordState) clonesvc.Record {
	t.Helper()
	v := &VM{l: launch{machine: st.Machine, ID: st.ID, Dir: st.Dir, MemPath: st.MemPath, Share: st.Share, Hostname: st.Hostname},
		proc: &process{pid: st.PID, start: st.StartTime}}
	return v.Record()
}
