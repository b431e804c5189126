// Package xenbed gives tests a real Xen 4.17 host: Xen and a PV dom0 with
// the Xen toolstack (xl) inside one QEMU under TCG, so no KVM and no Xen on
// the test machine are needed.
//
// It drives contrib/testbed/xen/testbed, which does all the work, so that the
// tests and `make xen-up` build the same bed. The boot files (Xen, the dom0
// kernel and base initramfs) come from contrib/testbed/xen/build (`make
// xen-image`, cached in build/xen; BuildImage runs it). What a test adds to
// dom0 — sfld, its configuration and certificates, the domU kernel, test
// programs — is appended to the initramfs at boot (Options.Sfld, Guest,
// Overlay), so changing those never rebuilds the image.
//
// In dom0: the NIC is 10.0.2.15/24 (QEMU user networking, gateway 10.0.2.2)
// and 127.0.0.1:Port() on this machine is forwarded to dom0's port 7468
// (sfld's); guest consoles are logged to /var/log/xen/console/guest-NAME.log;
// sfld, when present, runs under a restart loop (PID in /run/sfld.pid, log
// /var/log/sfld.log); /var/lib/snowflock is a tmpfs (checkpoint images).
// Bed.Exec runs shell commands in dom0 as root over a virtio-serial control
// channel (DIR/ctl.sock, root only).
//
// A bed is taken down by Bed.Stop, or by a watchdog when the owner process
// (by default this one) is gone, or by the next Start on the same Dir.
package xenbed

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// DomainPort is the port in dom0 that Port() forwards to (sfld's).
const DomainPort = 7468

// Dom0Addr is dom0's address on its (QEMU user) network.
const Dom0Addr = "10.0.2.15"

// Options say what bed to make. All are optional.
type Options struct {
	// Dir holds everything of the bed; it must not exist, or hold a stale
	// bed (whose owner is gone), or be empty. Default: a new directory
	// under os.TempDir(). No white space or commas.
	Dir string
	// Overlay is a directory whose files are added to dom0's root file
	// system at the same paths (e.g. usr/bin/PROG, etc/...), last.
	Overlay string
	// Sfld is a static linux/amd64 sfld binary (CGO_ENABLED=0) for dom0:
	// with it the bed makes a CA (DIR/tls, DIR/host.yaml for sfctl here)
	// and dom0 gets /usr/bin/sfld, /etc/snowflock/sfld.yaml (hypervisor
	// xen) and its certificate, and runs sfld under a restart loop.
	Sfld string
	// Guest is a directory with the domU's vmlinuz and initrd.img (make
	// guest: build/guest), put at /var/lib/snowflock/guest/ in dom0.
	Guest string
	// Port is the port on 127.0.0.1 forwarded to dom0's DomainPort
	// (default: a free one).
	Port int
	// MemMiB is the QEMU machine's memory (default 4096) and Dom0MemMiB
	// dom0's share of it (default 1536); the rest, less Xen's own, is for
	// domUs.
	MemMiB, Dom0MemMiB int
	// Image is the directory of the boot files (default: build/xen of the
	// source tree this package was built from).
	Image string
	// Owner is the process whose end takes the bed down (default: this
	// process; -1: no watchdog).
	Owner int
	// Timeout bounds the boot (default 300 s: dom0 is ready in 13-30 s on
	// an idle 2-core machine, but took 68 s under a load of 6).
	Timeout time.Duration
	// Script is the test bed script (default: DefaultScript()).
	Script string
	// Logf receives the script's progress lines (nil: dropped).
	Logf func(format string, args ...any)
}

// Bed is a running Xen host.
type Bed struct {
	// Dir holds the bed's files: serial.log, ctl.sock, and with Sfld
	// host.yaml (sfctl's --config here) and tls/.
	Dir    string
	port   int
	pid    int
	script string
	logf   func(string, ...any)

	mu      sync.Mutex
	stopped bool
}

var seq atomic.Int32

// sourceRoot is the top of the source tree this package was built from.
func sourceRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// DefaultScript is contrib/testbed/xen/testbed in the source tree this
// package was built from.
func DefaultScript() string {
	return filepath.Join(sourceRoot(), "contrib", "testbed", "xen", "testbed")
}

