package xenbackend

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/snowflock/snowflock/clonesvc"
	"github.com/snowflock/snowflock/xenbackend/saveimage"
)

// Restore starts a clone from cp: saveimage.Join rebuilds the `xl save`
// image from the descriptor and the memory image (or spec.MemoryPath, a
// memory tap with the same contents) into a named pipe that `xl restore`
// reads, with a configuration of the clone's own (its domain name, a new
// UUID). Upstream Xen loads every page before the clone runs: memory is
// not fetched on demand (docs/ARCHITECTURE.md, Xen).
func (b *Backend) Restore(ctx context.Context, spec clonesvc.VMSpec, cp *clonesvc.Checkpoint) (clonesvc.VM, error) {
	if err := checkSpec(spec); err != nil {
		return nil, err
	}
	if cp == nil || cp.Backend != Name {
		return nil, invalid("VM %s: not a checkpoint of the xen backend", spec.ID)
	}
	m, err := decodeMachine(cp.Machine)
	if err != nil {
		return nil, invalid("VM %s: checkpoint: %v", spec.ID, err)
	}
	if len(cp.Memory) != 1 || cp.Memory[0].Name != regionName || cp.Memory[0].PageSize != pageSize {
		return nil, invalid("VM %s: checkpoint has %d memory images, want one named %s of %d-byte pages", spec.ID, len(cp.Memory), regionName, pageSize)
	}
	img := cp.Memory[0]
	memPath := img.Path
	if spec.MemoryPath != "" {
		memPath = spec.MemoryPath
	}
	if fi, err := os.Stat(memPath); err != nil || !fi.Mode().IsRegular() || uint64(fi.Size()) != img.Size {
		return nil, invalid("VM %s: memory image %q is missing or not %d bytes", spec.ID, memPath, img.Size)
	}
	if err := clonesvc.CheckFile("device state", cp.DeviceState); err != nil || cp.DeviceState == "" {
		return nil, invalid("VM %s: device state %q is not a readable file", spec.ID, cp.DeviceState)
	}
	t0 := time.Now()
	vm, err := b.create(ctx, spec, m, func(cfgPath string) error {
		return b.restoreImage(ctx, spec, cfgPath, cp.DeviceState, memPath)
	})
	if err != nil {
		return nil, err
	}
	vm.started = time.Since(t0)
	b.log.Info().Str("vm", spec.ID).Uint32("domid", vm.domid).Str("mac", vm.mac).Dur("took", vm.started).Msg("restored")
	return vm, nil
}

// restoreImage runs `xl restore cfgPath FIFO` while Join writes the image
// into FIFO.
func (b *Backend) restoreImage(ctx context.Context, spec clonesvc.VMSpec, cfgPath, statePath, memPath string) error {
	state, err := os.Open(statePath)
	if err != nil {
		return err
	}
	defer state.Close()
	mem, err := os.Open(memPath)
	if err != nil {
		return err
	}
	defer mem.Close()
	fifo := filepath.Join(spec.Dir, fileLoad)
	if err := mkfifo(fifo); err != nil {
		return err
	}
	defer os.Remove(fifo)

	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cmd := b.xl.command(rctx, "restore", "-e", cfgPath, fifo)
	var stderr limitedBuffer
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("xl restore: %w", err)
	}
	exited := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(exited) }()
	joinErr := func() error {
		w, err := openFIFO(rctx, fifo, true, exited)
		if err != nil {
			return err
		}
		defer w.Close()
		bw := bufio.NewWriterSize(w, 1<<20)
		if err := saveimage.Join(rctx, bufio.NewReaderSize(state, 256<<10), mem, bw); err != nil {
			return err
		}
		return bw.Flush()
	}()
	if joinErr != nil {
		cancel()
	}
	<-exited
	if waitErr != nil && !errors.Is(waitErr, exec.ErrWaitDelay) {
		msg := stderr.String()
		if joinErr != nil {
			return fmt.Errorf("xl restore: %w (writing the image: %w): %s", waitErr, joinErr, msg)
		}
		return fmt.Errorf("xl restore: %w: %s", waitErr, msg)
	}
	if joinErr != nil {
		return fmt.Errorf("writing the image for xl restore: %w", joinErr)
	}
	return nil
}
