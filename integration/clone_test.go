package integration

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// guest runs `sftest ARGS...` in the parent VM and decodes the JSON
// object it prints into v.
func guest(t *testing.T, v any, args ...string) {
	t.Helper()
	out, err := tb.sfctl(append([]string{"vm", "exec", tb.parent, "--", "sftest"}, args...)...)
	if err != nil {
		t.Fatalf("sftest %s: %v\noutput: %s\nsfld log:\n%s", strings.Join(args, " "), err, out, tb.tail())
	}
	line := lastJSONLine(out)
	if err := json.Unmarshal(line, v); err != nil {
		t.Fatalf("sftest %s printed %q: %v", strings.Join(args, " "), out, err)
	}
}

func lastJSONLine(out []byte) []byte {
	lines := bytes.Split(bytes.TrimSpace(out), []byte("\n"))
	for i := len(lines) - 1; i >= 0; i-- {
		if bytes.HasPrefix(bytes.TrimSpace(lines[i]), []byte("{")) {
			return lines[i]
		}
	}
	return nil
}

// settled checks that nothing of a finished family remains: only the
// parent VM runs, no ticket is held and the pool holds no allocation.
func settled(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var vms, tickets, allocs []map[string]any
	for {
		vms, tickets, allocs = listJSON(t, "vm", "list"), listJSON(t, "tickets"), poolAllocations(t)
		if len(vms) == 1 && len(tickets) == 0 && len(allocs) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if len(vms) != 1 || vms[0]["id"] != tb.parent {
		t.Errorf("VMs left: %v", vms)
	}
	if len(tickets) != 0 {
		t.Errorf("tickets left: %v", tickets)
	}
	if len(allocs) != 0 {
		t.Errorf("slots still held in the pool: %v", allocs)
	}
	if pids := qemuPIDs(tb.state); len(pids) != 1 {
		t.Errorf("%d QEMU processes of this bed run, want 1 (the parent): %v", len(pids), pids)
	}
}

func listJSON(t *testing.T, args ...string) []map[string]any {
	t.Helper()
	out, err := tb.sfctl(append(args, "--json")...)
	if err != nil {
		t.Fatal(err)
	}
	var v []map[string]any
	if err := json.Unmarshal(out, &v); err != nil {
		t.Fatalf("sfctl %v --json: %q: %v", args, out, err)
	}
	return v
}

// poolAllocations lists the static pool's allocations (sfalloc list).
func poolAllocations(t *testing.T) []map[string]any {
	t.Helper()
	out, err := tb.cmd("sfalloc", "list", "--json").Output()
	if err != nil {
		t.Fatalf("sfalloc list: %v", err)
	}
	var v []map[string]any
	if err := json.Unmarshal(out, &v); err != nil {
		t.Fatalf("sfalloc list --json: %q: %v", out, err)
	}
	return v
}

func TestCloneIDsEachOnce(t *testing.T) {
	var r struct {
		Granted int   `json:"granted"`
		IDs     []int `json:"ids"`
	}
	guest(t, &r, "ids", "4")
	if r.Granted != 4 {
		t.Fatalf("granted %d, want 4 (the pool has %d slots)", r.Granted, poolSlots)
	}
	if !slices.Equal(r.IDs, []int{0, 1, 2, 3}) {
		t.Fatalf("clone IDs %v, want 0..3 each once", r.IDs)
	}
	settled(t)
}

func TestClonesDivergeIndependently(t *testing.T) {
	var r struct {
		Granted int `json:"granted"`
		VMs     []struct {
			ID       int  `json:"id"`
			FileOK   bool `json:"file_ok"`
			MemoryOK bool `json:"memory_ok"`
		} `json:"vms"`
	}
	guest(t, &r, "diverge", "3")
	if len(r.VMs) != 3 {
		t.Fatalf("%d VMs reported, want 3: %+v", len(r.VMs), r)
	}
	for _, v := range r.VMs {
		if !v.FileOK || !v.MemoryOK {
			t.Errorf("VM %d saw another VM's writes: %+v", v.ID, v)
		}
	}
	settled(t)
}

func TestParentWritesInvisibleToClones(t *testing.T) {
	var r struct {
		Granted int `json:"granted"`
		Parent  struct {
			File   string `json:"file"`
			Memory string `json:"memory"`
		} `json:"parent"`
		Clones []struct {
			ID     int    `json:"id"`
			File   string `json:"file"`
			Memory string `json:"memory"`
		} `json:"clones"`
	}
	guest(t, &r, "isolation", "3")
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
	settled(t)
}

func TestClonesRandomNumbersDiffer(t *testing.T) {
	var r struct {
		VMs []struct {
			ID         int    `json:"id"`
			Hostname   string `json:"hostname"`
			URandom    string `json:"urandom"`
			CryptoRand string `json:"crypto_rand"`
		} `json:"vms"`
	}
	guest(t, &r, "random", "4")
	if len(r.VMs) != 4 {
		t.Fatalf("%d VMs reported, want 4", len(r.VMs))
	}
	seen := map[string]int{}
	hosts := map[string]int{}
	for _, v := range r.VMs {
		for _, s := range []string{v.URandom, v.CryptoRand} {
			if prev, ok := seen[s]; ok || s == "" {
				t.Errorf("VM %d drew %q, as VM %d did", v.ID, s, prev)
			}
			seen[s] = v.ID
		}
		if prev, ok := hosts[v.Hostname]; ok {
			t.Errorf("VM %d has host name %q, as VM %d does", v.ID, v.Hostname, prev)
		}
		hosts[v.Hostname] = v.ID
	}
	settled(t)
}

func TestJoinWaitsForEveryClone(t *testing.T) {
	var r struct {
		Granted   int     `json:"granted"`
		DelaysMS  []int64 `json:"delays_ms"`
		JoinMS    int64   `json:"join_ms"`
		AfterLast bool    `json:"after_last"`
	}
	guest(t, &r, "join", "3")
	if r.Granted != 3 || len(r.DelaysMS) != 2 {
		t.Fatalf("granted %d with %d delays, want 3 and 2: %+v", r.Granted, len(r.DelaysMS), r)
	}
	if !r.AfterLast {
		t.Fatalf("sf_join returned after %d ms, before the last clone exited (delays %v)", r.JoinMS, r.DelaysMS)
	}
	settled(t)
}

func TestKillRemovesAllClones(t *testing.T) {
	var r struct {
		Granted int  `json:"granted"`
		OK      bool `json:"ok"`
	}
	guest(t, &r, "kill", "3")
	if !r.OK || r.Granted != 3 {
		t.Fatalf("sftest kill: %+v", r)
	}
	settled(t)
}

func TestCheckpointThenCreateClones(t *testing.T) {
	var cp struct {
		Checkpoint string `json:"checkpoint"`
		CloneID    int    `json:"clone_id"`
	}
	guest(t, &cp, "checkpoint")
	if cp.Checkpoint == "" || cp.CloneID != 0 {
		t.Fatalf("sftest checkpoint: %+v", cp)
	}
	// The parent goes on; clones made later resume at the checkpoint.
	time.Sleep(time.Second)
	var r struct {
		Granted int `json:"granted"`
		Exits   []struct {
			CloneID int    `json:"clone_id"`
			Result  string `json:"result"`
			Killed  bool   `json:"killed"`
		} `json:"exits"`
	}
	guest(t, &r, "create-clones", cp.Checkpoint, "3")
	if r.Granted != 3 || len(r.Exits) != 2 {
		t.Fatalf("create-clones: %+v", r)
	}
	for _, e := range r.Exits {
		if want := fmt.Sprintf("resumed-at-checkpoint:%d", e.CloneID); e.Result != want || e.Killed {
			t.Errorf("clone %d ended with %q (killed %v), want %q", e.CloneID, e.Result, e.Killed, want)
		}
	}
	settled(t)
}

// TestOperatorClone: sfctl clone needs no guest cooperation; the clones
// run with their own host names until their ticket is killed.
func TestOperatorClone(t *testing.T) {
	out, err := tb.sfctl("clone", tb.parent, "-n", "3", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var r struct {
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
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("clone --json: %q: %v", out, err)
	}
	t.Cleanup(func() { tb.sfctl("kill", r.Ticket) })
	if r.Granted != 3 || len(r.Clones) != 2 || r.Timing.DescriptorBytes <= 0 || r.Timing.PauseMS <= 0 {
		t.Fatalf("clone: %+v", r)
	}
	for _, c := range r.Clones {
		host, err := tb.sfctl("vm", "exec", c.ID, "--", "hostname")
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.TrimSpace(string(host)); got != c.Hostname {
			t.Errorf("clone %d: hostname %q, want %q", c.CloneID, got, c.Hostname)
		}
	}
	// A guest may act only on itself: a clone cannot kill its parent's
	// ticket.
	out, err = tb.sfctl("vm", "exec", r.Clones[0].ID, "--", "sfguest", "kill", r.Ticket)
	if err == nil || !strings.Contains(string(out)+err.Error(), "another VM") {
		t.Errorf("a clone killed its parent's ticket: %v %s", err, out)
	}
	if _, err := tb.sfctl("kill", r.Ticket); err != nil {
		t.Fatal(err)
	}
	settled(t)
}

func TestBadGuestRequests(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"sfguest", "request-ticket", "0"}, "at least 1"},
		{[]string{"sfguest", "request-ticket", "-3"}, ""},
		{[]string{"sfguest", "clone", "tk-00000000"}, "no ticket"},
		{[]string{"sfguest", "join", "tk-00000000"}, "no ticket"},
		{[]string{"sfguest", "exit"}, "not one"},
	} {
		out, err := tb.sfctl(append([]string{"vm", "exec", tb.parent, "--"}, c.args...)...)
		if err == nil {
			t.Errorf("%v succeeded: %s", c.args, out)
			continue
		}
		if !strings.Contains(string(out), c.want) {
			t.Errorf("%v: output %q does not say %q", c.args, out, c.want)
		}
	}
	settled(t)
}

