// Package scenario holds the guest-API scenarios that every test bed runs:
// the KVM bed (package integration) and the Xen bed (integration/xen). A
// scenario drives the bed's parent VM through sfctl — mostly by running
// the test guest's sftest, which calls the SnowFlock API inside the VM and
// prints what it saw as JSON — and checks the result; the bed says how to
// reach its sfld and what "nothing left behind" means on its hypervisor.
package scenario

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// Bed is what the scenarios need of a test bed.
type Bed interface {
	// Sfctl runs sfctl against the bed's sfld: stdout, and stderr in the
	// error.
	Sfctl(args ...string) ([]byte, error)
	// Parent is the ID of the bed's parent VM, booted once for the run.
	Parent() string
	// PoolAllocations lists the allocations the bed's slot pool holds
	// (sfalloc list --json where sfld runs).
	PoolAllocations(t *testing.T) []map[string]any
	// Leftovers describes what of finished VMs still runs on the
	// hypervisor (QEMU processes, Xen domains) besides the parent's;
	// empty when nothing does.
	Leftovers(t *testing.T) string
	// Tail is the end of the bed's logs, for failure messages.
	Tail() string
}

// Main is a bed's TestMain: run sets the bed up, runs m and tears the bed
// down; a setup error is printed as "WHAT test bed: ..." and fails the run.
func Main(m *testing.M, what string, run func(*testing.M) (int, error)) {
	code, err := run(m)
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s test bed: %v\n", what, err)
		if code == 0 {
			code = 1
		}
	}
	os.Exit(code)
}

// GuestBuilt reports, naming the command that builds it, a missing test
// guest (build/guest under the repository root).
func GuestBuilt(root string) error {
	for _, f := range []string{"build/guest/vmlinuz", "build/guest/initrd.img"} {
		if _, err := os.Stat(filepath.Join(root, f)); err != nil {
			return fmt.Errorf("%s is missing: run `make guest` (make test does it first): %w", f, err)
		}
	}
	return nil
}

// Output runs cmd and returns its stdout; its stderr is in the error,
// which names the command as what.
func Output(cmd *exec.Cmd, what string) ([]byte, error) {
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("%s: %v: %s", what, err, stderr.String())
	}
	return out, nil
}

// Guest runs `sftest ARGS...` in the parent VM and decodes the JSON object
// it prints last into v.
func Guest(t *testing.T, b Bed, v any, args ...string) {
	t.Helper()
	out, err := b.Sfctl(append([]string{"vm", "exec", b.Parent(), "--", "sftest"}, args...)...)
	if err != nil {
		t.Fatalf("sftest %s: %v\noutput: %s\n%s", strings.Join(args, " "), err, out, b.Tail())
	}
	if err := json.Unmarshal(LastJSONLine(out), v); err != nil {
		t.Fatalf("sftest %s printed %q: %v", strings.Join(args, " "), out, err)
	}
}

// LastJSONLine returns the last line of out that holds a JSON object (nil
// if none does).
func LastJSONLine(out []byte) []byte {
	lines := bytes.Split(bytes.TrimSpace(out), []byte("\n"))
	for i := len(lines) - 1; i >= 0; i-- {
		if l := bytes.TrimSpace(lines[i]); bytes.HasPrefix(l, []byte("{")) {
			return l
		}
	}
	return nil
}

// ListJSON runs `sfctl ARGS... --json` and decodes its list.
func ListJSON(t *testing.T, b Bed, args ...string) []map[string]any {
	t.Helper()
	out, err := b.Sfctl(append(args, "--json")...)
	if err != nil {
		t.Fatal(err)
	}
	var v []map[string]any
	if err := json.Unmarshal(out, &v); err != nil {
		t.Fatalf("sfctl %v --json: %q: %v", args, out, err)
	}
	return v
}

