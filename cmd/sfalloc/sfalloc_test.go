package main

// These tests run the real sfalloc binary as separate processes sharing one
// pool, the way users and batch jobs do.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/snowflock/snowflock/allocator"
	"github.com/snowflock/snowflock/allocator/static"
	"github.com/snowflock/snowflock/egosf"
	"github.com/snowflock/snowflock/egosf/config"
)

var sfalloc string // path of the binary under test

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "sfalloc-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	sfalloc = filepath.Join(dir, "sfalloc")
	out, err := exec.Command("go", "build", "-o", sfalloc, ".").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "building sfalloc: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// pool writes the example pool (two hosts of 4 slots, or the given
// text) with a fresh state_dir and returns its path.
func pool(t *testing.T, hosts string) string {
	t.Helper()
	if hosts == "" {
		hosts = "      - {name: h1, address: 10.0.0.1, slots: 4}\n      - {name: h2, address: 10.0.0.2, slots: 4}\n"
	}
	dir := t.TempDir()
	text := "state_dir: " + filepath.Join(dir, "state") + "\nallocator:\n  backend: static\n  static:\n    placement: spread\n    hosts:\n" + hosts
	p := filepath.Join(dir, "pool.yaml")
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

type result struct {
	stdout, stderr string
	code           int
}

func run(t *testing.T, cfg string, args ...string) result {
	t.Helper()
	return runEnv(t, nil, cfg, args...)
}

// runEnv runs sfalloc with env added to a clean environment.
func runEnv(t *testing.T, env []string, cfg string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, sfalloc, append([]string{"--config", cfg}, args...)...)
	cmd.Env = append(cleanEnv(), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("running sfalloc %v: %v", args, err)
	}
	return result{out.String(), errb.String(), cmd.ProcessState.ExitCode()}
}

// cleanEnv is the test's environment without SNOWFLOCK_* settings.
func cleanEnv() []string {
	var env []string
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "SNOWFLOCK_") {
			env = append(env, e)
		}
	}
	return env
}

func list(t *testing.T, cfg string) []allocator.Allocation {
	t.Helper()
	r := run(t, cfg, "list", "--json")
	if r.code != 0 {
		t.Fatalf("list: exit %d: %s", r.code, r.stderr)
	}
	var out []allocator.Allocation
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil {
		t.Fatalf("list --json printed %q: %v", r.stdout, err)
	}
	return out
}

func heldSlots(t *testing.T, cfg string) int {
	t.Helper()
	n := 0
	for _, a := range list(t, cfg) {
		n += a.Granted
	}
	return n
}

