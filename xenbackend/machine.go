package xenbackend

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
)

// machine is what a VM is made of: the part of its xl configuration that
// clones keep (Checkpoint.Machine carries it as JSON).
type machine struct {
	Type      string `json:"type"`
	CPUs      int    `json:"cpus"`
	MemoryMiB int    `json:"memory_mib"`
	Kernel    string `json:"kernel"`
	Initrd    string `json:"initrd,omitempty"`
	// Append is the kernel command line without what the backend adds
	// (console, sf.hostname).
	Append string `json:"append,omitempty"`
}

func (m machine) validate() error {
	switch m.Type {
	case TypePV, TypePVH:
	default:
		return fmt.Errorf("guest type %q: want pv or pvh", m.Type)
	}
	if m.Kernel == "" {
		return fmt.Errorf("no kernel: a Xen PV or PVH guest boots a kernel (set sfld.xen.kernel)")
	}
	for _, p := range []string{m.Kernel, m.Initrd} {
		if p != "" && !filepath.IsAbs(p) {
			return fmt.Errorf("path %q: want an absolute path", p)
		}
		if err := checkCfgString(p); err != nil {
			return err
		}
	}
	if err := checkCfgString(m.Append); err != nil {
		return fmt.Errorf("kernel command line: %w", err)
	}
	if m.CPUs < 1 {
		return fmt.Errorf("cpus %d: want at least 1", m.CPUs)
	}
	if m.MemoryMiB == 0 {
		return fmt.Errorf("memory_mib 0")
	}
	return checkSize(m.CPUs, m.MemoryMiB)
}

func decodeMachine(b []byte) (machine, error) {
	var m machine
	if len(b) > 64<<10 {
		return m, fmt.Errorf("machine configuration of %d bytes", len(b))
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return m, fmt.Errorf("machine configuration: %w", err)
	}
	return m, m.validate()
}

// domainName is the Xen domain name of the VM with service ID id: the
// prefix marks the domains this backend owns.
func domainName(id string) string { return "sf-" + id }

// cmdline is the guest kernel's command line.
func (m machine) cmdline(hostname string) string {
	parts := []string{"console=hvc0"}
	if m.Append != "" {
		parts = append(parts, m.Append)
	}
	if hostname != "" {
		parts = append(parts, "sf.hostname="+hostname)
	}
	return strings.Join(parts, " ")
}

// xlConfig renders the domain's xl.cfg(5). Every string was checked by
// validate (no quote, backslash or newline), and name and hostname are
// RFC 1123 names. A domain ends when its guest powers off, reboots or
// crashes: a SnowFlock VM is never restarted behind the service's back.
// With a nic, the domain has one vif with that MAC on that bridge.
func (m machine) xlConfig(name, hostname string, n *nic) []byte {
	var b strings.Builder
	q := strconv.Quote
	fmt.Fprintf(&b, "name = %s\n", q(name))
	fmt.Fprintf(&b, "type = %s\n", q(m.Type))
	fmt.Fprintf(&b, "kernel = %s\n", q(m.Kernel))
	if m.Initrd != "" {
		fmt.Fprintf(&b, "ramdisk = %s\n", q(m.Initrd))
	}
	fmt.Fprintf(&b, "extra = %s\n", q(m.cmdline(hostname)))
	fmt.Fprintf(&b, "memory = %d\nmaxmem = %d\n", m.MemoryMiB, m.MemoryMiB)
	fmt.Fprintf(&b, "vcpus = %d\n", m.CPUs)
	if n != nil {
		fmt.Fprintf(&b, "vif = [ %s ]\n", q("mac="+n.MAC+",bridge="+n.Bridge))
	}
	b.WriteString("on_poweroff = \"destroy\"\non_reboot = \"destroy\"\non_crash = \"destroy\"\n")
	return []byte(b.String())
}

// nic is a domain's network interface: its MAC and the dom0 bridge.
type nic struct{ MAC, Bridge string }
