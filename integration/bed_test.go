package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/snowflock/snowflock/integration/scenario"
)

// bed is the shared test bed.
type bed struct {
	root    string // repository root
	dir     string // temporary directory of this run
	bin     string // built binaries
	config  string // configuration file
	state   string // state_dir
	host    string
	sfld    *exec.Cmd
	sfldLog string
	parent  string // the booted parent VM's ID
}

var tb *bed

// Slots in the test pool: enough for 8 clones at once.
const poolSlots = 10

func TestMain(m *testing.M) { scenario.Main(m, "integration", run) }

func run(m *testing.M) (int, error) {
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Dir(filepath.Dir(file))
	if err := scenario.GuestBuilt(root); err != nil {
		return 1, err
	}
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		return 1, fmt.Errorf("qemu-system-x86_64 is missing: run `make deps`: %w", err)
	}
	dir, err := os.MkdirTemp("", "sf-integration-")
	if err != nil {
		return 1, err
	}
	host, _ := os.Hostname()
	b := &bed{root: root, dir: dir, bin: filepath.Join(dir, "bin"), state: filepath.Join(dir, "state"), host: host}
	tb = b
	if err := watchdog(dir); err != nil {
		return 1, err
	}
	defer b.teardown()
	if err := b.build(); err != nil {
		return 1, err
	}
	if err := b.writeConfig(); err != nil {
		return 1, err
	}
	if out, err := b.cmd("sfld", "init-ca").CombinedOutput(); err != nil {
		return 1, fmt.Errorf("sfld init-ca: %v: %s", err, out)
	}
	if err := b.startSfld(); err != nil {
		return 1, err
	}
	out, err := b.sfctl("vm", "start", "--name", "parent", "--wait", "--json")
	if err != nil {
		return 1, fmt.Errorf("boot the parent VM: %v\n%s", err, b.tail())
	}
	var vm struct{ ID string }
	if err := json.Unmarshal(out, &vm); err != nil || vm.ID == "" {
		return 1, fmt.Errorf("vm start --json printed %q: %v", out, err)
	}
	b.parent = vm.ID
	return m.Run(), nil
}

func (b *bed) build() error {
	cmd := exec.Command("go", "build", "-o", b.bin+"/", "./cmd/sfld", "./cmd/sfctl", "./cmd/sfalloc")
	cmd.Dir = b.root
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build: %v: %s", err, out)
	}
	return nil
}

func (b *bed) writeConfig() error {
	port, err := freePort()
	if err != nil {
		return err
	}
	listenAddr = "127.0.0.1:" + strconv.Itoa(port)
	b.config = filepath.Join(b.dir, "snowflock.yaml")
	cfg := fmt.Sprintf(`state_dir: %s
allocator:
  backend: static
  static:
    hosts: "%s=127.0.0.1:%d"
sfld:
  listen: %s
  name: %s
  lease: 20s
  kvm:
    accel: tcg
    machine: q35
    memory_mib: 256
    kernel: %s
    initrd: %s
`, b.state, b.host, poolSlots, listenAddr, b.host, filepath.Join(b.root, "build/guest/vmlinuz"), filepath.Join(b.root, "build/guest/initrd.img"))
	return os.WriteFile(b.config, []byte(cfg), 0o644)
}

// listenAddr is the address sfld listens on.
var listenAddr string

// startSfld starts sfld and waits until it answers.
func (b *bed) startSfld() error {
	b.sfldLog = filepath.Join(b.dir, fmt.Sprintf("sfld-%d.log", time.Now().UnixNano()))
	logf, err := os.Create(b.sfldLog)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := b.cmd("sfld", "serve", "--log-level", "debug")
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start sfld: %w", err)
	}
	b.sfld = cmd
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := b.sfctl("info"); err == nil {
			return nil
		}
		select {
		case <-exited:
			return fmt.Errorf("sfld exited at start:\n%s", b.tail())
		case <-time.After(100 * time.Millisecond):
		}
	}
	return fmt.Errorf("sfld did not answer within 60s:\n%s", b.tail())
}

// killSfld kills sfld with SIGKILL (no cleanup of its own).
func (b *bed) killSfld() {
	if b.sfld != nil && b.sfld.Process != nil {
		b.sfld.Process.Kill()
		b.sfld.Process.Wait()
		b.sfld = nil
	}
}