// The "done when" sequence.
func TestRequestReleaseList(t *testing.T) {
	cfg := pool(t, "")
	r := run(t, cfg, "request", "-n", "6", "--json")
	if r.code != 0 {
		t.Fatalf("request: exit %d: %s", r.code, r.stderr)
	}
	var a struct {
		ID      string           `json:"id"`
		Backend string           `json:"backend"`
		Granted int              `json:"granted"`
		Slots   []allocator.Slot `json:"slots"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &a); err != nil {
		t.Fatalf("request --json printed %q: %v", r.stdout, err)
	}
	if a.ID == "" || a.Backend != "static" || a.Granted != 6 || allocator.Total(a.Slots) != 6 {
		t.Fatalf("allocation %+v, want 6 slots from static", a)
	}
	for _, s := range a.Slots {
		if s.Address != map[string]string{"h1": "10.0.0.1", "h2": "10.0.0.2"}[s.Host] {
			t.Errorf("slot %+v has the wrong address", s)
		}
	}
	if got := list(t, cfg); len(got) != 1 || got[0].ID != a.ID {
		t.Fatalf("list after request: %+v", got)
	}
	if r := run(t, cfg, "release", a.ID); r.code != 0 {
		t.Fatalf("release: exit %d: %s", r.code, r.stderr)
	}
	if got := list(t, cfg); len(got) != 0 {
		t.Fatalf("list after release: %+v, want none", got)
	}
}

func TestPartialReleaseFlags(t *testing.T) {
	cfg := pool(t, "")
	id := strings.TrimSpace(run(t, cfg, "request", "-n", "6", "-q").stdout)
	r := run(t, cfg, "release", id, "--host", "h1", "--count", "2", "--json")
	if r.code != 0 {
		t.Fatalf("partial release: exit %d: %s", r.code, r.stderr)
	}
	if n := heldSlots(t, cfg); n != 4 {
		t.Errorf("held %d after releasing 2 of 6, want 4", n)
	}
	r = run(t, cfg, "release", id, "--host", "h2", "--count", "9")
	if r.code != 2 || !strings.Contains(r.stderr, "cannot release 9") {
		t.Errorf("over-release: exit %d, stderr %q; want 2 and a clear error", r.code, r.stderr)
	}
	if n := heldSlots(t, cfg); n != 4 {
		t.Errorf("held %d after a refused release, want 4", n)
	}
	if r := run(t, cfg, "release", id, "--host", "h2"); r.code != 0 {
		t.Fatalf("release host h2: exit %d: %s", r.code, r.stderr)
	}
	if n := heldSlots(t, cfg); n != 1 {
		t.Errorf("held %d after releasing all of h2, want h1's 1", n)
	}
}

func TestRunEnvironment(t *testing.T) {
	cfg := pool(t, "")
	r := run(t, cfg, "run", "-n", "3", "--", "sh", "-c", `echo $SF_NSLOTS; echo $SF_HOSTS; cat "$SF_HOSTFILE"; echo $SF_HOSTFILE; echo $SF_ALLOC_ID`)
	if r.code != 0 {
		t.Fatalf("run: exit %d: %s", r.code, r.stderr)
	}
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != 6 || lines[0] != "3" || lines[1] != "h1:2,h2:1" || lines[2] != "h1 slots=2" || lines[3] != "h2 slots=1" || !strings.HasPrefix(lines[5], "static-") {
		t.Fatalf("run printed %q", r.stdout)
	}
	if _, err := os.Stat(lines[4]); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("hostfile %s left behind: %v", lines[4], err)
	}
	if n := heldSlots(t, cfg); n != 0 {
		t.Errorf("%d slots held after run, want the pool whole", n)
	}
}

func TestRunReleasesWhenCommandFails(t *testing.T) {
	cfg := pool(t, "")
	if r := run(t, cfg, "run", "-n", "2", "--", "sh", "-c", "exit 3"); r.code != 3 {
		t.Errorf("run of a command exiting 3: exit %d (%s), want 3", r.code, r.stderr)
	}
	if r := run(t, cfg, "run", "-n", "2", "--", "/no/such/program"); r.code != 127 {
		t.Errorf("run of a missing program: exit %d (%s), want 127", r.code, r.stderr)
	}
	if r := run(t, cfg, "run", "-n", "2", "sh", "-c", "kill -9 $$"); r.code != 128+9 {
		t.Errorf("run of a command killed by SIGKILL: exit %d (%s), want 137", r.code, r.stderr)
	}
	if n := heldSlots(t, cfg); n != 0 {
		t.Errorf("%d slots held after failed commands, want 0", n)
	}
}

// startRun starts `sfalloc run -n 2 [extra...] -- sh -c script`; the script
// must first print a line of pids. It returns sfalloc and those pids.
func startRun(t *testing.T, cfg, script string, extra ...string) (*exec.Cmd, []int) {
	t.Helper()
	args := append([]string{"--config", cfg, "run", "-n", "2"}, extra...)
	args = append(args, "--", "sh", "-c", script)
	cmd := exec.Command(sfalloc, args...)
	cmd.Env = cleanEnv()
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.WaitDelay = 5 * time.Second // the command may hold stderr after sfalloc dies
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatalf("reading the command's pids: %v (stderr %q)", err, stderr.String())
	}
	var pids []int
	for f := range strings.FieldsSeq(line) {
		pid, err := strconv.Atoi(f)
		if err != nil {
			t.Fatalf("command printed %q", line)
		}
		pids = append(pids, pid)
		t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGKILL) })
	}
	return cmd, pids
}

// waitGone waits until none of pids runs (zombies count as gone).
func waitGone(t *testing.T, pids ...int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for _, pid := range pids {
		for alive(pid) {
			if time.Now().After(deadline) {
				t.Fatalf("process %d still running", pid)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

func alive(pid int) bool {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the parenthesised command name.
	i := bytes.LastIndexByte(data, ')')
	return i < 0 || i+2 >= len(data) || data[i+2] != 'Z'
}

func exitOf(t *testing.T, err error) int {
	t.Helper()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("waiting for sfalloc: %v", err)
	}
	if err == nil {
		return 0
	}
	return ee.ExitCode()
}

func TestRunReleasesOnSIGTERM(t *testing.T) {
	cfg := pool(t, "")
	// The command leaves a grandchild running in the background.
	cmd, pids := startRun(t, cfg, "sleep 61 & echo $$ $!; wait")
	if n := heldSlots(t, cfg); n != 2 {
		t.Fatalf("%d slots held while run is running, want 2", n)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := exitOf(t, cmd.Wait()); code != 128+int(syscall.SIGTERM) {
		t.Fatalf("sfalloc run after SIGTERM: exit %d, want 143 (the command's SIGTERM death)", code)
	}
	waitGone(t, pids...)
	if n := heldSlots(t, cfg); n != 0 {
		t.Errorf("%d slots held after SIGTERM, want 0", n)
	}
}

func TestRunStopsLeftoverProcesses(t *testing.T) {
	cfg := pool(t, "")
	// The command exits at once, leaving a process in its group.
	cmd, pids := startRun(t, cfg, "sleep 62 & echo $!", "--kill-after", "1s")
	if code := exitOf(t, cmd.Wait()); code != 0 {
		t.Fatalf("exit %d, want the command's 0", code)
	}
	waitGone(t, pids...)
	if n := heldSlots(t, cfg); n != 0 {
		t.Errorf("%d slots held after run, want 0", n)
	}
}

func TestKilledRunFreesSlotsWhenLeaseEnds(t *testing.T) {
	cfg := pool(t, "")
	cmd, pids := startRun(t, cfg, "echo $$; exec sleep 60", "--lease", "2s")
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	// The command dies with sfalloc: nothing runs on slots about to be freed.
	waitGone(t, pids...)
	if n := heldSlots(t, cfg); n != 2 {
		t.Fatalf("%d slots held right after SIGKILL, want the 2 still leased", n)
	}
	deadline := time.Now().Add(15 * time.Second)
	for heldSlots(t, cfg) != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("slots of a killed sfalloc run still held 15s after its 2s lease")
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func TestRunStopsCommandWhenAllocationLost(t *testing.T) {
	cfg := pool(t, "")
	// The command ignores SIGTERM, so it takes SIGKILL after --kill-after.
	cmd, pids := startRun(t, cfg, `trap "" TERM; echo $$; exec sleep 63`, "--lease", "1s", "--kill-after", "1s")
	all := list(t, cfg)
	if len(all) != 1 {
		t.Fatalf("list %+v, want the run's allocation", all)
	}
	if r := run(t, cfg, "release", all[0].ID); r.code != 0 {
		t.Fatalf("release: %s", r.stderr)
	}
	if code := exitOf(t, cmd.Wait()); code != 1 {
		t.Errorf("exit %d after the allocation was lost, want 1", code)
	}
	waitGone(t, pids...)
}

func TestKilledRunTakesWholeGroup(t *testing.T) {
	cfg := pool(t, "")
	cmd, pids := startRun(t, cfg, "sleep 64 & echo $$ $!; wait", "--kill-after", "1s")
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	// The command dies of Pdeathsig; its child is stopped by the guard.
	waitGone(t, pids...)
}

func TestSignalReachesStoppedCommand(t *testing.T) {
	cfg := pool(t, "")
	cmd, pids := startRun(t, cfg, "echo $$; exec sleep 65")
	if err := syscall.Kill(pids[0], syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := exitOf(t, cmd.Wait()); code != 128+int(syscall.SIGTERM) {
		t.Errorf("exit %d after SIGTERM to a stopped command, want 143", code)
	}
	if n := heldSlots(t, cfg); n != 0 {
		t.Errorf("%d slots held, want 0", n)
	}
}

func TestRunDefaultLeaseZero(t *testing.T) {
	cfg := pool(t, "")
	// --lease 0: the backend's default lease (1h), renewed every 20 minutes;
	// meanwhile other processes use the pool.
	cmd, _ := startRun(t, cfg, "echo $$; sleep 2", "--lease", "0")
	for range 10 {
		if al := list(t, cfg); len(al) != 1 || time.Until(al[0].Expires) < 50*time.Minute {
			t.Fatalf("allocation %+v, want one with the 1h default lease", al)
		}
	}
	if code := exitOf(t, cmd.Wait()); code != 0 {
		t.Errorf("run --lease 0: exit %d, want 0", code)
	}
}

// Eight processes race for a 10-slot pool; together they never get more.
func TestConcurrentProcessesNeverOversubscribe(t *testing.T) {
	cfg := pool(t, "      - {name: h1, address: 10.0.0.1, slots: 5}\n      - {name: h2, address: 10.0.0.2, slots: 5}\n")
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		granted int
		refused int
	)
	for range 8 {
		wg.Go(func() {
			r := run(t, cfg, "request", "-n", "2", "--min", "1", "--immediate", "--json")
			mu.Lock()
			defer mu.Unlock()
			switch r.code {
			case 0:
				var a allocator.Allocation
				if err := json.Unmarshal([]byte(r.stdout), &a); err != nil {
					t.Errorf("bad JSON %q", r.stdout)
				}
				granted += a.Granted
			case 1:
				refused++
			default:
				t.Errorf("request: exit %d: %s", r.code, r.stderr)
			}
		})
	}
	wg.Wait()
	if granted > 10 {
		t.Fatalf("8 processes were granted %d slots from a pool of 10", granted)
	}
	if granted != 10 || refused != 3 {
		t.Errorf("granted %d with %d refused; 8 requests of 1-2 slots must fill all 10 slots and 3 must be refused", granted, refused)
	}
	if n := heldSlots(t, cfg); n != granted {
		t.Errorf("list shows %d held, grants add up to %d", n, granted)
	}
}

func TestWaitAndDeadline(t *testing.T) {
	cfg := pool(t, "")
	id := strings.TrimSpace(run(t, cfg, "request", "-n", "8", "-q").stdout)
	start := time.Now()
	r := run(t, cfg, "request", "-n", "1", "-t", "1s")
	if r.code != 1 || !strings.Contains(r.stderr, "deadline") {
		t.Errorf("request past its deadline: exit %d, stderr %q; want 1 naming the deadline", r.code, r.stderr)
	}
	if d := time.Since(start); d < time.Second {
		t.Errorf("request with -t 1s gave up after %s", d)
	}
	if r := run(t, cfg, "request", "-n", "1", "--immediate"); r.code != 1 {
		t.Errorf("--immediate on a full pool: exit %d, want 1", r.code)
	}
	// A waiting request is granted once slots are released.
	waiter := exec.Command(sfalloc, "--config", cfg, "request", "-n", "3", "-t", "30s", "-q")
	waiter.Env = cleanEnv()
	var out bytes.Buffer
	waiter.Stdout = &out
	if err := waiter.Start(); err != nil {
		t.Fatal(err)
	}
	waitQueued(t, cfg, 1)
	if r := run(t, cfg, "release", id); r.code != 0 {
		t.Fatalf("release: %s", r.stderr)
	}
	if err := waiter.Wait(); err != nil {
		t.Fatalf("waiting request: %v", err)
	}
	if !strings.HasPrefix(out.String(), "static-") {
		t.Errorf("waiting request printed %q", out.String())
	}
}

func TestBadInput(t *testing.T) {
	cfg := pool(t, "")
	dir := t.TempDir()
	malformed := filepath.Join(dir, "bad.yaml")
	os.WriteFile(malformed, []byte("allocator: [1, 2\n"), 0o600)
	unknownKey := filepath.Join(dir, "typo.yaml")
	os.WriteFile(unknownKey, []byte("state_dir: "+dir+"\nallocator:\n  static:\n    placment: pack\n"), 0o600)
	id := strings.TrimSpace(run(t, cfg, "request", "-n", "2", "-q").stdout)

	for _, tc := range []struct {
		name string
		cfg  string
		args []string
		want string   // in the error line
		env  []string // added to the environment
	}{
		{"n zero", cfg, []string{"request", "-n", "0"}, "at least 1", nil},
		{"n negative", cfg, []string{"request", "-n", "-3"}, "at least 1", nil},
		{"min above max", cfg, []string{"request", "-n", "2", "--min", "5"}, "larger than maximum", nil},
		{"no n", cfg, []string{"request"}, "-n MAX is required", nil},
		{"unknown backend", cfg, []string{"--backend", "nope", "request", "-n", "1"}, `unknown allocator backend "nope"`, nil},
		{"malformed config", malformed, []string{"request", "-n", "1"}, "bad.yaml", nil},
		{"unknown config key", unknownKey, []string{"list"}, "placment", nil},
		{"missing config", filepath.Join(dir, "none.yaml"), []string{"list"}, "none.yaml", nil},
		{"unreadable config", dir, []string{"list"}, dir, nil},
		{"unknown allocation", cfg, []string{"release", "static-000000000000"}, "unknown allocation", nil},
		{"over-release", cfg, []string{"release", id, "--host", "h1", "--count", "5"}, "cannot release 5", nil},
		{"count without host", cfg, []string{"release", id, "--count", "1"}, "--host", nil},
		{"bad timeout", cfg, []string{"request", "-n", "1", "-t", "soon"}, "--timeout", nil},
		{"overflowing lease", cfg, []string{"request", "-n", "1", "--lease", "18446744074"}, "--lease", nil},
		{"lease too short", cfg, []string{"request", "-n", "1", "--lease", "10ms"}, "minimum", nil},
		{"empty host list", cfg, []string{"list"}, "no host", []string{"SNOWFLOCK_ALLOCATOR_STATIC_HOSTS=,"}},
		{"run without command", cfg, []string{"run", "-n", "1"}, "CMD", nil},
		{"unknown flag", cfg, []string{"request", "-n", "1", "--bogus"}, "bogus", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := runEnv(t, tc.env, tc.cfg, tc.args...)
			if r.code != 2 {
				t.Errorf("exit %d, want 2 (stderr %q)", r.code, r.stderr)
			}
			if lines := strings.Split(strings.TrimRight(r.stderr, "\n"), "\n"); len(lines) != 1 || !strings.Contains(lines[0], tc.want) {
				t.Errorf("stderr %q, want one line containing %q", r.stderr, tc.want)
			}
			if r.stdout != "" {
				t.Errorf("stdout %q, want nothing", r.stdout)
			}
		})
	}
	// Nothing was held or lost by any of it: only the first request's 2 slots.
	if got := list(t, cfg); len(got) != 1 || got[0].ID != id || got[0].Granted != 2 {
		t.Errorf("after bad input the pool holds %+v, want only %s with 2 slots", got, id)
	}
}

func TestHelpTeaches(t *testing.T) {
	r := run(t, pool(t, ""), "run", "--help")
	for _, want := range []string{"SF_HOSTFILE", "SF_NSLOTS", "--min", "--immediate", "Examples:"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("run --help lacks %q", want)
		}
	}
}

func TestEventsReportExpiry(t *testing.T) {
	cfg := pool(t, "")
	ev := exec.Command(sfalloc, "--config", cfg, "events", "--json")
	ev.Env = cleanEnv()
	stdout, err := ev.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := ev.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ev.Process.Kill(); _ = ev.Wait() })
	time.Sleep(500 * time.Millisecond) // events reports what happens after it starts
	id := strings.TrimSpace(run(t, cfg, "request", "-n", "3", "--lease", "1s", "-q").stdout)
	lines := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(stdout).ReadString('\n')
		lines <- line
	}()
	select {
	case line := <-lines:
		var e allocator.Event
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("events printed %q: %v", line, err)
		}
		if e.Kind != allocator.EventExpired || e.AllocationID != id || allocator.Total(e.Slots) != 3 {
			t.Errorf("event %+v, want expiry of %s with 3 slots", e, id)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("no event 20s after a 1s lease")
	}
	// SIGTERM ends the stream cleanly.
	_ = ev.Process.Signal(syscall.SIGTERM)
	if err := ev.Wait(); err != nil {
		t.Errorf("events after SIGTERM: %v, want exit 0", err)
	}
}

// waitQueued waits until n requests wait in the pool of cfg.
func waitQueued(t *testing.T, cfg string, n int) {
	t.Helper()
	c, err := egosf.LoadConfig(config.Options{File: cfg})
	if err != nil {
		t.Fatal(err)
	}
	cl, err := egosf.Open(t.Context(), c)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	st := cl.Allocator().(*static.Allocator)
	deadline := time.Now().Add(20 * time.Second)
	for {
		got, err := st.Waiting(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if got == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d requests waiting, want %d", got, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A signal while waiting abandons the request: exit 1, the queue left,
// nothing granted.
func TestSignalWhileWaiting(t *testing.T) {
	cfg := pool(t, "")
	id := strings.TrimSpace(run(t, cfg, "request", "-n", "8", "-q").stdout)
	for _, args := range [][]string{
		{"request", "-n", "2", "-t", "60s"},
		{"run", "-n", "2", "-t", "60s", "--", "true"},
	} {
		cmd := exec.Command(sfalloc, append([]string{"--config", cfg}, args...)...)
		cmd.Env = cleanEnv()
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		waitQueued(t, cfg, 1)
		if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
			t.Fatal(err)
		}
		if code := exitOf(t, cmd.Wait()); code != 1 {
			t.Errorf("%v interrupted while waiting: exit %d (%s), want 1", args[0], code, stderr.String())
		}
		waitQueued(t, cfg, 0)
		if got := list(t, cfg); len(got) != 1 || got[0].ID != id {
			t.Errorf("after an interrupted %s the pool holds %+v, want only %s", args[0], got, id)
		}
	}
}
