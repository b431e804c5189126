package kvmbackend

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/snowflock/snowflock/clonesvc"
)

// Cleanup stops the QEMU that was started in dir, if any, and removes the
// backend's files there (the service calls it for a VM whose Record was
// never saved). QEMU is found through its -pidfile, and only a process
// whose command line names dir's QMP socket is killed.
func (b *Backend) Cleanup(ctx context.Context, dir string) error {
	if !clonesvc.IsVMDir(dir) {
		return invalid("cleanup: directory %q is not a clean absolute path", dir)
	}
	vm := b.newVM(launch{ID: filepath.Base(dir), Dir: dir, MemPath: filepath.Join(dir, fileMem), Share: true})
	if pid, ok := qemuOfDir(dir); ok {
		start, err := procStartTime(pid)
		if err == nil {
			p, err := attachProcess(pid, start)
			switch {
			case errors.Is(err, errGone):
			case err != nil:
				return fmt.Errorf("kvm: cleanup %s: %w", dir, err)
			default:
				vm.proc = p
				if err := vm.stop(ctx, 0); err != nil {
					return err
				}
				b.log.Info().Str("dir", dir).Int("pid", pid).Msg("killed QEMU of an unrecorded VM")
			}
		}
	}
	vm.removeFiles()
	return nil
}

// qemuOfDir reads dir's QEMU pidfile and says whether that pid runs a
// QEMU started for dir.
func qemuOfDir(dir string) (int, bool) {
	data, err := os.ReadFile(filepath.Join(dir, filePID))
	if err != nil {
		return 0, false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil || pid <= 0 {
		return 0, false
	}
	cmdline, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil {
		return 0, false
	}
	want := qmpChardev(dir)
	for arg := range bytes.SplitSeq(cmdline, []byte{0}) {
		if string(arg) == want {
			return pid, true
		}
	}
	return 0, false
}
