package xenbackend

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// xl runs the toolstack. Every command gets its own process group so that
// a cancelled context stops xl and the helpers it forked
// (libxl-save-helper); the domain itself lives on in Xen.
type xl struct {
	bin string
}

// resolveXL finds the xl binary.
func resolveXL(name string) (string, error) {
	if name != "" {
		p, err := exec.LookPath(name)
		if err != nil {
			return "", fmt.Errorf("xl binary %q: %w", name, err)
		}
		return p, nil
	}
	if fi, err := os.Stat(debianXL); err == nil && fi.Mode().IsRegular() {
		return debianXL, nil
	}
	p, err := exec.LookPath("xl")
	if err != nil {
		return "", fmt.Errorf("xl not found in PATH nor at %s (install xen-utils-4.17): %w", debianXL, err)
	}
	return p, nil
}

// xlError is a failed xl command: its arguments and what it printed.
type xlError struct {
	args   []string
	err    error
	stderr string
}

func (e *xlError) Error() string {
	msg := strings.TrimSpace(e.stderr)
	if len(msg) > 2000 {
		msg = "…" + msg[len(msg)-2000:]
	}
	if msg == "" {
		return fmt.Sprintf("xl %s: %v", strings.Join(e.args, " "), e.err)
	}
	return fmt.Sprintf("xl %s: %v: %s", strings.Join(e.args, " "), e.err, msg)
}

func (e *xlError) Unwrap() error { return e.err }

// command returns an xl command bound to ctx.
func (x xl) command(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, x.bin, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	return cmd
}

// run runs xl with args and returns its standard output.
func (x xl) run(ctx context.Context, args ...string) ([]byte, error) {
	cmd := x.command(ctx, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if errors.Is(err, exec.ErrWaitDelay) {
		// xl exited; a daemon it forked (the domain's reaper) kept our
		// pipes open for a while.
		err = nil
	}
	if err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (%w)", ctx.Err(), err)
		}
		return stdout.Bytes(), &xlError{args: args, err: err, stderr: stderr.String()}
	}
	return stdout.Bytes(), nil
}

// limitedBuffer keeps the last 16 KiB written to it (xl's stderr).
type limitedBuffer struct {
	mu  sync.Mutex
	buf []byte
}

func (l *limitedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf = append(l.buf, p...)
	if over := len(l.buf) - 16<<10; over > 0 {
		l.buf = append(l.buf[:0], l.buf[over:]...)
	}
	return len(p), nil
}

func (l *limitedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.TrimSpace(string(l.buf))
}
