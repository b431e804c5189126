package kvmbackend

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/snowflock/snowflock/clonesvc"
	"github.com/snowflock/snowflock/egosf/guestproto"
)

// guestImage returns the test guest's kernel and initrd (make guest), or
// fails the test saying how to build them.
func guestImage(t *testing.T) (kernel, initrd string) {
	t.Helper()
	kernel, _ = filepath.Abs("../build/guest/vmlinuz")
	initrd, _ = filepath.Abs("../build/guest/initrd.img")
	for _, f := range []string{kernel, initrd} {
		if _, err := os.Stat(f); err != nil {
			t.Fatalf("test guest missing (%v): run `make guest`", err)
		}
	}
	return kernel, initrd
}

// waitConsole waits until the VM's console contains want.
func waitConsole(t *testing.T, vm *VM, want string) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		data, _ := os.ReadFile(vm.ConsolePath())
		if strings.Contains(string(data), want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("console of %s never showed %q:\n%s", vm.ID(), want, data)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// hello says hello to the VM's guest agent over its channel and returns
// the agent's version.
func hello(t *testing.T, vm *VM) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := vm.DialChannel(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := guestproto.Write(conn, &guestproto.Message{ID: 1, Op: guestproto.OpHello}); err != nil {
		t.Fatal(err)
	}
	got := make(chan *guestproto.Message, 1)
	go func() {
		m, err := guestproto.NewReader(conn).Read()
		if err != nil {
			t.Error(err)
		}
		got <- m
	}()
	select {
	case m := <-got:
		if m == nil || !m.Reply || m.ID != 1 || m.Agent == "" {
			t.Fatalf("hello reply %+v", m)
		}
		return m.Agent
	case <-ctx.Done():
		conn.Close()
		t.Fatal("the guest agent did not answer hello")
	}
	return ""
}

// TestMicroVMGuest: the real guest boots on microvm under TCG, its agent
// answers over virtio-serial (virtio-mmio, found through ACPI), and a clone
// restored from a checkpoint answers on its own channel.
func TestMicroVMGuest(t *testing.T) {
	kernel, initrd := guestImage(t)
	b := newBackend(t, Config{Machine: MachineMicroVM, Boot: clonesvc.Boot{Kernel: kernel, Initrd: initrd, MemoryMiB: 256}})
	parent := startVM(t, b, "micro")
	waitConsole(t, parent, "snowflock-guest: ready")
	hello(t, parent)
	cp, err := parent.Checkpoint(testContext(t), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	clone := restoreVM(t, b, "micro-clone", cp)
	if !isRunning(t, clone) {
		t.Fatal("the microvm clone is not running")
	}
	hello(t, clone)
	hello(t, parent) // the parent runs on
}
