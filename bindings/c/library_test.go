package main

// The C library tested as its users get it: `make install` into a temporary
// PREFIX, the C test program (testdata/ctest.c) compiled with gcc against
// the installed header and pkg-config file and run under valgrind, the C
// example, and the Python package installed with pip (offline) and tested
// with pytest. Every prerequisite missing is a failure naming the Debian
// package (make deps installs them), never a skip.

import (
	"bytes"
	"debug/dwarf"
	"debug/elf"
	"encoding/xml"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// need fails the test unless the command is on PATH.
func need(t *testing.T, cmd, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(cmd)
	if err != nil {
		t.Fatalf("%s is missing: apt-get install %s (make deps installs it)", cmd, pkg)
	}
	return p
}

func run(t *testing.T, dir string, env []string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out.String())
	}
	return out.String()
}

// writePool writes a static pool of 4 slots (h1, h2: 2 each) with its
// state in dir, and returns the config file's path.
func writePool(t *testing.T, dir string) string {
	t.Helper()
	p := filepath.Join(dir, "pool.yaml")
	text := "state_dir: " + filepath.Join(dir, "state") + "\nallocator:\n  static:\n    hosts:\n" +
		"      - {name: h1, address: 10.0.0.1, slots: 2}\n      - {name: h2, address: 10.0.0.2, slots: 2}\n"
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// headerFunctions returns the functions egosf.h declares.
func headerFunctions(t *testing.T) []string {
	t.Helper()
	src, err := os.ReadFile("egosf.h")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, m := range regexp.MustCompile(`(?m)^[a-z][a-z0-9_ ]*[ *]((?:egosf|sf)_[a-z0-9_]+)\(`).FindAllSubmatch(src, -1) {
		names = append(names, string(m[1]))
	}
	if len(names) < 30 {
		t.Fatalf("found only %d functions in egosf.h: %v", len(names), names)
	}
	return names
}

func TestCodesMatchHeader(t *testing.T) {
	src, err := os.ReadFile("egosf.h")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]int{
		"EGOSF_OK": codeOK, "EGOSF_EINVAL": codeInvalid, "EGOSF_ENONE_AVAILABLE": codeNoneAvailable,
		"EGOSF_ETIMEOUT": codeTimeout, "EGOSF_EUNKNOWN_TICKET": codeUnknownTicket,
		"EGOSF_EBACKEND_DOWN": codeBackendDown, "EGOSF_ENOT_FOUND": codeNotFound,
		"EGOSF_EPERMISSION": codePermission, "EGOSF_EVM_FAILED": codeVMFailed,
		"EGOSF_EUNAVAILABLE": codeUnavailable, "EGOSF_ENOT_IN_GUEST": codeNotInGuest,
		"EGOSF_EINTERNAL": codeInternal,
	}
	got := map[string]int{}
	for _, m := range regexp.MustCompile(`(?m)^\s*(EGOSF_[A-Z_]+) = (\d+)`).FindAllSubmatch(src, -1) {
		var n int
		fmt.Sscan(string(m[2]), &n)
		got[string(m[1])] = n
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("egosf.h codes %v, Go codes %v", got, want)
	}
	if len(want) != codeCount {
		t.Errorf("%d codes, codeCount %d", len(want), codeCount)
	}
}

// TestLibrary builds and installs libegosf, then runs the C and Python
// tests against the installed files.
func TestLibrary(t *testing.T) {
	gcc := need(t, "gcc", "gcc")
	need(t, "pkg-config", "pkg-config")
	valgrind := need(t, "valgrind", "valgrind")
	need(t, "make", "make")
	const python = "/usr/bin/python3" // Debian's, not a pyenv one: CI has only it
	if _, err := os.Stat(python); err != nil {
		t.Fatalf("%s is missing: apt-get install python3", python)
	}
	if out, err := exec.Command(python, "-m", "pytest", "--version").CombinedOutput(); err != nil {
		t.Fatalf("pytest is missing for %s: apt-get install python3-pytest (make deps installs it): %v\n%s", python, err, out)
	}
	if out, err := exec.Command(python, "-c", "import ensurepip, venv").CombinedOutput(); err != nil {
		t.Fatalf("venv is missing for %s: apt-get install python3-venv (make deps installs it): %v\n%s", python, err, out)
	}

	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	prefix := t.TempDir()
	run(t, root, nil, "make", "--no-print-directory", "install", "PREFIX="+prefix)
	lib := filepath.Join(prefix, "lib", "libegosf.so")
	for _, f := range []string{lib, filepath.Join(prefix, "include", "egosf.h"), filepath.Join(prefix, "lib", "pkgconfig", "libegosf.pc")} {
		if _, err := os.Stat(f); err != nil {
			t.Fatalf("make install did not install %s: %v", f, err)
		}
	}

	t.Run("exports", func(t *testing.T) { testExports(t, lib) })
	t.Run("C", func(t *testing.T) { testC(t, gcc, valgrind, root, prefix) })
	t.Run("Python", func(t *testing.T) { testPython(t, python, root, lib) })
}

