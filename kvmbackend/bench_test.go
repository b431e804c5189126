package kvmbackend

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/snowflock/snowflock/clonesvc"
	"github.com/snowflock/snowflock/clonesvc/descriptor"
)

// The benchmarks run on the test guest (build/guest) when it has been
// built, else on the kernel-less SeaBIOS VM with 64 MiB of its RAM filled
// with data (as a used guest's would be). Each QEMU iteration takes
// hundreds of milliseconds: run them with a small -benchtime (e.g. 3x).

const benchMemMiB = 256

// benchParent starts the parent VM of the benchmarks.
func benchParent(b *testing.B) (*Backend, *VM) {
	b.Helper()
	cfg := Config{Boot: clonesvc.Boot{MemoryMiB: benchMemMiB}, Logger: zerolog.New(zerolog.NewTestWriter(b))}
	kernel, _ := filepath.Abs("../build/guest/vmlinuz")
	initrd, _ := filepath.Abs("../build/guest/initrd.img")
	_, kerr := os.Stat(kernel)
	_, ierr := os.Stat(initrd)
	guest := kerr == nil && ierr == nil
	if guest {
		cfg.Kernel, cfg.Initrd = kernel, initrd
	}
	be := newBackend(b, cfg)
	vm := startVM(b, be, "bench-parent")
	if guest {
		waitConsoleQuiet(b, vm)
		b.Logf("parent: test guest %s", kernel)
	} else {
		writeFileAt(b, vm.l.MemPath, bytes.Repeat([]byte("used guest memory "), (64<<20)/18), 32<<20)
		b.Logf("parent: SeaBIOS VM (no guest image at build/guest), 64 MiB of RAM filled")
	}
	return be, vm
}

