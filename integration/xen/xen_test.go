//go:build xenbed

package xen

import (
	"bytes"
	"encoding/json"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// guest runs `sftest ARGS...` in the parent PV domain and decodes the
// JSON object it prints last into v.
func guest(t *testing.T, v any, args ...string) {
	t.Helper()
	out, err := tb.sfctl(append([]string{"vm", "exec", tb.parent, "--", "sftest"}, args...)...)
	if err != nil {
		t.Fatalf("sftest %s: %v\noutput: %s\n%s", strings.Join(args, " "), err, out, tb.tail())
	}
	lines := bytes.Split(bytes.TrimSpace(out), []byte("\n"))
	for i := len(lines) - 1; i >= 0; i-- {
		if l := bytes.TrimSpace(lines[i]); bytes.HasPrefix(l, []byte("{")) {
			if err := json.Unmarshal(l, v); err != nil {
				t.Fatalf("sftest %s printed %q: %v", strings.Join(args, " "), out, err)
			}
			return
		}
	}
	t.Fatalf("sftest %s printed no JSON: %q", strings.Join(args, " "), out)
}

// domains lists the domains running in the bed (xl list), dom0 excluded.
func domains(t *testing.T) []string {
	t.Helper()
	var names []string
	for i, line := range strings.Split(strings.TrimSpace(tb.dom0(t, "xl list")), "\n") {
		f := strings.Fields(line)
		if i == 0 || len(f) == 0 || f[0] == "Domain-0" {
			continue
		}
		names = append(names, f[0])
	}
	return names
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

// poolAllocations lists dom0's static pool's allocations.
func poolAllocations(t *testing.T) []map[string]any {
	t.Helper()
	out := tb.dom0(t, "sfalloc --config /etc/snowflock/sfld.yaml list --json 2>&1")
	var v []map[string]any
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("sfalloc list --json in dom0: %q: %v", out, err)
	}
	return v
}

// settled checks that nothing of a finished family remains: sfld has only
// the parent, Xen runs only the parent's domain, no ticket and no slot is
// held.
func settled(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	var vms, tickets, allocs []map[string]any
	var doms []string
	for {
		vms, tickets, allocs, doms = listJSON(t, "vm", "list"), listJSON(t, "tickets"), poolAllocations(t), domains(t)
		if len(vms) == 1 && len(tickets) == 0 && len(allocs) == 0 && len(doms) == 1 || time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Second)
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
	if want := []string{"sf-" + tb.parent}; !slices.Equal(doms, want) {
		t.Errorf("domains running: %v, want only the parent's %v", doms, want)
	}
}

// TestDomainLifecycle: a VM is a PV domain named after it; its agent
// answers over xenstore; pause and stop act on the domain.
func TestDomainLifecycle(t *testing.T) {
	out, err := tb.sfctl("vm", "start", "--name", "lifecycle", "--wait", "--json")
	if err != nil {
		t.Fatalf("%v\n%s", err, tb.tail())
	}
	var vm struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal(out, &vm); err != nil || vm.ID == "" {
		t.Fatalf("vm start --json printed %q: %v", out, err)
	}
	name := "sf-" + vm.ID
	if doms := domains(t); !slices.Contains(doms, name) {
		t.Fatalf("domain %s not in xl list: %v", name, doms)
	}
	if info := tb.dom0(t, "xl list -l "+name); !strings.Contains(info, `"type": "pv"`) {
		t.Errorf("domain %s is not a PV domain:\n%.2000s", name, info)
	}
	out, err = tb.sfctl("vm", "exec", vm.ID, "--", "sh", "-c", "echo hello-from-$(hostname); cat /sys/hypervisor/type 2>/dev/null || ls /dev/xen")
	if err != nil {
		t.Fatalf("exec in the domain: %v\n%s", err, tb.tail())
	}
	if !strings.Contains(string(out), "hello-from-") {
		t.Errorf("exec printed %q", out)
	}
	// Pause: the domain's state shows p; unpause: it runs again and answers.
	tb.dom0(t, "xl pause "+name)
	if st := tb.dom0(t, "xl list "+name); !strings.Contains(st, "p") {
		t.Errorf("xl list after pause: %s", st)
	}
	tb.dom0(t, "xl unpause "+name)
	if _, err := tb.sfctl("vm", "exec", vm.ID, "--", "true"); err != nil {
		t.Fatalf("exec after unpause: %v", err)
	}
	if _, err := tb.sfctl("vm", "stop", vm.ID); err != nil {
		t.Fatal(err)
	}
	if doms := domains(t); slices.Contains(doms, name) {
		t.Fatalf("domain %s still runs after vm stop: %v", name, doms)
	}
	settled(t)
}

func TestCloneIDsEachOnce(t *testing.T) {
	var r struct {
		Granted int   `json:"granted"`
		IDs     []int `json:"ids"`
	}
	guest(t, &r, "ids", "3")
	if r.Granted != 3 {
		t.Fatalf("granted %d, want 3 (the pool has %d slots)", r.Granted, poolSlots)
	}
	if !slices.Equal(r.IDs, []int{0, 1, 2}) {
		t.Fatalf("clone IDs %v, want 0..2 each once", r.IDs)
	}
	settled(t)
}

func TestParentWritesInvisibleToClones(t *testing.T) {
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
	guest(t, &r, "isolation", "3")
	if r.Parent.File != "B" || r.Parent.Memory != "B" {
		t.Fatalf("the parent did not see its own later write: %+v", r.Parent)
	}
	if len(r.Clones) != 2 {
		t.Fatalf("%d clones reported, want 2", len(r.Clones))
	}
	for _, c := range r.Clones {
		if c.File != "A" || c.Memory != "A" {
			t.Errorf("clone %d saw the parent's later write: %+v", c.ID, c)
		}
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

// TestSfldKilledMidClone: dom0's sfld is SIGKILLed while clones are being
// restored; the restarted sfld (dom0's init restarts it) leaves no clone
// domain and no held slot, and the parent clones again.
func TestSfldKilledMidClone(t *testing.T) {
	done := make(chan error, 1)
	go func() {
		_, err := tb.sfctl("vm", "exec", tb.parent, "--", "sftest", "ids", "3")
		done <- err
	}()
	// Wait until a clone's domain is being built.
	deadline := time.Now().Add(3 * time.Minute)
	for {
		// A clone's directory exists from the start of its restore.
		out := tb.dom0(t, "ls /var/lib/snowflock/sfld/vms 2>/dev/null | wc -l")
		if n, err := strconv.Atoi(strings.TrimSpace(out)); err == nil && n > 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no clone started within 3 minutes:\n%s", tb.tail())
		}
		time.Sleep(200 * time.Millisecond)
	}
	tb.dom0(t, "kill -9 $(cat /run/sfld.pid)")
	<-done // sfctl loses its connection
	if err := tb.waitSfld(2 * time.Minute); err != nil {
		t.Fatal(err)
	}
	settled(t)
	var r struct {
		IDs []int `json:"ids"`
	}
	guest(t, &r, "ids", "2")
	if !slices.Equal(r.IDs, []int{0, 1}) {
		t.Fatalf("after the restart, clone IDs %v, want [0 1]", r.IDs)
	}
	settled(t)
}

// TestCheckpointThenCreateClones: sf_checkpoint_parent, then
// sf_create_clones later: the clones resume inside the checkpoint call.
func TestCheckpointThenCreateClones(t *testing.T) {
	var cp struct {
		Checkpoint string `json:"checkpoint"`
		CloneID    int    `json:"clone_id"`
	}
	guest(t, &cp, "checkpoint")
	if cp.Checkpoint == "" || cp.CloneID != 0 {
		t.Fatalf("sftest checkpoint: %+v", cp)
	}
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
		if want := "resumed-at-checkpoint:" + strconv.Itoa(e.CloneID); e.Result != want || e.Killed {
			t.Errorf("clone %d ended with %q (killed %v), want %q", e.CloneID, e.Result, e.Killed, want)
		}
	}
	settled(t)
}

// TestClonesOwnNamesAndMACs: an operator clone of the parent gives every
// clone a domain of its own name, UUID and MAC (the bed's sfld puts each
// domain's vif on dom0's bridge xenbr0), and the clone's guest sees its
// new MAC, not the parent's: netfront reads it again after the restore.
func TestClonesOwnNamesAndMACs(t *testing.T) {
	out, err := tb.sfctl("clone", tb.parent, "-n", "3", "--json")
	if err != nil {
		t.Fatalf("%v\n%s", err, tb.tail())
	}
	var r struct {
		Ticket string `json:"ticket"`
		Clones []struct {
			ID string `json:"id"`
		} `json:"clones"`
	}
	if err := json.Unmarshal(out, &r); err != nil || len(r.Clones) != 2 {
		t.Fatalf("sfctl clone --json printed %q: %v", out, err)
	}
	defer func() {
		if _, err := tb.sfctl("kill", r.Ticket); err != nil {
			t.Error(err)
		}
		settled(t)
	}()
	// xl list -v: name, domid and UUID of every domain.
	uuids := map[string]string{}
	for _, line := range strings.Split(tb.dom0(t, "xl list -v"), "\n")[1:] {
		if f := strings.Fields(line); len(f) >= 7 {
			uuids[f[0]] = f[6]
		}
	}
	vms := []string{tb.parent}
	for _, c := range r.Clones {
		vms = append(vms, c.ID)
	}
	seenMAC, seenUUID := map[string]string{}, map[string]string{}
	for _, id := range vms {
		name := "sf-" + id
		uuid, ok := uuids[name]
		if !ok {
			t.Errorf("VM %s: no domain %s in xl list -v: %v", id, name, uuids)
			continue
		}
		// xl network-list: Idx BE Mac ...; one vif.
		lines := strings.Split(strings.TrimSpace(tb.dom0(t, "xl network-list "+name)), "\n")
		if len(lines) != 2 || len(strings.Fields(lines[1])) < 3 {
			t.Errorf("domain %s: xl network-list printed %q, want one vif", name, lines)
			continue
		}
		mac := strings.Fields(lines[1])[2]
		got, err := tb.sfctl("vm", "exec", id, "--", "cat", "/sys/class/net/eth0/address")
		if err != nil {
			t.Errorf("VM %s: %v", id, err)
			continue
		}
		if g := strings.TrimSpace(string(got)); g != mac {
			t.Errorf("VM %s: the guest's eth0 is %q, its domain's vif %q", id, g, mac)
		}
		if !strings.HasPrefix(mac, "00:16:3e:") {
			t.Errorf("VM %s: MAC %s is not under Xen's prefix 00:16:3e", id, mac)
		}
		if other, dup := seenMAC[mac]; dup {
			t.Errorf("VMs %s and %s share MAC %s", other, id, mac)
		}
		if other, dup := seenUUID[uuid]; dup {
			t.Errorf("VMs %s and %s share UUID %s", other, id, uuid)
		}
		seenMAC[mac], seenUUID[uuid] = id, id
	}
	if attached := tb.dom0(t, "ls /sys/class/net/xenbr0/brif | wc -l"); strings.TrimSpace(attached) != "3" {
		t.Errorf("xenbr0 has %s ports, want the 3 domains' vifs", strings.TrimSpace(attached))
	}
}
