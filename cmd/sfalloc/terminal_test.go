package main

// sfalloc run on a real terminal (a pseudo-terminal this test opens): the
// command gets the foreground, so Ctrl-C reaches it once, and Ctrl-Z stops
// sfalloc too until it is continued.

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// openPTY opens a pseudo-terminal pair.
func openPTY(t *testing.T) (master, slave *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatalf("opening /dev/ptmx: %v", err)
	}
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatalf("unlocking the pty: %v", err)
	}
	n, err := unix.IoctlGetUint32(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatalf("pty number: %v", err)
	}
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatalf("opening the pty's terminal: %v", err)
	}
	t.Cleanup(func() { m.Close(); s.Close() })
	return m, s
}

// screen collects what the terminal shows.
type screen struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (s *screen) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.Write(p)
}

func (s *screen) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.String()
}

func (s *screen) waitFor(t *testing.T, text string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(s.String(), text) {
		if time.Now().After(deadline) {
			t.Fatalf("terminal never showed %q; it shows %q", text, s.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func procState(pid int) byte {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	i := bytes.LastIndexByte(data, ')')
	if i < 0 || i+2 >= len(data) {
		return 0
	}
	return data[i+2]
}

func TestRunOnTerminal(t *testing.T) {
	cfg := pool(t, "")
	master, slave := openPTY(t)
	// The command runs until the test says it may finish (a file appears):
	// on a loaded machine a fixed run time could end before Ctrl-Z.
	done := filepath.Join(t.TempDir(), "done")
	script := `trap 'echo got-INT' INT; echo ready; while [ ! -e "$1" ]; do sleep 0.1; done; echo finished`
	cmd := exec.Command(sfalloc, "--config", cfg, "run", "-n", "1", "--", "sh", "-c", script, "sh", done)
	cmd.Env = cleanEnv()
	cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
	// sfalloc leads a new session whose controlling terminal is the pty, as
	// a login shell's job would be.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	var out screen
	go func() { _, _ = bytesCopy(&out, master) }()

	out.waitFor(t, "ready")
	if _, err := master.Write([]byte{0x03}); err != nil { // Ctrl-C
		t.Fatal(err)
	}
	out.waitFor(t, "got-INT")

	if _, err := master.Write([]byte{0x1a}); err != nil { // Ctrl-Z
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for procState(cmd.Process.Pid) != 'T' {
		if time.Now().After(deadline) {
			t.Fatalf("sfalloc did not stop with its command (state %q); terminal: %q", procState(cmd.Process.Pid), out.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if all := list(t, cfg); len(all) != 1 || time.Until(all[0].Expires) < 30*time.Minute {
		t.Errorf("suspended run holds %+v; want its slot, leased for the default hour", all)
	}
	if err := cmd.Process.Signal(syscall.SIGCONT); err != nil { // fg
		t.Fatal(err)
	}
	if err := os.WriteFile(done, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if code := exitOf(t, cmd.Wait()); code != 0 {
		t.Errorf("exit %d, want 0; terminal: %q", code, out.String())
	}
	out.waitFor(t, "finished")
	if n := strings.Count(out.String(), "got-INT"); n != 1 {
		t.Errorf("one Ctrl-C reached the command %d times; terminal: %q", n, out.String())
	}
	if n := heldSlots(t, cfg); n != 0 {
		t.Errorf("%d slots held after run, want 0", n)
	}
}

// bytesCopy copies until the reader fails (the pty closes with EIO).
func bytesCopy(w *screen, r *os.File) (int, error) {
	buf := make([]byte, 4096)
	total := 0
	for {
		n, err := r.Read(buf)
		if n > 0 {
			w.Write(buf[:n])
			total += n
		}
		if err != nil {
			return total, err
		}
	}
}
