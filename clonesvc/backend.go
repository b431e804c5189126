package clonesvc

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"path/filepath"
	"regexp"
	"time"
)

// Backend runs VMs of one hypervisor on this host. The clone service owns
// the VMs' lifecycle and records; a backend knows only how to run them.
//
// Lifecycle:
//
//  1. Start boots a fresh VM from a VMSpec (kernel, initrd, size). The VM's
//     RAM lives in a file under spec.Dir that the backend can freeze.
//  2. VM.Checkpoint briefly pauses a running VM, saves its device state and
//     a frozen copy of its memory into a directory, and resumes it. The
//     parent never runs on the frozen image, so nothing it writes later can
//     reach a clone.
//  3. Restore starts a clone from a Checkpoint: same machine, copy-on-write
//     memory over the frozen image, device state loaded, running when
//     Restore returns.
//  4. VM.Destroy stops the VM and removes every file the backend made for it
//     (not the checkpoint, which the service owns).
//  5. After an sfld restart, Attach reattaches to a VM from the Record the
//     backend returned earlier; if the VM is gone it returns ErrNotFound and
//     has cleaned up what it could.
//
// Every blocking method honours its context. Errors wrap the service's
// error classes (ErrInvalidArgument, ErrNotFound, ErrVMFailed) where one
// applies.
type Backend interface {
	// Name is the backend's configuration name ("kvm", "xen").
	Name() string
	// Start boots a new VM.
	Start(ctx context.Context, spec VMSpec) (VM, error)
	// Restore starts a clone of the VM that made cp. spec.Dir, spec.ID and
	// spec.Hostname are the clone's own; the machine comes from cp.
	Restore(ctx context.Context, spec VMSpec, cp *Checkpoint) (VM, error)
	// Attach reattaches to a running VM from its last Record.
	Attach(ctx context.Context, rec Record) (VM, error)
	// Cleanup stops whatever VM process was started in dir and removes the
	// backend's files there. The service calls it for a VM whose Record was
	// never saved (sfld died while starting it), so that no process is
	// orphaned.
	Cleanup(ctx context.Context, dir string) error
}

// VMSpec describes a VM to start.
type VMSpec struct {
	// ID is the service's name for the VM, unique on this host.
	ID string
	// Dir is a directory the VM owns (sockets, memory file, console log).
	// It exists and is empty when Start or Restore is called.
	Dir string
	// Hostname is given to the guest (kernel command line sf.hostname=).
	Hostname string
	// CPUs and MemoryMiB size the VM (zero: the backend's defaults).
	CPUs      int
	MemoryMiB int
	// Kernel, Initrd and Append boot the guest (zero: backend defaults).
	Kernel string
	Initrd string
	Append string
	// MemoryPath, for Restore only, replaces the checkpoint's memory image
	// with another file of the same contents (a memory tap filling it on
	// demand from another host).
	MemoryPath string
}

// Record is a backend's durable state for one VM: enough to reattach to it
// after sfld restarts (for QEMU: pid, start time, QMP socket). It is opaque
// to the service, which stores it with its own VM record.
type Record struct {
	Backend string `json:"backend"`
	// Version is the backend's record format; Attach refuses versions it
	// does not know.
	Version int    `json:"version"`
	State   []byte `json:"state"`
}

// VM is one running VM.
type VM interface {
	// ID is VMSpec.ID.
	ID() string
	// Record returns the state to persist for Attach.
	Record() Record
	// Pause and Resume stop and continue the guest's vCPUs.
	Pause(ctx context.Context) error
	Resume(ctx context.Context) error
	// Checkpoint freezes the VM into dir (which exists and is empty) and
	// leaves it running as it was (a paused VM stays paused).
	Checkpoint(ctx context.Context, dir string) (*Checkpoint, error)
	// DialChannel connects to the VM's guest channel (virtio-serial for
	// QEMU). Only one connection is open at a time; a new one replaces the
	// old. The stream carries guestproto frames.
	DialChannel(ctx context.Context) (io.ReadWriteCloser, error)
	// ConsolePath is a file that receives the guest's console output.
	ConsolePath() string
	// Done is closed when the VM's process has exited, for any reason.
	Done() <-chan struct{}
	// Destroy stops the VM (if running) and removes its files. It is safe
	// to call more than once and after the VM exited on its own.
	Destroy(ctx context.Context) error
}

// Checkpoint is a frozen VM: what a clone starts from. The backend fills
// it; the service adds the family identity and writes the descriptor.
type Checkpoint struct {
	// Backend is the Name of the backend that made it.
	Backend string
	// Machine is the backend's machine configuration (opaque to the
	// service; the backend's Restore reads it).
	Machine []byte
	// DeviceState is the path of the saved device state (for QEMU, the
	// migration stream saved with x-ignore-shared: no RAM in it).
	DeviceState string
	// Memory lists the frozen memory images, one per RAM region.
	Memory []MemoryImage
	// Paused is how long the guest's vCPUs were stopped.
	Paused time.Duration
	// Took is the whole checkpoint's duration.
	Took time.Duration
}

// MemoryImage is one frozen RAM region.
type MemoryImage struct {
	// Name is the region's id in the machine (QEMU memory-backend id).
	Name string
	// Path is the frozen image file; it must not change while clones use it.
	Path string
	// Size is the region's size in bytes; PageSize its page size.
	Size     uint64
	PageSize uint32
	// Zero has one bit per page (bit i%8 of byte i/8), set when the page
	// was all zeros at the checkpoint.
	Zero []byte
}

// hostnameRE is what a guest's host name may be (RFC 1123 labels).
var hostnameRE = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$`)

// CheckHostname validates VMSpec.Hostname ("" is valid: the guest's
// default), which backends pass on the guest's kernel command line.
func CheckHostname(h string) error {
	if h != "" && (len(h) > 253 || !hostnameRE.MatchString(h)) {
		return fmt.Errorf("hostname %q: want letters, digits, '-' and '.' (RFC 1123)", h)
	}
	return nil
}

// maxRecordState caps the state a Record may carry.
const maxRecordState = 64 << 10

// Decode checks that r is a record of backend at version and unmarshals
// its state (JSON, at most 64 KiB) into v. Backends validate v's fields.
func (r Record) Decode(backend string, version int, v any) error {
	if r.Backend != backend {
		return fmt.Errorf("record of backend %q", r.Backend)
	}
	if r.Version != version {
		return fmt.Errorf("record version %d, want %d", r.Version, version)
	}
	if len(r.State) > maxRecordState {
		return fmt.Errorf("record state of %d bytes", len(r.State))
	}
	if err := json.Unmarshal(r.State, v); err != nil {
		return fmt.Errorf("record state: %w", err)
	}
	return nil
}

// IsVMDir reports whether dir can be a VM's directory: a clean absolute
// path, not the root.
func IsVMDir(dir string) bool {
	return filepath.IsAbs(dir) && filepath.Clean(dir) == dir && dir != "/"
}
