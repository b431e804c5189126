package kvmbackend

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// probeArg makes the test binary the madvise probe (see TestNoTHPFilter).
const probeArg = "__madvise-probe"

// TestMain lets the test binary be the backend's launcher (the default
// Config.Launcher is the running executable), as sfld is in production.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case LauncherArg:
			os.Exit(LauncherMain(os.Args[2:]))
		case probeArg:
			os.Exit(madviseProbe(os.Args[2]))
		}
	}
	os.Exit(m.Run())
}

// madviseProbe maps a file MAP_PRIVATE (as QEMU maps guest RAM), asks for
// huge pages on it as QEMU does, and prints the result, whether the
// mapping got the kernel's VM_HUGEPAGE flag ("hg" in smaps), and its own
// seccomp and no_new_privs state. Then MADV_NOHUGEPAGE on a second
// mapping must work as usual ("nh").
func madviseProbe(dir string) int {
	report := func(name string, advice int) error {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, make([]byte, 4<<20), 0o644); err != nil {
			return err
		}
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		mem, err := unix.Mmap(int(f.Fd()), 0, 4<<20, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE)
		if err != nil {
			return err
		}
		merr := unix.Madvise(mem, advice)
		flags, err := smapsFlags("self", path)
		if err != nil {
			return err
		}
		fmt.Printf("%s madvise=%v flags=%s\n", name, merr, strings.Join(flags, ","))
		return nil
	}
	if err := report("huge", unix.MADV_HUGEPAGE); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := report("nohuge", unix.MADV_NOHUGEPAGE); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	status, _ := os.ReadFile("/proc/self/status")
	for line := range strings.Lines(string(status)) {
		if strings.HasPrefix(line, "Seccomp:") || strings.HasPrefix(line, "NoNewPrivs:") {
			fmt.Print(strings.Join(strings.Fields(line), " ") + "\n")
		}
	}
	return 0
}

// smapsFlags returns the VmFlags of process pid's mapping of path
// ("self" for this process).
func smapsFlags(pid, path string) ([]string, error) {
	data, err := os.ReadFile("/proc/" + pid + "/smaps")
	if err != nil {
		return nil, err
	}
	in := false
	for line := range strings.Lines(string(data)) {
		f := strings.Fields(line)
		switch {
		case len(f) > 0 && strings.Contains(f[0], "-") && !strings.HasSuffix(f[0], ":"):
			in = len(f) >= 6 && f[5] == path
		case in && len(f) > 0 && f[0] == "VmFlags:":
			return f[1:], nil
		}
	}
	return nil, fmt.Errorf("no mapping of %s in /proc/%s/smaps", path, pid)
}

func hasFlag(flags []string, f string) bool {
	for _, x := range flags {
		if x == f {
			return true
		}
	}
	return false
}

// TestSeccompABI checks our mirror of struct seccomp_data and the sizes
// of x/sys/unix's sock_filter and sock_fprog against the kernel's.
func TestSeccompABI(t *testing.T) {
	typ := reflect.TypeOf(seccompData{})
	if typ.Size() != sizeofSeccompData {
		t.Errorf("sizeof(seccomp_data) = %d, want %d", typ.Size(), sizeofSeccompData)
	}
	for _, c := range []struct {
		field string
		off   uintptr
	}{{"Nr", offsetofSeccompNr}, {"Arch", offsetofSeccompArc}, {"InstructionPointer", 8}, {"Args", offsetofSeccompArg}} {
		f, _ := typ.FieldByName(c.field)
		if f.Offset != c.off {
			t.Errorf("offsetof(seccomp_data, %s) = %d, want %d", c.field, f.Offset, c.off)
		}
	}
	if s := reflect.TypeOf(unix.SockFilter{}).Size(); s != 8 || unix.SizeofSockFilter != 8 {
		t.Errorf("sizeof(struct sock_filter) = %d, want 8", s)
	}
	if s := reflect.TypeOf(unix.SockFprog{}).Size(); s != 16 || unix.SizeofSockFprog != 16 {
		t.Errorf("sizeof(struct sock_fprog) = %d, want 16 on x86-64", s)
	}
	// Every jump lands inside the program.
	prog := madviseHugepageFilter(noTHPReturn)
	for i, ins := range prog {
		if ins.Code&0x07 == unix.BPF_JMP && (i+1+int(ins.Jt) >= len(prog) || i+1+int(ins.Jf) >= len(prog)) {
			t.Errorf("instruction %d jumps out of the program", i)
		}
	}
	if last := prog[len(prog)-1]; last.Code != unix.BPF_RET|unix.BPF_K || last.K != unix.SECCOMP_RET_ALLOW {
		t.Error("the program does not end by allowing the call")
	}
}