func (b *bed) teardown() {
	if b.parent != "" {
		b.sfctl("vm", "stop", b.parent)
	}
	if b.sfld != nil && b.sfld.Process != nil {
		b.sfld.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { b.sfld.Process.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			b.sfld.Process.Kill()
		}
	}
	// Whatever VM is left (a failed test) is stopped by pid: only QEMU
	// processes whose command line names this run's state directory.
	for _, pid := range qemuPIDs(b.state) {
		syscall.Kill(pid, syscall.SIGKILL)
	}
	if os.Getenv("SF_KEEP") == "" {
		os.RemoveAll(b.dir)
	}
}

// cmd returns a command running one of the built binaries on the bed's
// configuration.
func (b *bed) cmd(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(filepath.Join(b.bin, name), append([]string{"--config", b.config}, args...)...)
	cmd.Env = append(os.Environ(), "SNOWFLOCK_CONFIG="+b.config)
	return cmd
}

// sfctl runs sfctl against the bed's sfld; stdout is returned, stderr is
// in the error.
func (b *bed) sfctl(args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := b.cmd("sfctl", append([]string{"--addr", listenAddr}, args...)...)
	cmd = exec.CommandContext(ctx, cmd.Path, cmd.Args[1:]...)
	return scenario.Output(cmd, "sfctl "+strings.Join(args, " "))
}

// tail is the end of sfld's log, for failure messages.
func (b *bed) tail() string {
	data, _ := os.ReadFile(b.sfldLog)
	if len(data) > 6000 {
		data = data[len(data)-6000:]
	}
	return string(data)
}

// qemuPIDs lists the QEMU processes whose command line mentions dir.
func qemuPIDs(dir string) []int {
	var pids []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(string(cmdline), "\x00")
		if len(args) > 0 && strings.Contains(filepath.Base(args[0]), "qemu-system") && strings.Contains(string(cmdline), dir) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// freePort returns a TCP port free on 127.0.0.1 now.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func fmtSscan(s string, v *int) (int, error) { return fmt.Sscan(s, v) }

// waitFor polls cond for up to 30 s.
func waitFor(t testing.TB, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached within 30s")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// watchdogScript waits for the test process ($1) to end, then kills every
// process whose command line names the bed's directory ($2) — sfld and the
// QEMUs it started, which outlive it by design — and removes the
// directory. It matters when the test binary dies without its teardown
// (a -timeout panic, a SIGKILL).
const watchdogScript = `while kill -0 "$1" 2>/dev/null; do sleep 1; done
for p in /proc/[0-9]*; do
  [ "${p#/proc/}" = "$$" ] && continue
  if tr '\0' ' ' <"$p/cmdline" 2>/dev/null | grep -qF -- "$2"; then kill -9 "${p#/proc/}" 2>/dev/null; fi
done
[ -n "$SF_KEEP" ] || rm -rf -- "$2"`

// watchdog starts the bed's watchdog in its own session.
func watchdog(dir string) error {
	cmd := exec.Command("sh", "-c", watchdogScript, "sf-watchdog", strconv.Itoa(os.Getpid()), dir)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("bed watchdog: %w", err)
	}
	go cmd.Wait()
	return nil
}

// The scenario.Bed methods (integration/scenario).

func (b *bed) Sfctl(args ...string) ([]byte, error) { return b.sfctl(args...) }

func (b *bed) Parent() string { return b.parent }

func (b *bed) Tail() string { return "sfld log:\n" + b.tail() }

// PoolAllocations lists the static pool's allocations (sfalloc list).
func (b *bed) PoolAllocations(t *testing.T) []map[string]any {
	t.Helper()
	out, err := b.cmd("sfalloc", "list", "--json").Output()
	if err != nil {
		t.Fatalf("sfalloc list: %v", err)
	}
	var v []map[string]any
	if err := json.Unmarshal(out, &v); err != nil {
		t.Fatalf("sfalloc list --json: %q: %v", out, err)
	}
	return v
}

// Leftovers: the bed's QEMU processes other than the parent's.
func (b *bed) Leftovers(*testing.T) string {
	if pids := qemuPIDs(b.state); len(pids) != 1 {
		return fmt.Sprintf("%d QEMU processes of this bed, want 1 (the parent): %v", len(pids), pids)
	}
	return ""
}