// TestSfldKilledMidClone: sfld dies (SIGKILL) while clones are being
// created; the restarted sfld leaves no clone QEMU and no held slot, the
// guest's pending call fails instead of hanging, and the parent works on.
func TestSfldKilledMidClone(t *testing.T) {
	vmsDir := filepath.Join(tb.state, "sfld", "vms")
	done := make(chan error, 1)
	go func() {
		_, err := tb.sfctl("vm", "exec", tb.parent, "--", "sftest", "ids", "8")
		done <- err
	}()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		ents, _ := os.ReadDir(vmsDir)
		if len(ents) > 1 {
			break // a clone's directory exists: cloning is under way
		}
		if time.Now().After(deadline) {
			t.Fatalf("no clone started within 2 minutes:\n%s", tb.tail())
		}
		time.Sleep(20 * time.Millisecond)
	}
	tb.killSfld()
	<-done // sfctl loses its connection
	if err := tb.startSfld(); err != nil {
		t.Fatal(err)
	}
	settled(t)
	// The parent is still usable.
	var r struct {
		IDs []int `json:"ids"`
	}
	guest(t, &r, "ids", "2")
	if !slices.Equal(r.IDs, []int{0, 1}) {
		t.Fatalf("after the restart, clone IDs %v, want [0 1]", r.IDs)
	}
	settled(t)
}
