package kvmbackend

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/snowflock/snowflock/clonesvc"
	"github.com/snowflock/snowflock/clonesvc/memtap"
)

// lazyRun is what one clone on a memory tap fetched.
type lazyRun struct {
	running, hello memtap.Stats // when Restore returned; after the agent's hello
	firstOutput    *memtap.Stats
	flags          []string // VmFlags of QEMU's mapping of the tap
}

// restoreOnTap restores n clones of cp, one after the other, with their
// RAM mapped from one memory tap that fetches from the frozen image, says
// hello to each one's agent, and reports what the tap had fetched (the
// counts add up over the clones).
func restoreOnTap(t *testing.T, cfg Config, cp *clonesvc.Checkpoint, id string, n int) []lazyRun {
	t.Helper()
	img := cp.Memory[0]
	fetcher, err := memtap.NewFileFetcher(img.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer fetcher.Close()
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	tap, err := memtap.Mount(ctx, memtap.Config{
		Dir: dir, Size: int64(img.Size), Zero: img.Zero,
		CachePath: filepath.Join(dir, "cache"), Fetcher: fetcher,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := tap.Close(); err != nil {
			t.Errorf("close tap: %v", err)
		}
	}()

	b := newBackend(t, cfg)
	var runs []lazyRun
	for i := range n {
		cid := id + "-" + strconv.Itoa(i)
		got, err := b.Restore(ctx, clonesvc.VMSpec{ID: cid, Dir: t.TempDir(), Hostname: cid, MemoryPath: tap.Path()}, cp)
		if err != nil {
			t.Fatal(err)
		}
		vm := got.(*VM)
		defer destroy(t, vm)
		var r lazyRun
		r.running = tap.Stats()
		if r.flags, err = smapsFlags(strconv.Itoa(vm.PID()), tap.Path()); err != nil {
			t.Fatal(err)
		}
		watch, stop := watchConsole(vm, tap)
		hello(t, vm)
		r.hello = tap.Stats()
		close(stop)
		select {
		case s := <-watch:
			r.firstOutput = &s
		default:
		}
		if tap.Err() != nil {
			t.Errorf("tap: %v", tap.Err())
		}
		runs = append(runs, r)
	}
	return runs
}

// watchConsole sends the tap's counters once the VM's console (new for a
// clone) has its first byte, until stop is closed.
func watchConsole(vm *VM, tap *memtap.Tap) (<-chan memtap.Stats, chan<- struct{}) {
	watch := make(chan memtap.Stats, 1)
	stop := make(chan struct{})
	go func() {
		for {
			if fi, err := os.Stat(vm.ConsolePath()); err == nil && fi.Size() > 0 {
				watch <- tap.Stats()
				return
			}
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	}()
	return watch, stop
}

func mib(n uint64) float64 { return float64(n) / (1 << 20) }

// TestRestoreOnMemoryTap: a clone of the real guest runs with its RAM
// mapped (share=off) from a memtap FUSE file filled on demand from the
// frozen image; its agent answers. With the no-THP filter (NoTHP auto
// turns it on for a MemoryPath) QEMU's RAM mapping is not a huge-page one
// and the clone fetches a small part of its RAM; without the filter every
// fault reads megabytes around it. A second clone on the same tap fetches
// little more: the pages are kept for every clone on the host.
func TestRestoreOnMemoryTap(t *testing.T) {
	kernel, initrd := guestImage(t)
	cfg := Config{Machine: MachineMicroVM, Boot: clonesvc.Boot{Kernel: kernel, Initrd: initrd, MemoryMiB: 256}}
	parent := startVM(t, newBackend(t, cfg), "lazy-parent")
	waitConsole(t, parent, "snowflock-guest: ready")
	hello(t, parent)
	cp, err := parent.Checkpoint(testContext(t), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	destroy(t, parent) // the host's cores are shared: one QEMU at a time

	cfg.NoTHP = NoTHPAuto
	runs := restoreOnTap(t, cfg, cp, "lazy-nothp", 2)
	on, second := runs[0], runs[1]
	cfg.NoTHP = NoTHPNever
	off := restoreOnTap(t, cfg, cp, "lazy-thp", 1)[0]

	for _, r := range []struct {
		name string
		run  lazyRun
	}{{"no-THP filter", on}, {"without filter", off}} {
		first := "no console output"
		if r.run.firstOutput != nil {
			first = strconv.FormatFloat(mib(r.run.firstOutput.BytesFetched), 'f', 1, 64) + " MiB by first console output"
		}
		t.Logf("%s: fetched %.1f MiB when running, %.1f MiB after hello (%s); %d reads of at most %d bytes, %d zero pages served; RAM of %d MiB; VmFlags %v",
			r.name, mib(r.run.running.BytesFetched), mib(r.run.hello.BytesFetched), first,
			r.run.hello.Reads, r.run.hello.MaxRead, r.run.hello.Zero, cfg.MemoryMiB, r.run.flags)
	}
	if hasFlag(on.flags, "hg") {
		t.Errorf("with the filter QEMU's RAM mapping has VM_HUGEPAGE: %v", on.flags)
	}
	if !hasFlag(off.flags, "hg") {
		t.Errorf("without the filter QEMU's RAM mapping lacks VM_HUGEPAGE (%v): the comparison means nothing", off.flags)
	}
	if on.hello.BytesFetched == 0 || 2*on.hello.BytesFetched > off.hello.BytesFetched {
		t.Errorf("fetched %d bytes with the filter, %d without: want far less with it",
			on.hello.BytesFetched, off.hello.BytesFetched)
	}
	// A second clone on the same host finds what the first fetched.
	more := second.hello.BytesFetched - on.hello.BytesFetched
	t.Logf("a second clone on the same tap fetched %.2f MiB more by hello", mib(more))
	if 4*more > on.hello.BytesFetched {
		t.Errorf("a second clone on the same tap fetched %d bytes more, the first %d: want most pages shared", more, on.hello.BytesFetched)
	}
	if on.hello.BytesFetched > uint64(cfg.MemoryMiB)<<20/10 {
		t.Errorf("with the filter the clone fetched %.1f MiB of %d MiB by hello: want at most 10%%", mib(on.hello.BytesFetched), cfg.MemoryMiB)
	}
}
