package xenbackend

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/snowflock/snowflock/clonesvc"
	"github.com/snowflock/snowflock/xenbackend/saveimage"
)

// Checkpoint saves the domain with `xl save -c` (the domain goes on
// running) into dir: the image streams through a named pipe into
// saveimage.Split, which keeps the device state and page layout (the
// descriptor, fileState) apart from the page contents (fileMemory, page
// pfn at byte pfn*4096, zero pages left as holes).
//
// Upstream xl save is not live: the guest is suspended for the whole save,
// so Paused is the save's duration (see docs/ARCHITECTURE.md, Xen).
func (v *VM) Checkpoint(ctx context.Context, dir string) (_ *clonesvc.Checkpoint, err error) {
	if err := v.alive(ctx); err != nil {
		return nil, err
	}
	v.saving.Store(true)
	defer v.saving.Store(false)
	t0 := time.Now()
	fifo := filepath.Join(v.dir, fileSave)
	if err := mkfifo(fifo); err != nil {
		return nil, failed(v.id, err)
	}
	defer os.Remove(fifo)
	statePath, memPath := filepath.Join(dir, fileState), filepath.Join(dir, fileMemory)
	defer func() {
		if err != nil {
			os.Remove(statePath)
			os.Remove(memPath)
		}
	}()
	state, err := os.OpenFile(statePath, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, failed(v.id, err)
	}
	defer state.Close()
	mem, err := os.OpenFile(memPath, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, failed(v.id, err)
	}
	defer mem.Close()

	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cmd := v.b.xl.command(sctx, "save", "-c", v.name, fifo)
	var stderr limitedBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return nil, failed(v.id, fmt.Errorf("xl save: %w", err))
	}
	exited := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(exited) }()
	var info *saveimage.Info
	split := func() error {
		r, err := openFIFO(sctx, fifo, false, exited)
		if err != nil {
			return err
		}
		defer r.Close()
		bw := bufio.NewWriterSize(state, 256<<10)
		if info, err = saveimage.Split(sctx, bufio.NewReaderSize(r, 1<<20), bw, mem); err != nil {
			return err
		}
		return bw.Flush()
	}
	err = split()
	if err != nil {
		cancel() // stop xl: nobody reads its pipe any more
	}
	<-exited
	paused := time.Since(t0)
	if waitErr != nil && !errors.Is(waitErr, exec.ErrWaitDelay) {
		if err == nil {
			err = waitErr
		}
		return nil, failed(v.id, fmt.Errorf("xl save -c %s: %w: %s%s", v.name, err, stderr.String(), v.leftSuspended()))
	}
	if err != nil {
		return nil, failed(v.id, fmt.Errorf("split the save image: %w%s", err, v.leftSuspended()))
	}
	// The domain must have come back: xl save -c resumes it.
	if err := v.alive(ctx); err != nil {
		return nil, err
	}
	if err := mem.Truncate(info.MemorySize); err != nil {
		return nil, failed(v.id, err)
	}
	for _, f := range []*os.File{state, mem} {
		if err := f.Sync(); err != nil {
			return nil, failed(v.id, err)
		}
	}
	machine, err := json.Marshal(v.m)
	if err != nil {
		return nil, failed(v.id, err)
	}
	cp := &clonesvc.Checkpoint{
		Backend: Name, Machine: machine, DeviceState: statePath,
		Memory: []clonesvc.MemoryImage{{Name: regionName, Path: memPath, Size: uint64(info.MemorySize), PageSize: pageSize, Zero: info.Zero}},
		Paused: paused, Took: time.Since(t0),
	}
	v.b.log.Info().Str("vm", v.id).Dur("took", cp.Took).Uint64("pages", info.Pages).Uint64("zero_pages", info.ZeroPages).
		Int64("descriptor_bytes", info.DescriptorBytes).Int64("image_bytes", info.ImageBytes).Msg("checkpoint")
	return cp, nil
}

// leftSuspended is called after a failed save. xl save -c resumes the
// guest when the save fails, but not when xl itself was stopped (the
// checkpoint's context ended): the domain then stays suspended, and xl
// has no command to resume it. Such a domain is destroyed now rather
// than by the reaper's grace; the returned text says so for the error.
func (v *VM) leftSuspended() string {
	ctx, cancel := context.WithTimeout(v.b.ctx, 30*time.Second)
	defer cancel()
	states, err := v.b.domainStates(ctx)
	if err != nil || states[v.domid] != domainSuspended {
		return ""
	}
	v.b.log.Warn().Str("vm", v.id).Uint32("domid", v.domid).Msg("the failed save left the domain suspended; destroying it")
	if _, err := v.b.xl.run(ctx, "destroy", fmt.Sprint(v.domid)); err != nil {
		return fmt.Sprintf(" (the save left the domain suspended, and destroying it failed: %v)", err)
	}
	return " (the save left the domain suspended, which xl cannot resume: it was destroyed)"
}
