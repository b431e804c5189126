package kvmbackend

import (
	"fmt"
	"strings"

	"github.com/rs/zerolog"

	"github.com/snowflock/snowflock/clonesvc"
)

// Accelerators and machine types.
const (
	AccelTCG = "tcg"
	AccelKVM = "kvm"

	MachineQ35     = "q35"
	MachineMicroVM = "microvm"

	NoTHPAuto   = "auto"
	NoTHPAlways = "always"
	NoTHPNever  = "never"
)

// Config is the KVM backend's configuration (section backend.kvm).
type Config struct {
	// QEMU is the emulator binary (default qemu-system-x86_64, from PATH).
	QEMU string `mapstructure:"qemu" json:"qemu"`
	// Accel is tcg (default; works everywhere) or kvm (hosts with a usable
	// /dev/kvm). It is the only difference between the two paths.
	Accel string `mapstructure:"accel" json:"accel"`
	// Machine is q35 (default) or microvm (needs a kernel).
	Machine string `mapstructure:"machine" json:"machine"`
	// Boot holds the defaults for specs that leave them out: cpus and
	// memory_mib (1 and 256), kernel and initrd (for specs that name no
	// kernel), append (before the spec's own).
	clonesvc.Boot `mapstructure:",squash"`
	// NoTHP keeps QEMU from asking for transparent huge pages on guest
	// RAM, so that a fault on RAM mapped from a memory tap (a FUSE file
	// filled on demand) reads the 4 KiB page it touches, not 2–4 MiB
	// around it: QEMU then runs under Launcher, with a seccomp filter that
	// makes its madvise(MADV_HUGEPAGE) a no-op. auto (default): for clones
	// restored onto such memory (VMSpec.MemoryPath); always; never.
	NoTHP string `mapstructure:"no_thp" json:"no_thp"`
	// Launcher is the binary that applies NoTHP and execs QEMU (see
	// LauncherArg); default: the running executable (sfld).
	Launcher string `mapstructure:"launcher" json:"launcher"`
	// Logger receives the backend's logs (default: none).
	Logger zerolog.Logger `mapstructure:"-" json:"-"`
}

// Limits of a VM's size.
const (
	maxCPUs      = 64
	minMemoryMiB = 16
	maxMemoryMiB = 1 << 20
)

// withDefaults fills in what the configuration left out.
func (c Config) withDefaults() Config {
	if c.QEMU == "" {
		c.QEMU = "qemu-system-x86_64"
	}
	if c.Accel == "" {
		c.Accel = AccelTCG
	}
	if c.Machine == "" {
		c.Machine = MachineQ35
	}
	if c.CPUs == 0 {
		c.CPUs = 1
	}
	if c.MemoryMiB == 0 {
		c.MemoryMiB = 256
	}
	if c.NoTHP == "" {
		c.NoTHP = NoTHPAuto
	}
	return c
}

// Validate reports the first problem of a configuration. Empty fields are
// valid: they take their defaults.
func (c Config) Validate() error {
	switch c.Accel {
	case "", AccelTCG, AccelKVM:
	default:
		return fmt.Errorf("backend.kvm.accel %q: want tcg or kvm", c.Accel)
	}
	switch c.Machine {
	case "", MachineQ35, MachineMicroVM:
	default:
		return fmt.Errorf("backend.kvm.machine %q: want q35 or microvm", c.Machine)
	}
	switch c.NoTHP {
	case "", NoTHPAuto, NoTHPAlways, NoTHPNever:
	default:
		return fmt.Errorf("backend.kvm.no_thp %q: want auto, always or never", c.NoTHP)
	}
	if err := checkSize(c.CPUs, c.MemoryMiB); err != nil {
		return fmt.Errorf("backend.kvm: %w", err)
	}
	if strings.ContainsAny(c.Append, "\n\x00") {
		return fmt.Errorf("backend.kvm.append %q: contains a newline or NUL", c.Append)
	}
	return nil
}

// checkSize validates a VM's CPU count and memory size (zero: default).
func checkSize(cpus, memMiB int) error {
	if cpus < 0 || cpus > maxCPUs {
		return fmt.Errorf("cpus %d: want 1..%d", cpus, maxCPUs)
	}
	if memMiB != 0 && (memMiB < minMemoryMiB || memMiB > maxMemoryMiB) {
		return fmt.Errorf("memory_mib %d: want %d..%d", memMiB, minMemoryMiB, maxMemoryMiB)
	}
	return nil
}
