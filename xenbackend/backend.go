// Package xenbackend runs VMs as Xen PV (or PVH) domains through the xl
// toolstack, with the guest channel carried over xenstore: checkpoints are
// `xl save -c` images split into a descriptor and a memory image, clones
// are `xl restore`s of the joined stream under their own names.
package xenbackend

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/snowflock/snowflock/clonesvc"
	"github.com/snowflock/snowflock/internal/xenstore"
)

// Name is the backend's configuration name.
const Name = "xen"

// Files in a VM's directory.
const (
	fileConfig = "domain.cfg" // the domain's xl.cfg
	fileName   = "domain"     // its name, written before it exists (Cleanup)
	fileSave   = ".save.fifo"
	fileLoad   = ".restore.fifo"
	// In a checkpoint's directory.
	fileState  = "state.xsi" // the image without page contents (saveimage descriptor)
	fileMemory = "memory"    // page contents at pfn*4096
	regionName = "ram"
	pageSize   = 4096
)

// Backend starts, restores and reattaches Xen domains. It must run in
// dom0 (or a domain with the toolstack's privileges).
type Backend struct {
	cfg Config
	xl  xl
	log zerolog.Logger

	xsMu sync.RWMutex
	xs   *xenstore.Client // the current connection (store): replaced when it drops

	ctx    context.Context
	cancel context.CancelFunc

	// buildMu serialises xl create and xl restore (xl takes its own lock
	// for most of a build anyway).
	buildMu sync.Mutex

	mu   sync.Mutex
	vms  map[*VM]struct{}  // running VMs, watched for their end
	macs map[string]string // MAC -> ID of the VM that holds it
}

var _ clonesvc.Backend = (*Backend)(nil)

