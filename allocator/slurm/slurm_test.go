package slurm

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/snowflock/snowflock/allocator"
	"github.com/snowflock/snowflock/allocator/allocatortest"
)

func modes() []string { return []string{ModeCLI, ModeREST} }

func TestConformance(t *testing.T) {
	for _, mode := range modes() {
		t.Run(mode, func(t *testing.T) {
			allocatortest.Run(t, allocatortest.Harness{
				New:      func(t *testing.T) allocator.Allocator { return newTestAllocator(t, mode) },
				Capacity: testCapacity,
				Lease:    time.Minute,
			})
		})
	}
}

func tctx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// jobOf returns Slurm's own description of the allocation's first job.
func jobOf(t *testing.T, al *allocator.Allocation) *jobInfo {
	t.Helper()
	id, err := parseID(al.ID)
	if err != nil {
		t.Fatal(err)
	}
	j, err := parseScontrolJob([]byte(slurmCmd(t, "scontrol", "show", "job", "-d", "-o", strconv.Itoa(id))), time.Local)
	if err != nil {
		t.Fatal(err)
	}
	return j
}

func TestGrantAcrossNodes(t *testing.T) {
	for _, mode := range modes() {
		t.Run(mode, func(t *testing.T) {
			a := newTestAllocator(t, mode)
			al, err := a.Request(tctx(t), allocator.Request{Min: 5, Max: 5, Name: "across", Immediate: true})
			if err != nil {
				t.Fatalf("Request: %v", err)
			}
			if al.Granted != 5 || allocator.Total(al.Slots) != 5 || len(al.Slots) != 3 {
				t.Fatalf("granted %+v, want 5 slots on 3 nodes", al)
			}
			j := jobOf(t, al)
			if j.State != "RUNNING" || j.Name != "across" || j.NumTasks != 5 {
				t.Errorf("Slurm's job: %+v, want a running job 'across' of 5 tasks", j)
			}
			want := map[string]int{}
			for _, h := range j.Hosts {
				want[h.Host] = h.CPUs
			}
			for _, s := range al.Slots {
				if !strings.HasPrefix(s.Host, "sfnode") || s.Address != "127.0.0.1" || s.Count < 1 || s.Count > testCPUs {
					t.Errorf("slot %+v: want an sfnode at 127.0.0.1 with 1-%d slots", s, testCPUs)
				}
				if want[s.Host] != s.Count {
					t.Errorf("slot %+v but Slurm gave %s %d CPUs", s, s.Host, want[s.Host])
				}
			}
		})
	}
}

func TestPartialGrantBetweenMinAndMax(t *testing.T) {
	for _, mode := range modes() {
		t.Run(mode, func(t *testing.T) {
			a := newTestAllocator(t, mode)
			if _, err := a.Request(tctx(t), allocator.Request{Min: 4, Max: 4, Immediate: true}); err != nil {
				t.Fatal(err)
			}
			al, err := a.Request(tctx(t), allocator.Request{Min: 1, Max: 5})
			if err != nil {
				t.Fatal(err)
			}
			if al.Granted != testCapacity-4 {
				t.Errorf("granted %d with %d idle, want all of them", al.Granted, testCapacity-4)
			}
		})
	}
}

func TestImmediateFailsWhenBusy(t *testing.T) {
	for _, mode := range modes() {
		t.Run(mode, func(t *testing.T) {
			a := newTestAllocator(t, mode)
			if _, err := a.Request(tctx(t), allocator.Request{Min: testCapacity, Max: testCapacity, Immediate: true}); err != nil {
				t.Fatal(err)
			}
			_, err := a.Request(tctx(t), allocator.Request{Min: 1, Max: 1, Immediate: true})
			if !errors.Is(err, allocator.ErrNoneAvailable) {
				t.Fatalf("immediate request on a busy cluster = %v, want ErrNoneAvailable", err)
			}
			if n := len(ourJobs(t)); n != 1 {
				t.Errorf("%d jobs queued, want only the first", n)
			}
		})
	}
}

