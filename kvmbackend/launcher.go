package kvmbackend

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"time"

	"golang.org/x/sys/unix"
)

// LauncherArg is the hidden first argument that makes a binary QEMU's
// launcher: a binary whose main starts with
//
//	if len(os.Args) > 1 && os.Args[1] == kvmbackend.LauncherArg {
//		os.Exit(kvmbackend.LauncherMain(os.Args[2:]))
//	}
//
// can be Config.Launcher. Go cannot run code between fork and exec, so
// the backend starts the launcher, which restricts itself and then
// becomes QEMU (same pid) with execve.
const LauncherArg = "__qemu-exec"

// Launcher options (before "--").
const launcherNoTHP = "--no-thp"

// noTHPReturn is what madvise(MADV_HUGEPAGE) returns under the filter:
// SECCOMP_RET_ERRNO with errno 0 skips the call and returns 0, so QEMU
// sees success and never learns (TestNoTHPFilter checks both).
const noTHPReturn = unix.SECCOMP_RET_ERRNO | 0

// launcherArgs is the launcher's command line (after the binary) that
// runs bin with args under the given restrictions.
func launcherArgs(noTHP bool, bin string, args []string) []string {
	a := []string{LauncherArg}
	if noTHP {
		a = append(a, launcherNoTHP)
	}
	a = append(a, "--", bin)
	return append(a, args...)
}

// LauncherMain runs the launcher: args are [--no-thp] -- BIN [ARGS...].
// With --no-thp it sets no_new_privs and installs a seccomp filter that
// turns madvise(MADV_HUGEPAGE) into a no-op; then it execs BIN. It
// returns (an exit status, after a message on stderr) only on failure.
func LauncherMain(args []string) int {
	noTHP := false
	for len(args) > 0 && args[0] != "--" {
		switch args[0] {
		case launcherNoTHP:
			noTHP = true
		default:
			fmt.Fprintf(os.Stderr, "%s: unknown option %q\n", LauncherArg, args[0])
			return 2
		}
		args = args[1:]
	}
	if len(args) < 2 {
		fmt.Fprintf(os.Stderr, "%s: usage: [%s] -- BINARY [ARGS...]\n", LauncherArg, launcherNoTHP)
		return 2
	}
	bin, argv := args[1], args[1:]
	// The filter and no_new_privs belong to the thread that sets them and
	// pass to the program only through that thread's execve.
	runtime.LockOSThread()
	if noTHP {
		if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
			fmt.Fprintf(os.Stderr, "%s: prctl(PR_SET_NO_NEW_PRIVS): %v\n", LauncherArg, err)
			return 1
		}
		if err := setSeccompFilter(madviseHugepageFilter(noTHPReturn)); err != nil {
			fmt.Fprintf(os.Stderr, "%s: prctl(PR_SET_SECCOMP): %v\n", LauncherArg, err)
			return 1
		}
	}
	err := unix.Exec(bin, argv, os.Environ())
	fmt.Fprintf(os.Stderr, "%s: exec %s: %v\n", LauncherArg, bin, err)
	return 1
}

// resolveLauncher returns the launcher binary cfg needs ("" when NoTHP is
// never): Config.Launcher, else the running executable.
func resolveLauncher(cfg Config) (string, error) {
	if cfg.NoTHP == NoTHPNever {
		return "", nil
	}
	if cfg.Launcher != "" {
		bin, err := exec.LookPath(cfg.Launcher)
		if err != nil {
			return "", fmt.Errorf("launcher %q: %w", cfg.Launcher, err)
		}
		return filepath.Abs(bin)
	}
	bin, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("launcher: the running executable: %w", err)
	}
	return bin, nil
}

// launcherCheckTimeout bounds checkLauncher.
const launcherCheckTimeout = 10 * time.Second

// checkLauncher runs QEMU's --version through the launcher with the
// filter on: it fails at once, with the launcher's words, if the binary
// lacks the LauncherArg hook or cannot install the filter.
func checkLauncher(launcher, qemu string) error {
	ctx, cancel := context.WithTimeout(context.Background(), launcherCheckTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, launcher, launcherArgs(true, qemu, []string{"--version"})...).CombinedOutput()
	if err != nil || !bytes.Contains(out, []byte("QEMU")) {
		return fmt.Errorf("launcher %s cannot start QEMU under the no-THP filter (does its main call kvmbackend.LauncherMain for %q?): %v: %.300s",
			launcher, LauncherArg, err, out)
	}
	return nil
}

// command is the binary and arguments that start QEMU for l: QEMU
// itself, or the launcher that restricts itself and then execs QEMU.
func (b *Backend) command(l launch) (string, []string) {
	if !l.NoTHP {
		return b.qemu, l.args()
	}
	return b.launcher, launcherArgs(true, b.qemu, l.args())
}