// runProbe runs the madvise probe, through the launcher when args say so.
func runProbe(t *testing.T, launcher ...string) string {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	args := append(launcher, self, probeArg, t.TempDir())
	if len(launcher) == 0 {
		args = args[1:]
	}
	var stderr bytes.Buffer
	cmd := exec.Command(self, args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("probe %v: %v: %s", args, err, stderr.Bytes())
	}
	return string(out)
}

// probeLine returns the probe's line for a mapping, as madvise result and
// flags.
func probeLine(t *testing.T, out, name string) (string, []string) {
	t.Helper()
	for line := range strings.Lines(out) {
		f := strings.Fields(line)
		if len(f) == 3 && f[0] == name {
			return strings.TrimPrefix(f[1], "madvise="), strings.Split(strings.TrimPrefix(f[2], "flags="), ",")
		}
	}
	t.Fatalf("probe output lacks %s:\n%s", name, out)
	return "", nil
}

// TestNoTHPFilter: under the launcher's filter, madvise(MADV_HUGEPAGE)
// returns success (errno 0) but the mapping does not become a huge-page
// one; MADV_NOHUGEPAGE still works; the program runs with no_new_privs and
// a seccomp filter. Without the launcher the same probe gets "hg".
func TestNoTHPFilter(t *testing.T) {
	plain := runProbe(t)
	res, flags := probeLine(t, plain, "huge")
	if res != "<nil>" || !hasFlag(flags, "hg") {
		t.Fatalf("without the filter: madvise(MADV_HUGEPAGE) = %s, flags %v: want success and hg (THP madvise support)", res, flags)
	}

	out := runProbe(t, LauncherArg, launcherNoTHP, "--")
	t.Logf("probe under the filter:\n%s", out)
	res, flags = probeLine(t, out, "huge")
	if res != "<nil>" {
		t.Errorf("madvise(MADV_HUGEPAGE) under the filter = %s, want success (SECCOMP_RET_ERRNO with errno 0)", res)
	}
	if hasFlag(flags, "hg") {
		t.Errorf("the mapping got VM_HUGEPAGE under the filter: flags %v", flags)
	}
	res, flags = probeLine(t, out, "nohuge")
	if res != "<nil>" || !hasFlag(flags, "nh") {
		t.Errorf("madvise(MADV_NOHUGEPAGE) under the filter = %s, flags %v: want it to work", res, flags)
	}
	if !strings.Contains(out, "Seccomp: 2") || !strings.Contains(out, "NoNewPrivs: 1") {
		t.Errorf("the program does not run with a seccomp filter and no_new_privs:\n%s", out)
	}

	// Without --no-thp the launcher only execs.
	out = runProbe(t, LauncherArg, "--")
	if res, flags := probeLine(t, out, "huge"); res != "<nil>" || !hasFlag(flags, "hg") || !strings.Contains(out, "Seccomp: 0") {
		t.Errorf("launcher without --no-thp changed the program:\n%s", out)
	}
}

// TestLauncherErrors: bad launcher command lines fail with a message.
func TestLauncherErrors(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{LauncherArg, "--bogus", "--", "/bin/true"},
		{LauncherArg, "--no-thp"},
		{LauncherArg, "--", filepath.Join(t.TempDir(), "absent")},
	} {
		out, err := exec.Command(self, args...).CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || !strings.Contains(string(out), LauncherArg) {
			t.Errorf("%v: %v, %q: want a failure naming the launcher", args, err, out)
		}
	}
}

// TestNewChecksLauncher: a launcher binary without the LauncherArg hook
// is refused when the backend is made, not at a clone's first start.
func TestNewChecksLauncher(t *testing.T) {
	newBackend(t, Config{}) // the test binary has the hook (TestMain)
	if _, err := New(Config{Launcher: "/bin/true"}); err == nil || !strings.Contains(err.Error(), LauncherArg) {
		t.Errorf("launcher without the hook: %v, want an error naming %s", err, LauncherArg)
	}
	if _, err := New(Config{Launcher: "/bin/true", NoTHP: NoTHPNever}); err != nil {
		t.Errorf("no_thp never needs no launcher: %v", err)
	}
	if err := (Config{NoTHP: "yes"}).Validate(); err == nil {
		t.Error("no_thp yes accepted")
	}
}