// New checks cfg, finds xl and connects to xenstore.
func New(cfg Config) (*Backend, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("xen backend: %w: %w", clonesvc.ErrInvalidArgument, err)
	}
	cfg = cfg.withDefaults()
	bin, err := resolveXL(cfg.XL)
	if err != nil {
		return nil, fmt.Errorf("xen backend: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	xs, err := xenstore.Open(ctx)
	if err != nil {
		return nil, fmt.Errorf("xen backend: xenstore (is this dom0 with xenstored running?): %w", err)
	}
	b := &Backend{cfg: cfg, xl: xl{bin: bin}, xs: xs, log: cfg.Logger.With().Str("backend", Name).Logger(),
		vms: map[*VM]struct{}{}, macs: map[string]string{}}
	b.ctx, b.cancel = context.WithCancel(context.Background())
	if err := b.startMonitor(); err != nil {
		xs.Close()
		b.cancel()
		return nil, fmt.Errorf("xen backend: %w", err)
	}
	return b, nil
}

// Close stops watching the VMs (they keep running) and closes the
// xenstore connection.
func (b *Backend) Close() error {
	b.cancel()
	return b.store().Close()
}

// store returns the xenstore connection.
func (b *Backend) store() *xenstore.Client {
	b.xsMu.RLock()
	defer b.xsMu.RUnlock()
	return b.xs
}

// Name returns "xen".
func (b *Backend) Name() string { return Name }

func invalid(format string, a ...any) error {
	return fmt.Errorf("xen: %w: %s", clonesvc.ErrInvalidArgument, fmt.Sprintf(format, a...))
}

func failed(id string, err error) error {
	return fmt.Errorf("xen: VM %s: %w: %w", id, clonesvc.ErrVMFailed, err)
}

// checkSpec validates what Start and Restore share in a spec; the ID
// must also make a domain name.
func checkSpec(spec clonesvc.VMSpec) error {
	if err := spec.Check(); err != nil {
		return fmt.Errorf("xen: %w", err)
	}
	if err := clonesvc.CheckHostname(domainName(spec.ID)); err != nil {
		return invalid("VM %s: the ID does not make a domain name: %v", spec.ID, err)
	}
	return nil
}

// Start boots a new domain.
func (b *Backend) Start(ctx context.Context, spec clonesvc.VMSpec) (clonesvc.VM, error) {
	if err := checkSpec(spec); err != nil {
		return nil, err
	}
	if err := checkSize(spec.CPUs, spec.MemoryMiB); err != nil {
		return nil, invalid("VM %s: %v", spec.ID, err)
	}
	boot, err := b.cfg.Boot.Apply(spec)
	if err != nil {
		return nil, fmt.Errorf("xen: VM %s: %w", spec.ID, err)
	}
	m := machine{Type: b.cfg.Type, CPUs: boot.CPUs, MemoryMiB: boot.MemoryMiB,
		Kernel: boot.Kernel, Initrd: boot.Initrd, Append: boot.Append}
	if err := m.validate(); err != nil {
		return nil, invalid("VM %s: %v", spec.ID, err)
	}
	if err := boot.CheckFiles(); err != nil {
		return nil, fmt.Errorf("xen: VM %s: %w", spec.ID, err)
	}
	t0 := time.Now()
	vm, err := b.create(ctx, spec, m, func(cfgPath string) error {
		_, err := b.xl.run(ctx, "create", "-e", cfgPath)
		return err
	})
	if err != nil {
		return nil, err
	}
	if b.cfg.TargetMiB != 0 && b.cfg.TargetMiB < m.MemoryMiB {
		if _, err := b.xl.run(ctx, "mem-set", vm.name, fmt.Sprintf("%dm", b.cfg.TargetMiB)); err != nil {
			b.log.Warn().Str("vm", spec.ID).Err(err).Msg("balloon down")
		}
	}
	vm.started = time.Since(t0)
	b.log.Info().Str("vm", spec.ID).Uint32("domid", vm.domid).Str("mac", vm.mac).Dur("took", vm.started).Msg("started")
	return vm, nil
}

// create writes the domain's configuration and name into spec.Dir, runs
// build (xl create or xl restore on that configuration) and finds the new
// domain. On failure the domain, if any, is destroyed and the files
// removed.
func (b *Backend) create(ctx context.Context, spec clonesvc.VMSpec, m machine, build func(cfgPath string) error) (_ *VM, err error) {
	vm := b.newVM(spec.ID, spec.Dir, spec.Hostname, m)
	defer func() {
		if err != nil {
			b.destroyByName(context.WithoutCancel(ctx), vm.name)
			vm.removeFiles()
		}
	}()
	if _, ok, err := domainNamed(ctx, b.store(), vm.name); err != nil {
		return nil, failed(spec.ID, err)
	} else if ok {
		return nil, invalid("VM %s: a domain called %s already exists", spec.ID, vm.name)
	}
	if err := os.WriteFile(filepath.Join(spec.Dir, fileName), []byte(vm.name+"\n"), 0o600); err != nil {
		return nil, failed(spec.ID, err)
	}
	var n *nic
	if b.cfg.Bridge != "" {
		mac, merr := b.reserveMAC(ctx, spec.ID)
		if merr != nil {
			return nil, failed(spec.ID, merr)
		}
		// err is create's result here (not shadowed): the MAC is freed
		// whenever the build fails after this point.
		vm.mac = mac
		defer func() {
			if err != nil {
				b.releaseMAC(mac, spec.ID)
			}
		}()
		n = &nic{MAC: mac, Bridge: b.cfg.Bridge}
	}
	cfgPath := filepath.Join(spec.Dir, fileConfig)
	if err := os.WriteFile(cfgPath, m.xlConfig(vm.name, spec.Hostname, n), 0o600); err != nil {
		return nil, failed(spec.ID, err)
	}
	b.buildMu.Lock()
	err = build(cfgPath)
	b.buildMu.Unlock()
	if err != nil {
		return nil, failed(spec.ID, err)
	}
	domid, ok, err := domainNamed(ctx, b.store(), vm.name)
	if err != nil {
		return nil, failed(spec.ID, err)
	}
	if !ok {
		return nil, failed(spec.ID, fmt.Errorf("domain %s is gone right after it was built; its console ended with:\n%s", vm.name, vm.consoleTail(2000)))
	}
	vm.domid = domid
	b.watch(vm)
	return vm, nil
}

// destroyByName destroys the domain called name if it exists.
func (b *Backend) destroyByName(ctx context.Context, name string) error {
	domid, ok, err := domainNamed(ctx, b.store(), name)
	if err != nil || !ok {
		return err
	}
	if _, err := b.xl.run(ctx, "destroy", fmt.Sprint(domid)); err != nil {
		if still, _ := domainIs(ctx, b.store(), domid, name); still {
			return err
		}
	}
	return nil
}

// Record format versions.
const recordVersion = 1

// recordState is a VM's durable state (clonesvc.Record.State).
type recordState struct {
	ID       string  `json:"id"`
	Dir      string  `json:"dir"`
	Name     string  `json:"name"`
	DomID    uint32  `json:"domid"`
	Machine  machine `json:"machine"`
	Hostname string  `json:"hostname,omitempty"`
	MAC      string  `json:"mac,omitempty"` // the vif's, when the domain has one
}

func decodeRecord(rec clonesvc.Record) (recordState, error) {
	var st recordState
	if err := rec.Decode(Name, recordVersion, &st); err != nil {
		return st, err
	}
	switch {
	case st.ID == "":
		return st, errors.New("record has no VM id")
	case st.Name != domainName(st.ID):
		return st, fmt.Errorf("record names domain %q for VM %s", st.Name, st.ID)
	case st.DomID == 0:
		return st, errors.New("record names domain 0")
	case !clonesvc.IsVMDir(st.Dir):
		return st, fmt.Errorf("record directory %q is not a clean absolute path", st.Dir)
	}
	if err := clonesvc.CheckHostname(st.Hostname); err != nil {
		return st, err
	}
	if err := checkMAC(st.MAC); err != nil {
		return st, err
	}
	return st, st.Machine.validate()
}

// Attach reattaches to a domain from its Record. If the domain is gone it
// removes the VM's files and returns an error wrapping ErrNotFound.
func (b *Backend) Attach(ctx context.Context, rec clonesvc.Record) (clonesvc.VM, error) {
	st, err := decodeRecord(rec)
	if err != nil {
		return nil, invalid("attach: %v", err)
	}
	vm := b.newVM(st.ID, st.Dir, st.Hostname, st.Machine)
	vm.domid, vm.mac = st.DomID, st.MAC
	alive, err := domainIs(ctx, b.store(), st.DomID, st.Name)
	if err != nil {
		return nil, fmt.Errorf("xen: attach VM %s: %w", st.ID, err)
	}
	if !alive {
		vm.removeFiles()
		return nil, fmt.Errorf("xen: attach VM %s: %w: domain %d (%s) is gone", st.ID, clonesvc.ErrNotFound, st.DomID, st.Name)
	}
	b.watch(vm)
	b.log.Info().Str("vm", st.ID).Uint32("domid", st.DomID).Str("mac", st.MAC).Msg("attached")
	return vm, nil
}

// Cleanup destroys the domain that was being built in dir, if any, and
// removes the backend's files there.
func (b *Backend) Cleanup(ctx context.Context, dir string) error {
	if !clonesvc.IsVMDir(dir) {
		return invalid("cleanup: directory %q is not a clean absolute path", dir)
	}
	vm := b.newVM(filepath.Base(dir), dir, "", machine{})
	data, err := os.ReadFile(filepath.Join(dir, fileName))
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return fmt.Errorf("xen: cleanup %s: %w", dir, err)
	default:
		name := string(trimNL(data))
		if clonesvc.CheckHostname(name) != nil || len(name) < 4 || name[:3] != "sf-" {
			return invalid("cleanup %s: %s names domain %q", dir, fileName, name)
		}
		if err := b.destroyByName(ctx, name); err != nil {
			return fmt.Errorf("xen: cleanup %s: %w", dir, err)
		}
		b.log.Info().Str("dir", dir).Str("domain", name).Msg("destroyed the domain of an unrecorded VM")
	}
	vm.removeFiles()
	return nil
}

func trimNL(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == '\r') {
		b = b[:len(b)-1]
	}
	return b
}