// testExports checks that the library defines every function egosf.h
// declares.
func testExports(t *testing.T, lib string) {
	f, err := elf.Open(lib)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	syms, err := f.DynamicSymbols()
	if err != nil {
		t.Fatal(err)
	}
	defined := map[string]bool{}
	for _, s := range syms {
		if elf.ST_TYPE(s.Info) == elf.STT_FUNC && s.Section != elf.SHN_UNDEF {
			defined[s.Name] = true
		}
	}
	for _, fn := range headerFunctions(t) {
		if !defined[fn] {
			t.Errorf("egosf.h declares %s; libegosf.so does not define it", fn)
		}
	}
}

// pkgConfig compiles src against the installed header and library.
func pkgConfig(t *testing.T, gcc, prefix, src, out string) {
	t.Helper()
	env := []string{"PKG_CONFIG_PATH=" + filepath.Join(prefix, "lib", "pkgconfig")}
	flags := strings.Fields(run(t, "", env, "pkg-config", "--cflags", "--libs", "libegosf"))
	if !slices.Contains(flags, "-I"+filepath.Join(prefix, "include")) {
		t.Fatalf("pkg-config flags %v lack the installed include directory", flags)
	}
	args := append([]string{"-std=c11", "-D_POSIX_C_SOURCE=200809L", "-Wall", "-Wextra", "-Werror", "-O2", "-g", "-pthread", "-o", out, src}, flags...)
	run(t, "", nil, gcc, args...)
}

func testC(t *testing.T, gcc, valgrind, root, prefix string) {
	dir := t.TempDir()
	lib := filepath.Join(prefix, "lib")
	ctest := filepath.Join(dir, "ctest")
	pkgConfig(t, gcc, prefix, filepath.Join(root, "bindings/c/testdata/ctest.c"), ctest)

	goFuncs := goFunctions(t, filepath.Join(lib, "libegosf.so"))
	env := []string{
		"LD_LIBRARY_PATH=" + lib,
		"SF_GUEST_SOCKET=" + filepath.Join(dir, "no-agent.sock"),
		// Valgrind 3.19 cannot decode RDTSCP, which Go's runtime uses
		// for its clock when the CPU has it; this makes Go use RDTSC.
		// (golang.org/x/sys/cpu, which reads GODEBUG too, warns that it
		// does not know the option: harmless.)
		"GODEBUG=cpu.rdtscp=off",
	}
	pool := writePool(t, dir)
	report := filepath.Join(dir, "valgrind.xml")
	cmd := exec.Command(valgrind, append(valgrindFlags(report), ctest, pool)...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil || !bytes.Contains(out, []byte("ctest: all checks passed")) {
		t.Fatalf("ctest under valgrind: %v\n%s", err, out)
	}
	errs, goCount := memcheckErrors(t, report, goFuncs)
	for _, e := range errs {
		t.Errorf("valgrind: %s", e)
	}
	t.Logf("valgrind: %d errors in C code or leaks; %d inside Go code (ignored, see memcheckErrors)", len(errs), goCount)

	// The C example requests and releases slots from the same pool.
	example := filepath.Join(dir, "slots")
	pkgConfig(t, gcc, prefix, filepath.Join(root, "contrib/examples/c/slots.c"), example)
	eout := run(t, "", env, example, pool)
	if !strings.Contains(eout, "released static-") {
		t.Errorf("C example:\n%s", eout)
	}
	guest := filepath.Join(dir, "guest")
	pkgConfig(t, gcc, prefix, filepath.Join(root, "contrib/examples/c/guest.c"), guest)
	cmd = exec.Command(guest)
	cmd.Env = append(os.Environ(), env...)
	gout, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(gout), "not inside a SnowFlock guest") {
		t.Errorf("C guest example outside a guest: %v\n%s", err, gout)
	}
}