// waitConsoleQuiet waits until the guest's console stops growing for 2 s
// (it has booted), at most 90 s.
func waitConsoleQuiet(b *testing.B, vm *VM) {
	var last int64 = -1
	quiet := 0
	for range 180 {
		fi, err := os.Stat(vm.ConsolePath())
		if err == nil && fi.Size() > 0 && fi.Size() == last {
			if quiet++; quiet >= 4 {
				return
			}
		} else {
			quiet = 0
		}
		if err == nil {
			last = fi.Size()
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// saveFull is the baseline checkpoint: the whole RAM in the migration
// stream (no x-ignore-shared), the guest paused throughout.
func saveFull(ctx context.Context, vm *VM, path string) (time.Duration, error) {
	t0 := time.Now()
	if err := vm.setIgnoreShared(ctx, false); err != nil {
		return 0, err
	}
	if err := vm.execute(ctx, "stop", nil, nil); err != nil {
		return 0, err
	}
	err := vm.execute(ctx, "migrate", map[string]string{"uri": "exec:cat > " + shellQuote(path)}, nil)
	if err == nil {
		err = vm.waitMigration(ctx)
	}
	if cerr := vm.execute(ctx, "cont", nil, nil); err == nil {
		err = cerr
	}
	return time.Since(t0), err
}

func fileSize(b *testing.B, path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		b.Fatal(err)
	}
	return fi.Size()
}

func BenchmarkCheckpoint(b *testing.B) {
	ctx := context.Background()
	_, parent := benchParent(b)
	var pause, took, full, descTime time.Duration
	var stateSize, fullSize, descSize int64
	n := 0
	for b.Loop() {
		dir := b.TempDir()
		cp, err := parent.Checkpoint(ctx, dir)
		if err != nil {
			b.Fatal(err)
		}
		pause += cp.Paused
		took += cp.Took
		stateSize += fileSize(b, cp.DeviceState)
		start := time.Now()
		size, err := writeDescriptor(cp, filepath.Join(dir, "descriptor"))
		if err != nil {
			b.Fatal(err)
		}
		descTime += time.Since(start)
		descSize += size
		fullPath := filepath.Join(dir, "full")
		d, err := saveFull(ctx, parent, fullPath)
		if err != nil {
			b.Fatal(err)
		}
		full += d
		fullSize += fileSize(b, fullPath)
		os.RemoveAll(dir)
		n++
	}
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 / float64(n) }
	b.ReportMetric(ms(pause), "ms-pause")
	b.ReportMetric(ms(took), "ms-checkpoint")
	b.ReportMetric(float64(stateSize)/1024/float64(n), "KB-device-state")
	b.ReportMetric(float64(descSize)/1024/float64(n), "KB-descriptor")
	b.ReportMetric(ms(descTime), "ms-descriptor")
	b.ReportMetric(ms(full), "ms-pause-full-baseline")
	b.ReportMetric(float64(fullSize)/(1<<20)/float64(n), "MB-full-baseline")
	b.ReportMetric(ms(full)/ms(pause), "x-pause-vs-full")
	b.Logf("checkpoint: pause %.1f ms, total %.1f ms, state %.0f KB, descriptor %.0f KB written in %.1f ms; full-memory save: pause %.1f ms, %.1f MB; pause ratio full/ours %.1fx",
		ms(pause), ms(took), float64(stateSize)/1024/float64(n), float64(descSize)/1024/float64(n), ms(descTime),
		ms(full), float64(fullSize)/(1<<20)/float64(n), ms(full)/ms(pause))
}

func BenchmarkRestore(b *testing.B) {
	ctx := context.Background()
	be, parent := benchParent(b)
	cp, err := parent.Checkpoint(ctx, b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	fullState := filepath.Join(b.TempDir(), "full")
	if _, err := saveFull(ctx, parent, fullState); err != nil {
		b.Fatal(err)
	}
	mach, err := decodeMachine(cp.Machine)
	if err != nil {
		b.Fatal(err)
	}
	for _, n := range []int{1, 4, 8} {
		b.Run(fmt.Sprintf("N=%d", n), func(b *testing.B) {
			var cow, full time.Duration
			iters := 0
			for b.Loop() {
				cow += restoreMany(b, n, func(i int, dir string) (*VM, error) {
					vm, err := be.Restore(ctx, clonesvc.VMSpec{ID: fmt.Sprintf("cow%d", i), Dir: dir}, cp)
					if err != nil {
						return nil, err
					}
					return vm.(*VM), nil
				})
				full += restoreMany(b, n, func(i int, dir string) (*VM, error) {
					mem := filepath.Join(dir, "eager-mem")
					if err := os.WriteFile(mem, nil, 0o644); err != nil {
						return nil, err
					}
					if err := os.Truncate(mem, int64(mach.MemoryMiB)<<20); err != nil {
						return nil, err
					}
					return be.restore(ctx, launch{machine: mach, ID: fmt.Sprintf("full%d", i), Dir: dir,
						MemPath: mem, Incoming: true}, fullState, false)
				})
				iters++
			}
			per := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 / float64(iters*n) }
			b.ReportMetric(per(cow), "ms/clone-cow")
			b.ReportMetric(per(full), "ms/clone-full-baseline")
			b.ReportMetric(per(full)/per(cow), "x-full-vs-cow")
			b.Logf("N=%d in parallel: launch→running %.1f ms per clone (copy-on-write + x-ignore-shared) vs %.1f ms (eager full-memory stream): %.1fx",
				n, per(cow), per(full), per(full)/per(cow))
		})
	}
}

// restoreMany starts n clones in parallel, checks they run, destroys them
// and returns the sum of their launch→running times.
func restoreMany(b *testing.B, n int, start func(i int, dir string) (*VM, error)) time.Duration {
	vms := make([]*VM, n)
	errs := make([]error, n)
	dirs := make([]string, n)
	for i := range dirs {
		dirs[i] = b.TempDir()
	}
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { vms[i], errs[i] = start(i, dirs[i]) })
	}
	wg.Wait()
	var sum time.Duration
	for i, vm := range vms {
		if errs[i] != nil {
			b.Error(errs[i])
			continue
		}
		sum += vm.Started()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		if r, err := vm.running(ctx); err != nil || !r {
			b.Errorf("clone %d not running after restore: %v", i, err)
		}
		if err := vm.Destroy(ctx); err != nil {
			b.Error(err)
		}
		cancel()
	}
	if b.Failed() {
		b.FailNow()
	}
	return sum
}

// writeDescriptor writes the VM descriptor of cp, as the clone service
// does, and returns its size.
func writeDescriptor(cp *clonesvc.Checkpoint, path string) (int64, error) {
	state, err := os.ReadFile(cp.DeviceState)
	if err != nil {
		return 0, err
	}
	d := &descriptor.Descriptor{
		FamilyID: "fam-bench", ParentVM: "vm-bench", CheckpointID: "cp-bench", Created: time.Now(),
		Backend: cp.Backend, Machine: cp.Machine, DeviceState: state,
	}
	d.FamilyKey[0] = 1
	for _, m := range cp.Memory {
		d.Regions = append(d.Regions, descriptor.Region{Name: m.Name, Size: m.Size, PageSize: m.PageSize, Zero: m.Zero})
	}
	if err := descriptor.Write(path, d); err != nil {
		return 0, err
	}
	fi, err := os.Stat(path)
	if err != nil {
		return 0, err
	}
	return fi.Size(), nil
}
