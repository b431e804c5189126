package kvmbackend

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// machine is everything needed to rebuild a VM's QEMU command line; a
// checkpoint carries it (clonesvc.Checkpoint.Machine, as JSON) so that a
// clone runs on exactly the machine its device state came from.
type machine struct {
	Type      string `json:"type"`
	Accel     string `json:"accel"`
	CPUs      int    `json:"cpus"`
	MemoryMiB int    `json:"memory_mib"`
	Kernel    string `json:"kernel,omitempty"`
	Initrd    string `json:"initrd,omitempty"`
	// Append is the configuration's and the spec's kernel arguments; the
	// backend adds its own (console, sf.hostname, lpj) when it builds the
	// command line.
	Append string `json:"append,omitempty"`
}

// maxMachineJSON caps the machine configuration a checkpoint may carry.
const maxMachineJSON = 64 << 10

// decodeMachine parses and validates a checkpoint's machine configuration.
func decodeMachine(data []byte) (machine, error) {
	var m machine
	if len(data) > maxMachineJSON {
		return m, fmt.Errorf("machine configuration of %d bytes: more than %d", len(data), maxMachineJSON)
	}
	if err := json.Unmarshal(data, &m); err != nil {
		return m, fmt.Errorf("machine configuration: %w", err)
	}
	return m, m.validate()
}

func (m machine) validate() error {
	switch {
	case m.Type != MachineQ35 && m.Type != MachineMicroVM:
		return fmt.Errorf("machine type %q: want q35 or microvm", m.Type)
	case m.Accel != AccelTCG && m.Accel != AccelKVM:
		return fmt.Errorf("accel %q: want tcg or kvm", m.Accel)
	case m.CPUs < 1:
		return fmt.Errorf("cpus %d: want at least 1", m.CPUs)
	case m.MemoryMiB < minMemoryMiB:
		return fmt.Errorf("memory_mib %d: want at least %d", m.MemoryMiB, minMemoryMiB)
	case m.Type == MachineMicroVM && m.Kernel == "":
		return fmt.Errorf("machine microvm has no firmware: it needs a kernel")
	case m.Kernel == "" && (m.Initrd != "" || m.Append != ""):
		return fmt.Errorf("initrd or kernel arguments without a kernel")
	case strings.ContainsAny(m.Append, "\n\x00"):
		return fmt.Errorf("kernel arguments %q contain a newline or NUL", m.Append)
	}
	for _, p := range []string{m.Kernel, m.Initrd} {
		if p != "" && (!filepath.IsAbs(p) || strings.ContainsAny(p, "\n\x00")) {
			return fmt.Errorf("path %q: want an absolute path without newline or NUL", p)
		}
	}
	return checkSize(m.CPUs, m.MemoryMiB)
}

// File names inside a VM's directory.
const (
	fileMem     = "mem"
	fileQMP     = "qmp.sock"
	fileGuest   = "guest.sock"
	fileConsole = "console.log"
	fileLog     = "qemu.log"
	filePID     = "qemu.pid"
)

// guestPortName is the virtio-serial port the in-guest agent opens.
const guestPortName = "org.snowflock.guest"

// launch describes one QEMU process to start.
type launch struct {
	machine
	ID       string
	Dir      string
	Hostname string
	// MemPath is the guest RAM file; Share maps it shared (a parent) or
	// private copy-on-write (a clone).
	MemPath string
	Share   bool
	// Incoming starts QEMU waiting for its device state (-incoming defer).
	Incoming bool
	// NoTHP runs QEMU under the launcher's filter that keeps it from
	// asking for huge pages on guest RAM (Config.NoTHP).
	NoTHP bool
}

// optValue escapes a value for a QEMU option list (a comma is doubled).
func optValue(s string) string { return strings.ReplaceAll(s, ",", ",,") }

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

// args is QEMU's command line (without the binary).
func (l launch) args() []string {
	path := func(name string) string { return optValue(filepath.Join(l.Dir, name)) }
	mtype := l.Type + ",memory-backend=mem"
	serialBus := "virtio-serial-pci"
	if l.Type == MachineMicroVM {
		// ACPI stays on: the guest finds its virtio-mmio devices through
		// it (the Debian cloud kernel lacks VIRTIO_MMIO_CMDLINE_DEVICES).
		mtype += ",pit=on,pic=on,rtc=on"
		serialBus = "virtio-serial-device"
	}
	a := []string{
		"-name", "guest=" + optValue(l.ID),
		"-nographic", "-nodefaults", "-no-user-config", "-no-reboot",
		"-accel", l.Accel,
		"-machine", mtype,
		"-smp", strconv.Itoa(l.CPUs),
		"-m", strconv.Itoa(l.MemoryMiB) + "M",
		"-object", fmt.Sprintf("memory-backend-file,id=mem,size=%dM,mem-path=%s,share=%s",
			l.MemoryMiB, optValue(l.MemPath), onOff(l.Share)),
		"-chardev", "file,id=con,path=" + path(fileConsole),
		"-serial", "chardev:con",
		"-chardev", "socket,id=ch0,path=" + path(fileGuest) + ",server=on,wait=off",
		"-device", serialBus + ",id=vser",
		"-device", "virtserialport,bus=vser.0,chardev=ch0,name=" + guestPortName,
		// Not -qmp unix:PATH: that legacy form misparses paths with '='.
		"-chardev", qmpChardev(l.Dir),
		"-mon", "chardev=qmp,mode=control",
		"-pidfile", filepath.Join(l.Dir, filePID),
	}
	if l.Kernel != "" {
		a = append(a, "-kernel", l.Kernel, "-append", l.cmdline())
		if l.Initrd != "" {
			a = append(a, "-initrd", l.Initrd)
		}
	}
	if l.Incoming {
		a = append(a, "-incoming", "defer")
	}
	return a
}

// qmpChardev is the -chardev option of dir's QMP socket.
func qmpChardev(dir string) string {
	return "socket,id=qmp,path=" + optValue(filepath.Join(dir, fileQMP)) + ",server=on,wait=off"
}

// cmdline is the guest kernel's command line.
func (l launch) cmdline() string {
	// init_on_free=1: the guest zeroes the pages it frees, so memory free
	// at a checkpoint is in its zero-page bitmap and never fetched by a
	// clone on another host (the avoidance heuristic for free pages).
	parts := []string{"console=ttyS0", "init_on_free=1"}
	if l.Type == MachineMicroVM {
		// Under TCG the PIT calibration fails on a busy host and microvm
		// has no HPET or PM timer to fall back on: tell the kernel the
		// loop and TSC rates instead.
		parts = append(parts, "lpj=4000000")
		if khz := hostTSCkHz(); l.Accel == AccelTCG && khz > 0 {
			parts = append(parts, "tsc_early_khz="+strconv.Itoa(khz))
		}
	}
	if l.Hostname != "" {
		parts = append(parts, "sf.hostname="+l.Hostname)
	}
	if l.Append != "" {
		parts = append(parts, l.Append)
	}
	return strings.Join(parts, " ")
}

// shellQuote quotes s for /bin/sh (QEMU runs exec: migration URIs with
// sh -c).
func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// hostTSCkHz is the host CPU's clock in kHz from /proc/cpuinfo (0 when it
// cannot be read).
func hostTSCkHz() int {
	data, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if ok && strings.TrimSpace(k) == "cpu MHz" {
			mhz, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil || mhz <= 0 {
				return 0
			}
			return int(mhz * 1000)
		}
	}
	return 0
}