// valgrindFlags are memcheck's options for a program linked with libegosf,
// writing its findings to report (XML).
//
//   - --leak-check=full --show-leak-kinds=definite,indirect: report every
//     block of C memory nothing points to any more. "Possibly lost" blocks
//     are not reported: the threads Go's runtime creates keep their
//     pthread stacks and TLS, pointed into rather than at, until exit.
//   - --error-limit=no: valgrind otherwise stops recording new errors after
//     1000 contexts, which the ones inside Go code would use up.
//   - no suppressions: memcheckErrors sorts the errors instead (valgrind
//     3.19 matches a system call's parameter only by its exact name, so a
//     suppression file cannot say "any system call Go makes").
func valgrindFlags(report string) []string {
	return []string{
		"--tool=memcheck", "--leak-check=full", "--show-leak-kinds=definite,indirect",
		"--error-limit=no", "--num-callers=40", "--xml=yes", "--xml-file=" + report,
	}
}

// memcheckErrors reads valgrind's XML report and returns, one line each,
// every leak and every error whose innermost frame is not Go code, and how
// many errors it found inside Go code.
//
// Why errors inside Go code are ignored: memcheck follows one stack per
// thread and takes every jump of the stack pointer under 2 MB for that
// stack growing or shrinking, marking the memory in between undefined or
// inaccessible. Go switches a thread between goroutine stacks that sit in
// its heap among ordinary Go objects, so after each switch memcheck takes
// Go's own live memory for freed stack and reports the runtime's accesses
// to it (thousands, in runtime, encoding/json, bbolt, and system calls on
// Go buffers). Go 1.25's "valgrind" build tag annotates the stacks, but it
// also declares the Go heap as memory pools, which crashes Debian 12's
// valgrind 3.19. Only errors whose innermost frame is a function Go
// compiled, or of the runtime's own C, runtime/cgo (goFunctions: exact
// names, no patterns), or of the trampolines cgo generates for each call
// from Go to C (file "cgo-gcc-prolog": they copy arguments and results
// between Go's stack and C's) are ignored: errors in all other C code
// (objects.c, the test program, libc, ...) and every leak are failures. Go code touches C memory only to fill the objects the
// library hands out, which the test program then reads and frees in C,
// under memcheck.
func memcheckErrors(t *testing.T, report string, goFuncs map[string]bool) (errs []string, inGo int) {
	t.Helper()
	data, err := os.ReadFile(report)
	if err != nil {
		t.Fatalf("valgrind wrote no report: %v", err)
	}
	var doc struct {
		Errors []struct {
			Unique string `xml:"unique"`
			Kind   string `xml:"kind"`
			What   string `xml:"what"`
			XWhat  string `xml:"xwhat>text"`
			Frames []struct {
				Fn   string `xml:"fn"`
				Obj  string `xml:"obj"`
				File string `xml:"file"`
				Line int    `xml:"line"`
			} `xml:"stack>frame"`
		} `xml:"error"`
		Counts []struct {
			Count  int    `xml:"count"`
			Unique string `xml:"unique"`
		} `xml:"errorcounts>pair"`
	}
	if err := xml.Unmarshal(data, &doc); err != nil {
		t.Fatalf("valgrind report %s: %v", report, err)
	}
	counts := map[string]int{}
	for _, c := range doc.Counts {
		counts[c.Unique] = c.Count
	}
	for _, e := range doc.Errors {
		if !strings.HasPrefix(e.Kind, "Leak_") && len(e.Frames) > 0 &&
			(goFuncs[strings.TrimSuffix(e.Frames[0].Fn, ".abi0")] || e.Frames[0].File == "cgo-gcc-prolog") {
			inGo += max(counts[e.Unique], 1)
			continue
		}
		var stack []string
		for _, f := range e.Frames {
			stack = append(stack, fmt.Sprintf("%s (%s:%d %s)", f.Fn, f.File, f.Line, f.Obj))
		}
		errs = append(errs, fmt.Sprintf("%s: %s%s\n\tat %s", e.Kind, e.What, e.XWhat, strings.Join(stack, "\n\tby ")))
	}
	return errs, inGo
}

