package xenbackend

import (
	"fmt"
	"strings"

	"github.com/rs/zerolog"

	"github.com/snowflock/snowflock/clonesvc"
)

// Guest types.
const (
	TypePV  = "pv"
	TypePVH = "pvh"
)

// Config is the Xen backend's configuration (section sfld.xen).
type Config struct {
	// XL is the toolstack binary (default: xl from PATH, else
	// /usr/lib/xen-4.17/bin/xl, where Debian keeps the real one).
	XL string `mapstructure:"xl" json:"xl"`
	// Type is the guest type: pv (default) or pvh.
	Type string `mapstructure:"type" json:"type"`
	// Boot holds the defaults for specs that leave them out: cpus and
	// memory_mib (1 and 256: at 160 MiB and less the test guest's kernel
	// runs out of memory unpacking its 45 MB initramfs, and its files are
	// cut short), kernel and initrd (for specs that name no kernel; a
	// domain boots one: Xen has no firmware for PV), append (before the
	// spec's own).
	clonesvc.Boot `mapstructure:",squash"`
	// TargetMiB, when set, balloons a booted VM down to this size (xl
	// mem-set) once its agent answers: checkpoints then carry only the
	// pages the guest kept.
	TargetMiB int `mapstructure:"target_mib" json:"target_mib"`
	// ConsoleDir is where xenconsoled --log=guest writes the guests'
	// consoles (default /var/log/xen/console).
	ConsoleDir string `mapstructure:"console_dir" json:"console_dir"`
	// Bridge, when set, gives every domain one network interface (a vif,
	// run by Xen's vif-bridge hotplug script) on this dom0 bridge, with a
	// MAC address of its own: a clone's differs from its parent's and from
	// every other live domain's of this backend. Empty: no network device.
	Bridge string `mapstructure:"bridge" json:"bridge"`
	// Logger receives the backend's logs (default: none).
	Logger zerolog.Logger `mapstructure:"-" json:"-"`
}

// Limits of a VM's size.
const (
	maxCPUs      = 64
	minMemoryMiB = 32
	maxMemoryMiB = 1 << 20
)

// debianXL is where Debian installs the real xl (/usr/sbin/xl is a wrapper).
const debianXL = "/usr/lib/xen-4.17/bin/xl"

func (c Config) withDefaults() Config {
	if c.Type == "" {
		c.Type = TypePV
	}
	if c.CPUs == 0 {
		c.CPUs = 1
	}
	if c.MemoryMiB == 0 {
		c.MemoryMiB = 256
	}
	if c.ConsoleDir == "" {
		c.ConsoleDir = "/var/log/xen/console"
	}
	return c
}

// Validate reports the first problem of a configuration. Empty fields are
// valid: they take their defaults.
func (c Config) Validate() error {
	switch c.Type {
	case "", TypePV, TypePVH:
	default:
		return fmt.Errorf("sfld.xen.type %q: want pv or pvh", c.Type)
	}
	if err := checkSize(c.CPUs, c.MemoryMiB); err != nil {
		return fmt.Errorf("sfld.xen: %w", err)
	}
	if c.TargetMiB != 0 && (c.TargetMiB < minMemoryMiB || (c.MemoryMiB != 0 && c.TargetMiB > c.MemoryMiB)) {
		return fmt.Errorf("sfld.xen.target_mib %d: want %d..memory_mib", c.TargetMiB, minMemoryMiB)
	}
	if c.Bridge != "" && !validIfname(c.Bridge) {
		return fmt.Errorf("sfld.xen.bridge %q: want a network interface name (1 to 15 of A-Z a-z 0-9 . _ -)", c.Bridge)
	}
	for name, v := range map[string]string{"kernel": c.Kernel, "initrd": c.Initrd, "append": c.Append, "xl": c.XL, "console_dir": c.ConsoleDir} {
		if err := checkCfgString(v); err != nil {
			return fmt.Errorf("sfld.xen.%s: %w", name, err)
		}
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

// checkCfgString refuses what cannot stand inside a quoted xl.cfg string.
func checkCfgString(s string) error {
	if strings.ContainsAny(s, "\"\\\n\r\x00") {
		return fmt.Errorf("%q contains a quote, backslash, newline or NUL", s)
	}
	return nil
}

// validIfname reports whether s is a Linux network interface name that can
// stand in an xl vif specification (no ',' '=' or quotes).
func validIfname(s string) bool {
	if len(s) == 0 || len(s) > 15 || s == "." || s == ".." {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-') {
			return false
		}
	}
	return true
}
