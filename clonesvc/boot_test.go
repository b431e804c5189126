package clonesvc

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestBootApply(t *testing.T) {
	def := Boot{CPUs: 1, MemoryMiB: 256, Kernel: "/k", Initrd: "/i", Append: "quiet"}
	got, err := def.Apply(VMSpec{})
	if err != nil || got != def {
		t.Fatalf("empty spec: %+v, %v; want the defaults", got, err)
	}
	got, err = def.Apply(VMSpec{CPUs: 2, MemoryMiB: 512, Kernel: "/k2", Append: "debug"})
	want := Boot{CPUs: 2, MemoryMiB: 512, Kernel: "/k2", Append: "quiet debug"}
	if err != nil || got != want {
		t.Fatalf("Apply = %+v, %v; want %+v (a spec's kernel comes with its own initrd, none here)", got, err, want)
	}
	got, err = Boot{}.Apply(VMSpec{Kernel: "rel/k", Initrd: "rel/i", Append: "a"})
	wd, _ := os.Getwd()
	if err != nil || got.Kernel != filepath.Join(wd, "rel/k") || got.Initrd != filepath.Join(wd, "rel/i") || got.Append != "a" {
		t.Fatalf("relative paths: %+v, %v", got, err)
	}
}

func TestBootCheckFiles(t *testing.T) {
	dir := t.TempDir()
	k := filepath.Join(dir, "vmlinuz")
	if err := os.WriteFile(k, []byte("k"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := (Boot{Kernel: k}).CheckFiles(); err != nil {
		t.Fatalf("a kernel file and no initrd: %v", err)
	}
	for _, b := range []Boot{{Kernel: filepath.Join(dir, "missing")}, {Kernel: k, Initrd: dir}} {
		if err := b.CheckFiles(); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("%+v: %v, want ErrInvalidArgument", b, err)
		}
	}
}

func TestRecordDecode(t *testing.T) {
	var v struct{ ID string }
	good := Record{Backend: "xen", Version: 1, State: []byte(`{"ID":"vm-1"}`)}
	if err := good.Decode("xen", 1, &v); err != nil || v.ID != "vm-1" {
		t.Fatalf("Decode = %v, %+v", err, v)
	}
	big := append([]byte(`{"ID":"`), make([]byte, maxRecordState)...)
	for _, r := range []Record{
		{Backend: "kvm", Version: 1, State: good.State},
		{Backend: "xen", Version: 2, State: good.State},
		{Backend: "xen", Version: 1, State: []byte(`{"ID":`)},
		{Backend: "xen", Version: 1, State: big},
	} {
		if err := r.Decode("xen", 1, &v); err == nil {
			t.Errorf("record %s v%d (%d bytes) decoded", r.Backend, r.Version, len(r.State))
		}
	}
	for dir, want := range map[string]bool{"/var/lib/x": true, "/": false, "rel": false, "/a/../b": false, "/a/": false} {
		if IsVMDir(dir) != want {
			t.Errorf("IsVMDir(%q) = %v", dir, !want)
		}
	}
}

func TestVMSpecCheck(t *testing.T) {
	dir := t.TempDir()
	if err := (VMSpec{ID: "vm-1", Dir: dir, Hostname: "h-1"}).Check(); err != nil {
		t.Fatalf("good spec: %v", err)
	}
	for _, s := range []VMSpec{
		{Dir: dir},
		{ID: "vm-1", Dir: dir, Hostname: "bad host"},
		{ID: "vm-1", Dir: "rel"},
		{ID: "vm-1", Dir: dir + "/"},
		{ID: "vm-1", Dir: filepath.Join(dir, "missing")},
	} {
		if err := s.Check(); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("%+v: %v, want ErrInvalidArgument", s, err)
		}
	}
}