func TestDeadlineCancelsPendingJob(t *testing.T) {
	for _, mode := range modes() {
		t.Run(mode, func(t *testing.T) {
			a := newTestAllocator(t, mode)
			if _, err := a.Request(tctx(t), allocator.Request{Min: testCapacity, Max: testCapacity, Immediate: true}); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(tctx(t), time.Second)
			defer cancel()
			_, err := a.Request(ctx, allocator.Request{Min: 2, Max: 2, Name: "waiter"})
			if !errors.Is(err, allocator.ErrTimeout) {
				t.Fatalf("request past its deadline = %v, want ErrTimeout", err)
			}
			for _, j := range ourJobs(t) {
				if j.State != "RUNNING" {
					t.Errorf("job %d %s left behind by the timed-out request", j.ID, j.State)
				}
			}
		})
	}
}

// TestKilledRequesterLeavesNothingPending kills a waiting requester with
// SIGKILL, which it cannot catch: its pending job must still go. (Command
// mode only: salloc, the requester's child, withdraws the job when its
// parent dies; slurmrestd has no such tie, see rest.go.)
func TestKilledRequesterLeavesNothingPending(t *testing.T) {
	for _, mode := range []string{ModeCLI} {
		t.Run(mode, func(t *testing.T) {
			a := newTestAllocator(t, mode)
			if _, err := a.Request(tctx(t), allocator.Request{Min: testCapacity, Max: testCapacity, Immediate: true}); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), "SF_SLURM_TEST_HELPER=request", "SF_SLURM_TEST_MODE="+mode,
				"SF_SLURM_TEST_CONF="+cluster.conf, "SF_SLURM_TEST_REST="+cluster.restURL, "SF_SLURM_TEST_TOKEN="+cluster.tokenFile)
			cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
			waitFor(t, "a pending job", func() bool {
				return slices.ContainsFunc(ourJobs(t), func(j jobSummary) bool { return j.State == "PENDING" })
			})
			if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			_ = cmd.Wait()
			waitFor(t, "no pending job", func() bool {
				return !slices.ContainsFunc(ourJobs(t), func(j jobSummary) bool { return j.State == "PENDING" })
			})
		})
	}
}

