package kvmbackend

import (
	"slices"
	"strings"
	"testing"

	"github.com/snowflock/snowflock/clonesvc"
)

func TestConfigValidate(t *testing.T) {
	for _, c := range []Config{{}, {Accel: "kvm", Machine: "microvm", Boot: clonesvc.Boot{CPUs: 2, MemoryMiB: 512}}} {
		if err := c.Validate(); err != nil {
			t.Errorf("%+v: %v", c, err)
		}
	}
	for _, c := range []Config{
		{Accel: "hvf"}, {Machine: "pc"}, {Boot: clonesvc.Boot{CPUs: -1}}, {Boot: clonesvc.Boot{CPUs: maxCPUs + 1}},
		{Boot: clonesvc.Boot{MemoryMiB: 8}}, {Boot: clonesvc.Boot{Append: "a\nb"}},
	} {
		if err := c.Validate(); err == nil {
			t.Errorf("%+v: accepted", c)
		}
	}
	d := Config{}.withDefaults()
	if d.QEMU != "qemu-system-x86_64" || d.Accel != AccelTCG || d.Machine != MachineQ35 || d.CPUs != 1 || d.MemoryMiB != 256 {
		t.Errorf("defaults %+v", d)
	}
}

// The KVM path differs from TCG only by -accel; microvm gets its TCG
// clock options and lpj, and the virtio-mmio serial bus.
func TestCommandLine(t *testing.T) {
	l := launch{machine: machine{Type: MachineMicroVM, Accel: AccelKVM, CPUs: 2, MemoryMiB: 64, Kernel: "/k", Append: "quiet"},
		ID: "vm", Dir: "/d,x", Hostname: "h1", MemPath: "/d,x/mem", Share: false, Incoming: true}
	args := strings.Join(l.args(), " ")
	for _, want := range []string{
		"-accel kvm", "-machine microvm,memory-backend=mem,pit=on,pic=on,rtc=on",
		"mem-path=/d,,x/mem,share=off", "-device virtio-serial-device,id=vser",
		"-append console=ttyS0 init_on_free=1 lpj=4000000 sf.hostname=h1 quiet", "-incoming defer",
		"path=/d,,x/guest.sock,server=on,wait=off", "-no-reboot",
	} {
		if !strings.Contains(args, want) {
			t.Errorf("command line lacks %q:\n%s", want, args)
		}
	}
	l.Type, l.Accel, l.Kernel, l.Append, l.Incoming, l.Share = MachineQ35, AccelTCG, "", "", false, true
	a := l.args()
	if slices.Contains(a, "-kernel") || slices.Contains(a, "-append") || slices.Contains(a, "-incoming") {
		t.Errorf("q35 without kernel: %v", a)
	}
	if !strings.Contains(strings.Join(a, " "), "share=on") || !strings.Contains(strings.Join(a, " "), "virtio-serial-pci") {
		t.Errorf("q35 parent: %v", a)
	}
	if strings.Contains(strings.Join(a, " "), "balloon") {
		t.Error("a VM has a balloon device")
	}
}