// DefaultImage is build/xen in the source tree this package was built from.
func DefaultImage() string { return filepath.Join(sourceRoot(), "build", "xen") }

// BuildImage runs contrib/testbed/xen/build (make xen-image): it returns at
// once when the image is up to date, and takes about a minute otherwise
// (it downloads Debian packages with apt-get download the first time).
func BuildImage(ctx context.Context) error {
	cmd := exec.CommandContext(ctx, filepath.Join(sourceRoot(), "contrib", "testbed", "xen", "build"))
	cmd.Env = cleanEnv()
	cmd.WaitDelay = 10 * time.Second
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("xenbed: contrib/testbed/xen/build: %w: %s", err, lastLines(string(out), 30))
	}
	return nil
}

// Start boots a bed and returns once dom0 is up and `xl list` works there
// (about 15-30 s on an idle machine). On failure nothing of it is left, and the error carries
// the end of the console log.
func Start(ctx context.Context, opts Options) (*Bed, error) {
	if opts.Script == "" {
		opts.Script = DefaultScript()
	}
	if opts.Dir == "" {
		opts.Dir = filepath.Join(os.TempDir(), fmt.Sprintf("sf-xenbed-%d-%d", os.Getpid(), seq.Add(1)))
	}
	dir, err := filepath.Abs(opts.Dir)
	if err != nil {
		return nil, err
	}
	if opts.Owner == 0 {
		opts.Owner = os.Getpid()
	}
	if opts.Timeout == 0 {
		opts.Timeout = 300 * time.Second
	}
	args := []string{"up", "--dir", dir, "--timeout", strconv.Itoa(int((opts.Timeout + time.Second - 1) / time.Second))}
	for _, f := range []struct{ flag, val string }{
		{"--overlay-dir", opts.Overlay}, {"--sfld", opts.Sfld}, {"--guest", opts.Guest}, {"--image", opts.Image},
	} {
		if f.val != "" {
			args = append(args, f.flag, f.val)
		}
	}
	for _, f := range []struct {
		flag string
		val  int
	}{{"--port", opts.Port}, {"--mem", opts.MemMiB}, {"--dom0-mem", opts.Dom0MemMiB}} {
		if f.val != 0 {
			args = append(args, f.flag, strconv.Itoa(f.val))
		}
	}
	if opts.Owner > 0 {
		args = append(args, "--owner", strconv.Itoa(opts.Owner))
	}
	b := &Bed{Dir: dir, script: opts.Script, logf: opts.Logf}
	// The script bounds the boot itself; this is for a script that hangs.
	uctx, cancel := context.WithTimeout(ctx, opts.Timeout+time.Minute)
	defer cancel()
	out, stderr, err := b.run(uctx, args...)
	if err != nil {
		// A script that failed took down what it made (and one that
		// refused made nothing); one that was killed could not.
		if ee := (*exec.ExitError)(nil); !errors.As(err, &ee) || !ee.Exited() {
			b.down(context.Background())
		}
		return nil, fmt.Errorf("xenbed: testbed up: %w: %s", err, lastLines(stderr, 60))
	}
	if b.logf != nil && strings.TrimSpace(stderr) != "" {
		b.logf("xenbed: %s", strings.TrimSpace(stderr))
	}
	for line := range strings.Lines(out) {
		k, v, _ := strings.Cut(strings.TrimSpace(line), "=")
		switch k {
		case "XENBED_PORT":
			b.port, _ = strconv.Atoi(v)
		case "XENBED_PID":
			b.pid, _ = strconv.Atoi(v)
		}
	}
	if b.port == 0 || b.pid == 0 {
		b.down(context.Background())
		return nil, fmt.Errorf("xenbed: testbed up printed no XENBED_PORT/XENBED_PID:\n%s", out)
	}
	return b, nil
}

// Port is the port on 127.0.0.1 forwarded to dom0's DomainPort.
func (b *Bed) Port() int { return b.port }

// Addr is 127.0.0.1:Port().
func (b *Bed) Addr() string { return "127.0.0.1:" + strconv.Itoa(b.port) }

// PID is the QEMU process's.
func (b *Bed) PID() int { return b.pid }

