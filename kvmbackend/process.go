package kvmbackend

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// process is a running QEMU, started by us or found again after a restart.
type process struct {
	pid int
	// start is the process's start time (clock ticks after boot, field 22
	// of /proc/PID/stat): with pid it names the process even if the pid is
	// reused.
	start uint64
	// done is closed when the process has exited.
	done chan struct{}
	// kill sends SIGKILL to the process (never to a reused pid).
	kill func() error
}

// startProcess runs bin in its own process group, with its output in
// logFile. It survives its parent (no Pdeathsig): sfld may restart and
// attach to it again.
func startProcess(bin string, args []string, logFile *os.File) (*process, error) {
	cmd := exec.Command(bin, args...)
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	p := &process{
		pid:  cmd.Process.Pid,
		done: make(chan struct{}),
		kill: func() error { return cmd.Process.Signal(unix.SIGKILL) },
	}
	go func() {
		cmd.Wait()
		close(p.done)
	}()
	start, err := procStartTime(p.pid)
	if err != nil {
		p.kill()
		<-p.done
		return nil, fmt.Errorf("%s exited at once: %w", bin, err)
	}
	p.start = start
	return p, nil
}

// errGone says that a process no longer exists (or its pid was reused).
var errGone = errors.New("process is gone")

// attachProcess finds a process again by pid and start time. It is watched
// through a pidfd, which also keeps a later signal from reaching a reused
// pid.
func attachProcess(pid int, start uint64) (*process, error) {
	if pid <= 0 {
		return nil, fmt.Errorf("pid %d: %w", pid, errGone)
	}
	fd, err := unix.PidfdOpen(pid, unix.PIDFD_NONBLOCK)
	if errors.Is(err, unix.ESRCH) {
		return nil, fmt.Errorf("pid %d: %w", pid, errGone)
	}
	if err != nil {
		return nil, fmt.Errorf("pidfd_open %d: %w", pid, err)
	}
	// The pidfd names one process; check it is the one recorded.
	got, err := procStartTime(pid)
	if err != nil || got != start {
		unix.Close(fd)
		return nil, fmt.Errorf("pid %d (start %d, recorded %d): %w", pid, got, start, errGone)
	}
	f := os.NewFile(uintptr(fd), "pidfd")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("pidfd %d: %w", pid, err)
	}
	p := &process{
		pid:   pid,
		start: start,
		done:  make(chan struct{}),
		kill: func() error {
			var err error
			if cerr := rc.Control(func(fd uintptr) {
				err = unix.PidfdSendSignal(int(fd), unix.SIGKILL, nil, 0)
			}); cerr != nil {
				return cerr
			}
			if errors.Is(err, unix.ESRCH) {
				return nil
			}
			return err
		},
	}
	go func() {
		// A pidfd becomes readable when its process exits; the runtime's
		// poller waits for that without a thread.
		rc.Read(func(fd uintptr) bool {
			n, err := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, 0)
			return err == nil && n > 0
		})
		close(p.done)
		// Keep the pidfd open (and kill safe) until the process is gone.
		f.Close()
	}()
	return p, nil
}

// procStartTime reads a process's start time from /proc/PID/stat.
func procStartTime(pid int) (uint64, error) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return 0, fmt.Errorf("pid %d: %w", pid, errGone)
		}
		return 0, err
	}
	start, state, err := parseStat(data)
	if err != nil {
		return 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	if state == 'Z' || state == 'X' {
		return 0, fmt.Errorf("pid %d has exited: %w", pid, errGone)
	}
	return start, nil
}

// parseStat extracts the state (field 3) and start time (field 22) of a
// /proc/PID/stat line. The command name (field 2) may hold spaces and
// parentheses, so fields are counted after its last ')'.
func parseStat(data []byte) (start uint64, state byte, err error) {
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return 0, 0, errors.New("no command name")
	}
	fields := bytes.Fields(data[i+1:])
	// fields[0] is field 3 (state); field 22 is fields[19].
	if len(fields) < 20 || len(fields[0]) != 1 {
		return 0, 0, fmt.Errorf("%d fields after the command name, want at least 20", len(fields))
	}
	start, err = strconv.ParseUint(string(fields[19]), 10, 64)
	if err != nil {
		return 0, 0, fmt.Errorf("start time: %w", err)
	}
	return start, fields[0][0], nil
}
