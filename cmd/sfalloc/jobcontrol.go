package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"
	"golang.org/x/term"
)

// job is a command that sfalloc run runs in a process group of its own.
//
// The command is the group's leader, in the terminal's foreground when
// sfalloc has the terminal. A guard process (sfalloc __guard) stops the group
// if sfalloc dies without saying it is done, so that nothing keeps running on
// slots that the lease is about to free.
type job struct {
	pid    int  // the command's pid, also its process group ID
	tty    int  // the terminal's fd when the job has the foreground
	fg     bool // the job was given the terminal
	states chan unix.WaitStatus
	guard  *exec.Cmd
	toGrd  *os.File // write end of the guard's stdin
}

// startJob starts argv in its own process group, and its guard.
func startJob(argv, env []string, grace time.Duration) (*job, error) {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	if _, err := os.Stdin.Stat(); err != nil {
		cmd.Stdin = nil // sfalloc has no stdin: give the command /dev/null
	}
	cmd.Env = env
	// Pdeathsig: a SIGKILLed sfalloc takes the command with it at once.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	j := &job{states: make(chan unix.WaitStatus, 1)}
	if inForeground() {
		j.fg, j.tty = true, int(os.Stdin.Fd())
		cmd.SysProcAttr.Foreground = true
		cmd.SysProcAttr.Ctty = j.tty
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	j.pid = cmd.Process.Pid
	_ = cmd.Process.Release() // reaped by wait below, with stops reported
	go j.wait()
	if err := j.startGuard(grace); err != nil {
		j.kill()
		return nil, fmt.Errorf("starting the guard of the command: %w", err)
	}
	return j, nil
}

// wait reports the command's stops and, last, its end.
func (j *job) wait() {
	for {
		var ws unix.WaitStatus
		_, err := unix.Wait4(j.pid, &ws, unix.WUNTRACED, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil { // cannot happen for our own child; report an exit
			ws = unix.WaitStatus(1 << 8)
		}
		j.states <- ws
		if err != nil || ws.Exited() || ws.Signaled() {
			return
		}
	}
}

// signal sends s to the command's group, and SIGCONT so that a stopped group
// receives it.
func (j *job) signal(s syscall.Signal) {
	_ = syscall.Kill(-j.pid, s)
	_ = syscall.Kill(-j.pid, syscall.SIGCONT)
}

func (j *job) kill() { _ = syscall.Kill(-j.pid, syscall.SIGKILL) }

// stopped handles the command stopping (Ctrl-Z, SIGTTIN): with the terminal,
// sfalloc takes it back and stops too (after calling beforeStop), so that the
// shell regains control; on `fg` or `bg` it continues the command, in the
// foreground only if sfalloc was put there. Without a terminal a stop is
// someone's deliberate act and is left alone.
func (j *job) stopped(beforeStop func()) {
	if !j.fg {
		return
	}
	takeTerminal(j.tty, j.pid)
	beforeStop()
	_ = syscall.Kill(os.Getpid(), syscall.SIGSTOP)
	// Continued.
	if inForeground() {
		_ = unix.IoctlSetPointerInt(j.tty, unix.TIOCSPGRP, j.pid)
	}
	_ = syscall.Kill(-j.pid, syscall.SIGCONT)
}

// finish ends what is left of the group (SIGTERM, SIGKILL after grace), tells
// the guard all is done, and takes back the terminal.
func (j *job) finish(grace time.Duration) {
	stopGroup(j.pid, grace)
	_, _ = j.toGrd.Write([]byte{'.'})
	j.toGrd.Close()
	_ = j.guard.Wait()
	if j.fg {
		takeTerminal(j.tty, j.pid)
	}
}

// startGuard starts `sfalloc __guard PGID GRACE` in a session of its own,
// reading a pipe from sfalloc.
func (j *job) startGuard(grace time.Duration) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	defer r.Close()
	g := exec.Command(self, guardCommand, strconv.Itoa(j.pid), grace.String())
	g.Stdin = r
	g.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := g.Start(); err != nil {
		w.Close()
		return err
	}
	j.guard, j.toGrd = g, w
	return nil
}

// guardCommand is the hidden subcommand of the guard process.
const guardCommand = "__guard"

func newGuardCmd() *cobra.Command {
	return &cobra.Command{
		Use:    guardCommand + " PGID GRACE",
		Hidden: true,
		Args:   cobra.ExactArgs(2),
		RunE: func(_ *cobra.Command, args []string) error {
			pgid, err := strconv.Atoi(args[0])
			if err != nil || pgid <= 1 {
				return usageError{Err: fmt.Errorf("bad process group %q", args[0])}
			}
			grace, err := time.ParseDuration(args[1])
			if err != nil {
				return usageError{Err: err}
			}
			signal.Ignore(syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
			var b [1]byte
			if n, _ := io.ReadFull(os.Stdin, b[:]); n == 1 {
				return nil // sfalloc finished the job itself
			}
			stopGroup(pgid, grace) // sfalloc died
			return nil
		},
	}
}

// stopGroup ends process group pgid if anything is left of it: SIGTERM (with
// SIGCONT, in case it is stopped), then SIGKILL after grace.
func stopGroup(pgid int, grace time.Duration) {
	if syscall.Kill(-pgid, syscall.SIGTERM) != nil {
		return // the group is empty
	}
	_ = syscall.Kill(-pgid, syscall.SIGCONT)
	deadline := time.Now().Add(grace)
	for syscall.Kill(-pgid, 0) == nil && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
}

// exitStatus is a finished command's status the way a shell reports it.
func exitStatus(ws unix.WaitStatus) int {
	if ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ws.ExitStatus()
}

// inForeground says whether stdin is a terminal whose foreground process
// group is sfalloc's: only then may the command take the foreground.
func inForeground() bool {
	fd := int(os.Stdin.Fd())
	if !term.IsTerminal(fd) {
		return false
	}
	fg, err := unix.IoctlGetInt(fd, unix.TIOCGPGRP)
	return err == nil && fg == unix.Getpgrp()
}

// takeTerminal makes sfalloc's process group the terminal's foreground again,
// if group pgid has it (never stealing it from the shell).
func takeTerminal(tty, pgid int) {
	if fg, err := unix.IoctlGetInt(tty, unix.TIOCGPGRP); err != nil || fg != pgid {
		return
	}
	// A background process changing the foreground group gets SIGTTOU
	// unless it ignores it.
	signal.Ignore(syscall.SIGTTOU)
	defer signal.Reset(syscall.SIGTTOU)
	_ = unix.IoctlSetPointerInt(tty, unix.TIOCSPGRP, unix.Getpgrp())
}