// HostConfig is the configuration for sfctl on this machine (with
// Options.Sfld): sfctl --config HostConfig() --addr Addr() info.
func (b *Bed) HostConfig() string { return filepath.Join(b.Dir, "host.yaml") }

// SerialLog returns the end (about 8 KB) of the console log: Xen's and
// dom0's kernel messages and dom0 init's "snowflock-xen:" lines. For
// failure messages.
func (b *Bed) SerialLog() string {
	data, _ := os.ReadFile(filepath.Join(b.Dir, "serial.log"))
	if len(data) > 8000 {
		data = data[len(data)-8000:]
	}
	return strings.ReplaceAll(string(data), "\r", "")
}

// ExitError is a command in dom0 that exited with a non-zero status.
type ExitError struct {
	Cmd    string
	Status int
	Output string
}

func (e *ExitError) Error() string {
	return fmt.Sprintf("dom0: %q exited with status %d: %s", e.Cmd, e.Status, lastLines(e.Output, 20))
}

// DefaultExecTimeout bounds Exec when ctx has no deadline.
const DefaultExecTimeout = 2 * time.Minute

// Exec runs cmd with sh in dom0, as root in /root with stdin /dev/null, and
// returns its output (stdout and stderr together). A non-zero exit status
// is an *ExitError (the output is returned too). The command is killed in
// dom0 at ctx's deadline (DefaultExecTimeout without one). Calls are
// serialized; one takes about 0.3-0.6 s.
func (b *Bed) Exec(ctx context.Context, cmd string) (string, error) {
	timeout := DefaultExecTimeout
	if d, ok := ctx.Deadline(); ok {
		timeout = time.Until(d)
		if timeout < time.Second {
			return "", fmt.Errorf("xenbed: exec %q: %w", cmd, context.DeadlineExceeded)
		}
	}
	secs := strconv.FormatFloat(timeout.Seconds(), 'f', 1, 64)
	// The script stops waiting at the deadline; a little more for it to say so.
	ectx, cancel := context.WithTimeout(ctx, timeout+5*time.Second)
	defer cancel()
	out, stderr, err := b.run(ectx, "exec", "--dir", b.Dir, "--timeout", secs, "--", cmd)
	if err == nil {
		return out, nil
	}
	ee := (*exec.ExitError)(nil)
	// The command's own stderr is in out (merged in dom0): anything on the
	// script's stderr is the script's (or the transport's) complaint.
	if errors.As(err, &ee) && ee.Exited() && strings.TrimSpace(stderr) == "" {
		return out, &ExitError{Cmd: cmd, Status: ee.ExitCode(), Output: out}
	}
	if ctx.Err() != nil {
		return out, fmt.Errorf("xenbed: exec %q: %w (%s)", cmd, ctx.Err(), strings.TrimSpace(stderr))
	}
	return out, fmt.Errorf("xenbed: exec %q: %w: %s", cmd, err, strings.TrimSpace(stderr))
}

// Stop stops the bed's QEMU (and so Xen and every domain) and removes Dir.
// It may be called more than once.
func (b *Bed) Stop(ctx context.Context) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.stopped {
		return nil
	}
	if err := b.down(ctx); err != nil {
		return err
	}
	b.stopped = true
	return nil
}

func (b *Bed) down(ctx context.Context) error {
	dctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	_, stderr, err := b.run(dctx, "down", "--dir", b.Dir)
	if err != nil {
		return fmt.Errorf("xenbed: testbed down: %w: %s", err, strings.TrimSpace(stderr))
	}
	return nil
}

// run runs the script and returns its standard output and error.
func (b *Bed) run(ctx context.Context, args ...string) (string, string, error) {
	cmd := exec.CommandContext(ctx, b.script, args...)
	cmd.Env = cleanEnv()
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	// QEMU and the watchdog write to their own files: the pipes close
	// when the script exits.
	cmd.WaitDelay = 10 * time.Second
	err := cmd.Run()
	return stdout.String(), stderr.String(), err
}

// cleanEnv is this process's environment without SNOWFLOCK_* variables: the
// bed's commands read only the bed's configuration.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SNOWFLOCK_") {
			env = append(env, kv)
		}
	}
	return env
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