// runHelper is the child process of TestKilledRequesterLeavesNothingPending:
// it waits for slots until killed.
func runHelper(what string) int {
	if what != "request" {
		fmt.Fprintf(os.Stderr, "unknown helper %q\n", what)
		return 2
	}
	cfg := Config{SlurmConf: os.Getenv("SF_SLURM_TEST_CONF"), Partition: "debug", Mode: os.Getenv("SF_SLURM_TEST_MODE")}
	if cfg.Mode == ModeREST {
		cfg.RESTURL, cfg.TokenFile = os.Getenv("SF_SLURM_TEST_REST"), os.Getenv("SF_SLURM_TEST_TOKEN")
	}
	a, err := New(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	_, err = a.Request(context.Background(), allocator.Request{Min: 1, Max: 1, Name: "killed"})
	fmt.Fprintf(os.Stderr, "helper request returned: %v\n", err)
	return 1
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s after 30s; queue: %+v", what, ourJobs(t))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestReleaseShrinksTheJob(t *testing.T) {
	for _, mode := range modes() {
		t.Run(mode, func(t *testing.T) {
			a := newTestAllocator(t, mode)
			al, err := a.Request(tctx(t), allocator.Request{Min: testCapacity, Max: testCapacity, Immediate: true})
			if err != nil {
				t.Fatal(err)
			}
			// A whole node leaves the job: the job shrinks, no new job.
			gone := al.Slots[0].Host
			left, err := a.Release(tctx(t), al.ID, []allocator.Slot{{Host: gone}})
			if err != nil {
				t.Fatalf("Release(%s): %v", gone, err)
			}
			if left == nil || left.Granted != testCapacity-testCPUs || slices.ContainsFunc(left.Slots, func(s allocator.Slot) bool { return s.Host == gone }) {
				t.Fatalf("after releasing %s: %+v", gone, left)
			}
			// Slurm's view: no running job of ours keeps the node. The
			// commands shrink the job in place; slurmrestd v0.0.38 cannot,
			// so there the nodes that stay are allocated anew.
			held := 0
			for _, js := range ourJobs(t) {
				if js.State != "RUNNING" {
					continue
				}
				j, err := parseScontrolJob([]byte(slurmCmd(t, "scontrol", "show", "job", "-d", "-o", strconv.Itoa(js.ID))), time.Local)
				if err != nil {
					t.Fatal(err)
				}
				for _, h := range j.Hosts {
					held += h.CPUs
					if h.Host == gone {
						t.Errorf("job %d still holds %s after its release", j.ID, gone)
					}
				}
				if mode == ModeCLI && js.ID != mustID(t, al.ID) {
					t.Errorf("job %d runs after releasing a node; want job %s shrunk in place", js.ID, al.ID)
				}
			}
			if held != testCapacity-testCPUs {
				t.Errorf("our jobs hold %d CPUs after releasing a node, want %d", held, testCapacity-testCPUs)
			}
			// One slot of a node: the node is re-allocated with the other.
			part := left.Slots[0].Host
			left, err = a.Release(tctx(t), al.ID, []allocator.Slot{{Host: part, Count: 1}})
			if err != nil {
				t.Fatalf("Release(1 on %s): %v", part, err)
			}
			if left == nil || left.Granted != testCapacity-testCPUs-1 {
				t.Fatalf("after releasing 1 slot on %s: %+v", part, left)
			}
			got, err := a.Get(tctx(t), al.ID)
			if err != nil || got.Granted != left.Granted {
				t.Fatalf("Get = %+v, %v; want %d slots", got, err, left.Granted)
			}
			// The released slot is free in Slurm: the one idle CPU of the partition.
			other, err := a.Request(tctx(t), allocator.Request{Min: 1, Max: 1, Immediate: true})
			if err != nil {
				t.Fatalf("requesting the released slot: %v", err)
			}
			if other.Slots[0].Host != part && other.Slots[0].Host != gone {
				t.Errorf("new grant on %s, want %s or %s", other.Slots[0].Host, part, gone)
			}
			if left, err := a.Release(tctx(t), al.ID, nil); err != nil || left != nil {
				t.Fatalf("Release(all) = %+v, %v", left, err)
			}
			for _, j := range ourJobs(t) {
				if running[j.State] && owner(j) != mustID(t, other.ID) {
					t.Errorf("job %d (%s) of the released allocation still queued", j.ID, j.State)
				}
			}
		})
	}
}

func mustID(t *testing.T, id string) int {
	t.Helper()
	n, err := parseID(id)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestExternalCancelIsReclaimed(t *testing.T) {
	for _, mode := range modes() {
		t.Run(mode, func(t *testing.T) {
			a := newTestAllocator(t, mode)
			ctx, cancel := context.WithCancel(tctx(t))
			defer cancel()
			ours, err := a.Request(ctx, allocator.Request{Min: 1, Max: 1, Immediate: true})
			if err != nil {
				t.Fatal(err)
			}
			victim, err := a.Request(ctx, allocator.Request{Min: 3, Max: 3, Immediate: true})
			if err != nil {
				t.Fatal(err)
			}
			evs, err := a.Events(ctx)
			if err != nil {
				t.Fatal(err)
			}
			// Our own release is no reclaim; an administrator's scancel is.
			if _, err := a.Release(ctx, ours.ID, nil); err != nil {
				t.Fatal(err)
			}
			slurmCmd(t, "scancel", strings.TrimPrefix(victim.ID, idPrefix))
			select {
			case ev := <-evs:
				if ev.Kind != allocator.EventReclaimed || ev.AllocationID != victim.ID || allocator.Total(ev.Slots) != 3 || !strings.Contains(ev.Reason, "CANCELLED") {
					t.Errorf("event %+v, want the reclaim of %s's 3 slots by scancel", ev, victim.ID)
				}
			case <-time.After(30 * time.Second):
				t.Fatal("no event 30s after scancel")
			}
			select {
			case ev := <-evs:
				t.Errorf("unexpected second event %+v", ev)
			case <-time.After(500 * time.Millisecond):
			}
			if _, err := a.Get(ctx, victim.ID); !errors.Is(err, allocator.ErrUnknownAllocation) {
				t.Errorf("Get after scancel = %v, want ErrUnknownAllocation", err)
			}
		})
	}
}

func TestBadInput(t *testing.T) {
	for _, mode := range modes() {
		t.Run(mode, func(t *testing.T) {
			a := newTestAllocator(t, mode)
			_, err := a.Request(tctx(t), allocator.Request{Min: 1, Max: 1, Consumer: "nosuchpartition"})
			if !errors.Is(err, allocator.ErrInvalidArgument) || !strings.Contains(err.Error(), "nosuchpartition") {
				t.Errorf("request in a missing partition = %v, want ErrInvalidArgument naming it", err)
			}
			_, err = a.Request(tctx(t), allocator.Request{Min: testCapacity + 1, Max: testCapacity + 1})
			if !errors.Is(err, allocator.ErrNoneAvailable) {
				t.Errorf("request larger than the cluster = %v, want ErrNoneAvailable", err)
			}
			// Partition "small" is one node: 3 slots can never run there.
			_, err = a.Request(tctx(t), allocator.Request{Min: 3, Max: 3, Consumer: "small"})
			if !errors.Is(err, allocator.ErrNoneAvailable) {
				t.Errorf("request larger than partition small = %v, want ErrNoneAvailable", err)
			}
			for _, id := range []string{"", "slurm-", "slurm-x", "slurm--1", "static-1", "slurm-999999"} {
				if _, err := a.Get(tctx(t), id); !errors.Is(err, allocator.ErrUnknownAllocation) {
					t.Errorf("Get(%q) = %v, want ErrUnknownAllocation", id, err)
				}
			}
			if n := len(ourJobs(t)); n != 0 {
				t.Errorf("%d jobs queued after refused requests", n)
			}
		})
	}
}

// TestControllerDown points the backend at a slurm.conf whose controller
// port nobody listens on.
func TestControllerDown(t *testing.T) {
	for _, mode := range modes() {
		t.Run(mode, func(t *testing.T) {
			conf, err := os.ReadFile(cluster.conf)
			if err != nil {
				t.Fatal(err)
			}
			lines := strings.Split(string(conf), "\n")
			for i, l := range lines {
				if strings.HasPrefix(l, "SlurmctldPort=") {
					lines[i] = "SlurmctldPort=1"
				}
			}
			down := filepath.Join(t.TempDir(), "slurm.conf")
			if err := os.WriteFile(down, []byte(strings.Join(lines, "\n")), 0o644); err != nil {
				t.Fatal(err)
			}
			cfg := Config{SlurmConf: down, Partition: "debug", Mode: mode}
			if mode == ModeREST {
				// slurmrestd that is not there.
				cfg.RESTURL, cfg.TokenFile = "http://127.0.0.1:1", cluster.tokenFile
			}
			a, err := New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := a.Request(tctx(t), allocator.Request{Min: 1, Max: 1}); !errors.Is(err, allocator.ErrBackendDown) {
				t.Errorf("Request with the controller down = %v, want ErrBackendDown", err)
			}
			if _, err := a.List(tctx(t)); !errors.Is(err, allocator.ErrBackendDown) {
				t.Errorf("List with the controller down = %v, want ErrBackendDown", err)
			}
			if n := len(ourJobs(t)); n != 0 {
				t.Errorf("%d jobs queued", n)
			}
		})
	}
}
