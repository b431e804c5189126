package clonesvc

import (
	"fmt"
	"os"
	"path/filepath"
)

// Boot is how a new VM boots: its size and its kernel. A backend keeps
// its configured defaults in one and applies each VMSpec to it (Apply),
// so that every backend reads a spec the same way.
//
// Backends' configurations embed it (mapstructure ",squash"): the keys
// cpus, memory_mib, kernel, initrd and append of sfld.kvm and sfld.xen.
type Boot struct {
	CPUs      int    `mapstructure:"cpus" json:"cpus"`
	MemoryMiB int    `mapstructure:"memory_mib" json:"memory_mib"`
	Kernel    string `mapstructure:"kernel" json:"kernel"`
	Initrd    string `mapstructure:"initrd" json:"initrd"`
	// Append is the kernel command line the backend's own arguments
	// (console, sf.hostname) are added to.
	Append string `mapstructure:"append" json:"append"`
}

// Apply returns b with spec's choices: its CPUs and MemoryMiB where not
// zero, its Kernel with its Initrd where it names a kernel, and its Append
// after b's. Kernel and initrd paths are made absolute. Sizes are the
// backend's to check (their limits differ).
func (b Boot) Apply(spec VMSpec) (Boot, error) {
	if spec.CPUs != 0 {
		b.CPUs = spec.CPUs
	}
	if spec.MemoryMiB != 0 {
		b.MemoryMiB = spec.MemoryMiB
	}
	if spec.Kernel != "" {
		b.Kernel, b.Initrd = spec.Kernel, spec.Initrd
	}
	switch {
	case spec.Append == "":
	case b.Append == "":
		b.Append = spec.Append
	default:
		b.Append += " " + spec.Append
	}
	for _, p := range []*string{&b.Kernel, &b.Initrd} {
		if *p == "" {
			continue
		}
		abs, err := filepath.Abs(*p)
		if err != nil {
			return b, fmt.Errorf("%w: %s: %w", ErrInvalidArgument, *p, err)
		}
		*p = abs
	}
	return b, nil
}

// CheckFiles reports a kernel or initrd that is not a regular file.
func (b Boot) CheckFiles() error {
	if err := CheckFile("kernel", b.Kernel); err != nil {
		return err
	}
	return CheckFile("initrd", b.Initrd)
}

// CheckFile reports, wrapping ErrInvalidArgument, that the file a VM
// needs (what: "kernel", "device state", ...) is not a regular file. An
// empty path passes: the caller decides whether the file is optional.
func CheckFile(what, path string) error {
	if path == "" {
		return nil
	}
	if fi, err := os.Stat(path); err != nil || !fi.Mode().IsRegular() {
		return fmt.Errorf("%w: %s %q is not a readable file", ErrInvalidArgument, what, path)
	}
	return nil
}

// Check validates what every backend's Start and Restore need of a spec:
// an ID, a valid host name, and a VM directory that is a clean absolute
// path and exists. Errors wrap ErrInvalidArgument.
func (s VMSpec) Check() error {
	if s.ID == "" {
		return fmt.Errorf("%w: VM spec has no ID", ErrInvalidArgument)
	}
	if err := CheckHostname(s.Hostname); err != nil {
		return fmt.Errorf("%w: VM %s: %w", ErrInvalidArgument, s.ID, err)
	}
	if !IsVMDir(s.Dir) {
		return fmt.Errorf("%w: VM %s: directory %q is not a clean absolute path", ErrInvalidArgument, s.ID, s.Dir)
	}
	if fi, err := os.Stat(s.Dir); err != nil || !fi.IsDir() {
		return fmt.Errorf("%w: VM %s: directory %q does not exist", ErrInvalidArgument, s.ID, s.Dir)
	}
	return nil
}