// goFunctions returns the names of the functions of lib that are Go's:
// the subprograms of its DWARF compile units in the Go language, and of the
// runtime's own C (runtime/cgo: thread start, which fills in Go's g). (The
// symbol table adds ".abi0" to assembly functions' names; DWARF does not.)
func goFunctions(t *testing.T, lib string) map[string]bool {
	t.Helper()
	f, err := elf.Open(lib)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	d, err := f.DWARF()
	if err != nil {
		t.Fatalf("libegosf.so has no DWARF (built with -ldflags=-w?): %v", err)
	}
	const langGo = 0x16 // DW_LANG_Go
	names := map[string]bool{}
	r := d.Reader()
	inGo := false
	for {
		e, err := r.Next()
		if err != nil {
			t.Fatal(err)
		}
		if e == nil {
			break
		}
		switch e.Tag {
		case dwarf.TagCompileUnit:
			lang, _ := e.Val(dwarf.AttrLanguage).(int64)
			dir, _ := e.Val(dwarf.AttrCompDir).(string)
			inGo = lang == langGo || strings.HasSuffix(dir, "/src/runtime/cgo")
		case dwarf.TagSubprogram:
			if name, _ := e.Val(dwarf.AttrName).(string); inGo && name != "" {
				names[name] = true
			}
		}
	}
	if !names["runtime.mallocgc"] || names["egosf_ticket_free"] {
		t.Fatalf("the Go functions found in %s's DWARF (%d) lack runtime.mallocgc or hold C's egosf_ticket_free", lib, len(names))
	}
	return names
}

// testPython installs the Python package with pip into a fresh venv —
// offline (--no-index), as on a machine without PyPI — and runs the pytest
// suite and the Python examples on the installed package.
func testPython(t *testing.T, python, root, lib string) {
	dir := t.TempDir()
	venv := filepath.Join(dir, "venv")
	// System site-packages: pytest comes from Debian's python3-pytest.
	run(t, dir, nil, python, "-m", "venv", "--system-site-packages", venv)
	py := filepath.Join(venv, "bin", "python")
	run(t, dir, nil, py, "-m", "pip", "install", "--no-index", "--no-cache-dir", "--disable-pip-version-check", "-q", filepath.Join(root, "bindings/python"))
	where := strings.TrimSpace(run(t, dir, nil, py, "-c", "import egosf; print(egosf.__file__)"))
	if !strings.HasPrefix(where, venv) {
		t.Fatalf("egosf imported from %s, not from the venv it was installed into", where)
	}
	env := []string{
		"EGOSF_LIBRARY=" + lib,
		"SF_GUEST_SOCKET=" + filepath.Join(dir, "no-agent.sock"),
		"PYTHONDONTWRITEBYTECODE=1", // nothing written into the source tree
	}
	out := run(t, dir, env, py, "-m", "pytest", "-q", "-p", "no:cacheprovider", filepath.Join(root, "bindings/python/tests"))
	t.Logf("pytest: %s", lastLine(out))

	pool := writePool(t, dir)
	out = run(t, dir, env, py, filepath.Join(root, "contrib/examples/python/slots.py"), pool)
	if !strings.Contains(out, "released static-") {
		t.Errorf("Python example:\n%s", out)
	}
	cmd := exec.Command(py, filepath.Join(root, "contrib/examples/python/guest.py"))
	cmd.Env = append(os.Environ(), env...)
	gout, err := cmd.CombinedOutput()
	if cmd.ProcessState == nil || cmd.ProcessState.ExitCode() != 2 || !strings.Contains(string(gout), "not inside a SnowFlock guest") {
		t.Errorf("Python guest example outside a guest: %v\n%s", err, gout)
	}
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}