// Settled checks that nothing of a finished family remains: sfld has only
// the parent, no ticket and no pool slot is held, and the hypervisor runs
// nothing but the parent. It waits up to a minute for that.
func Settled(t *testing.T, b Bed) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	var vms, tickets, allocs []map[string]any
	var left string
	for {
		vms, tickets, allocs, left = ListJSON(t, b, "vm", "list"), ListJSON(t, b, "tickets"), b.PoolAllocations(t), b.Leftovers(t)
		if len(vms) == 1 && len(tickets) == 0 && len(allocs) == 0 && left == "" || time.Now().After(deadline) {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	if len(vms) != 1 || vms[0]["id"] != b.Parent() {
		t.Errorf("VMs left: %v", vms)
	}
	if len(tickets) != 0 {
		t.Errorf("tickets left: %v", tickets)
	}
	if len(allocs) != 0 {
		t.Errorf("slots still held in the pool: %v", allocs)
	}
	if left != "" {
		t.Errorf("still running besides the parent: %s", left)
	}
}

// CloneIDsEachOnce: sf_request_ticket(n) then sf_clone gives IDs 0..n-1,
// each once (0 in the parent). The pool must have n slots.
func CloneIDsEachOnce(t *testing.T, b Bed, n int) {
	var r struct {
		Granted int   `json:"granted"`
		IDs     []int `json:"ids"`
	}
	Guest(t, b, &r, "ids", fmt.Sprint(n))
	if r.Granted != n {
		t.Fatalf("granted %d, want %d", r.Granted, n)
	}
	want := make([]int, n)
	for i := range want {
		want[i] = i
	}
	if !slices.Equal(r.IDs, want) {
		t.Fatalf("clone IDs %v, want 0..%d each once", r.IDs, n-1)
	}
	Settled(t, b)
}

// ParentWritesInvisibleToClones: the parent keeps running after sf_clone;
// what it writes afterwards (a file and memory) its clones never see.
func ParentWritesInvisibleToClones(t *testing.T, b Bed) {
	var r struct {
		Parent struct {
			File   string `json:"file"`
			Memory string `json:"memory"`
		} `json:"parent"`
		Clones []struct {
			ID     int    `json:"id"`
			File   string `json:"file"`
			Memory string `json:"memory"`
		} `json:"clones"`
	}
	Guest(t, b, &r, "isolation", "3")
	if r.Parent.File != "B" || r.Parent.Memory != "B" {
		t.Fatalf("the parent did not see its own later write: %+v", r.Parent)
	}
	if len(r.Clones) != 2 {
		t.Fatalf("%d clones reported, want 2", len(r.Clones))
	}
	for _, c := range r.Clones {
		if c.File != "A" || c.Memory != "A" {
			t.Errorf("clone %d saw file %q memory %q, want A (as at the clone point)", c.ID, c.File, c.Memory)
		}
	}
	Settled(t, b)
}

// JoinWaitsForEveryClone: sf_join returns only after the last clone called
// sf_exit.
func JoinWaitsForEveryClone(t *testing.T, b Bed) {
	var r struct {
		Granted   int     `json:"granted"`
		DelaysMS  []int64 `json:"delays_ms"`
		JoinMS    int64   `json:"join_ms"`
		AfterLast bool    `json:"after_last"`
	}
	Guest(t, b, &r, "join", "3")
	if r.Granted != 3 || len(r.DelaysMS) != 2 {
		t.Fatalf("granted %d with %d delays, want 3 and 2: %+v", r.Granted, len(r.DelaysMS), r)
	}
	if !r.AfterLast {
		t.Fatalf("sf_join returned after %d ms, before the last clone exited (delays %v)", r.JoinMS, r.DelaysMS)
	}
	Settled(t, b)
}

// KillRemovesAllClones: sf_kill ends every clone of the ticket.
func KillRemovesAllClones(t *testing.T, b Bed) {
	var r struct {
		Granted int  `json:"granted"`
		OK      bool `json:"ok"`
	}
	Guest(t, b, &r, "kill", "3")
	if !r.OK || r.Granted != 3 {
		t.Fatalf("sftest kill: %+v", r)
	}
	Settled(t, b)
}

// CheckpointThenCreateClones: sf_checkpoint_parent, the parent goes on,
// then sf_create_clones: the clones resume inside the checkpoint call.
func CheckpointThenCreateClones(t *testing.T, b Bed) {
	var cp struct {
		Checkpoint string `json:"checkpoint"`
		CloneID    int    `json:"clone_id"`
	}
	Guest(t, b, &cp, "checkpoint")
	if cp.Checkpoint == "" || cp.CloneID != 0 {
		t.Fatalf("sftest checkpoint: %+v", cp)
	}
	time.Sleep(time.Second)
	var r struct {
		Granted int `json:"granted"`
		Exits   []struct {
			CloneID int    `json:"clone_id"`
			Result  string `json:"result"`
			Killed  bool   `json:"killed"`
		} `json:"exits"`
	}
	Guest(t, b, &r, "create-clones", cp.Checkpoint, "3")
	if r.Granted != 3 || len(r.Exits) != 2 {
		t.Fatalf("create-clones: %+v", r)
	}
	for _, e := range r.Exits {
		if want := fmt.Sprintf("resumed-at-checkpoint:%d", e.CloneID); e.Result != want || e.Killed {
			t.Errorf("clone %d ended with %q (killed %v), want %q", e.CloneID, e.Result, e.Killed, want)
		}
	}
	Settled(t, b)
}

// Family is what `sfctl clone --json` printed.
type Family struct {
	Ticket  string `json:"ticket"`
	Granted int    `json:"granted"`
	Clones  []struct {
		ID       string `json:"id"`
		Hostname string `json:"hostname"`
		CloneID  int    `json:"clone_id"`
	} `json:"clones"`
	Timing struct {
		PauseMS         float64 `json:"pause_ms"`
		DescriptorBytes int64   `json:"descriptor_bytes,string"` // protojson: int64 as text
	} `json:"timing"`
}

// OperatorClone clones the parent with `sfctl clone -n n` (no guest
// cooperation) and checks that n-1 clones run; the ticket is killed when
// the test ends, if the test did not kill it.
func OperatorClone(t *testing.T, b Bed, n int) *Family {
	t.Helper()
	out, err := b.Sfctl("clone", b.Parent(), "-n", fmt.Sprint(n), "--json")
	if err != nil {
		t.Fatalf("%v\n%s", err, b.Tail())
	}
	var f Family
	if err := json.Unmarshal(out, &f); err != nil {
		t.Fatalf("sfctl clone --json printed %q: %v", out, err)
	}
	t.Cleanup(func() { b.Sfctl("kill", f.Ticket) })
	if f.Granted != n || len(f.Clones) != n-1 {
		t.Fatalf("sfctl clone -n %d: granted %d, %d clones: %s", n, f.Granted, len(f.Clones), out)
	}
	return &f
}

// SfldKilledMidClone: sfld is SIGKILLed while the parent's clones are
// being made (underWay reports that a clone's start began; kill kills
// sfld; restart waits for the restarted one); afterwards nothing of the
// family remains and the parent clones again.
func SfldKilledMidClone(t *testing.T, b Bed, n int, underWay func() bool, kill func(), restart func() error) {
	done := make(chan error, 1)
	go func() {
		_, err := b.Sfctl("vm", "exec", b.Parent(), "--", "sftest", "ids", fmt.Sprint(n))
		done <- err
	}()
	deadline := time.Now().Add(3 * time.Minute)
	for !underWay() {
		if time.Now().After(deadline) {
			t.Fatalf("no clone started within 3 minutes:\n%s", b.Tail())
		}
		time.Sleep(50 * time.Millisecond)
	}
	kill()
	<-done // sfctl loses its connection
	if err := restart(); err != nil {
		t.Fatal(err)
	}
	Settled(t, b)
	CloneIDsEachOnce(t, b, 2)
}
