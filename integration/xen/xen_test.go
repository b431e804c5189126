//go:build xenbed

package xen

import (
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/snowflock/snowflock/integration/scenario"
)

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

func settled(t *testing.T) { t.Helper(); scenario.Settled(t, tb) }

// TestDomainLifecycle: a VM is a PV domain named after it; its agent
// answers over xenstore; pause and stop act on the domain.
func TestDomainLifecycle(t *testing.T) {
	id, err := tb.startVM("lifecycle")
	if err != nil {
		t.Fatal(err)
	}
	name := "sf-" + id
	if doms := domains(t); !slices.Contains(doms, name) {
		t.Fatalf("domain %s not in xl list: %v", name, doms)
	}
	if info := tb.dom0(t, "xl list -l "+name); !strings.Contains(info, `"type": "pv"`) {
		t.Errorf("domain %s is not a PV domain:\n%.2000s", name, info)
	}
	out, err := tb.sfctl("vm", "exec", id, "--", "sh", "-c", "echo hello-from-$(hostname); cat /sys/hypervisor/type 2>/dev/null || ls /dev/xen")
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
	if _, err := tb.sfctl("vm", "exec", id, "--", "true"); err != nil {
		t.Fatalf("exec after unpause: %v", err)
	}
	if _, err := tb.sfctl("vm", "stop", id); err != nil {
		t.Fatal(err)
	}
	if doms := domains(t); slices.Contains(doms, name) {
		t.Fatalf("domain %s still runs after vm stop: %v", name, doms)
	}
	settled(t)
}

// The scenarios shared with the KVM bed (integration/scenario).

func TestCloneIDsEachOnce(t *testing.T) { scenario.CloneIDsEachOnce(t, tb, 3) }

func TestParentWritesInvisibleToClones(t *testing.T) { scenario.ParentWritesInvisibleToClones(t, tb) }

func TestJoinWaitsForEveryClone(t *testing.T) { scenario.JoinWaitsForEveryClone(t, tb) }

func TestKillRemovesAllClones(t *testing.T) { scenario.KillRemovesAllClones(t, tb) }

func TestCheckpointThenCreateClones(t *testing.T) { scenario.CheckpointThenCreateClones(t, tb) }

// TestSfldKilledMidClone: dom0's sfld is SIGKILLed while clones are being
// restored; the restarted sfld (dom0's init restarts it) leaves no clone
// domain and no held slot, and the parent clones again.
func TestSfldKilledMidClone(t *testing.T) {
	underWay := func() bool {
		// A clone's directory exists from the start of its restore.
		n, err := strconv.Atoi(strings.TrimSpace(tb.dom0(t, "ls /var/lib/snowflock/sfld/vms 2>/dev/null | wc -l")))
		return err == nil && n > 1
	}
	kill := func() { tb.dom0(t, "kill -9 $(cat /run/sfld.pid)") }
	restart := func() error { return tb.waitSfld(2 * time.Minute) }
	scenario.SfldKilledMidClone(t, tb, 3, underWay, kill, restart)
}

// TestClonesOwnNamesAndMACs: an operator clone of the parent gives every
// clone a domain of its own name, UUID and MAC (the bed's sfld puts each
// domain's vif on dom0's bridge xenbr0), and the clone's guest sees its
// new MAC, not the parent's: netfront reads it again after the restore.
func TestClonesOwnNamesAndMACs(t *testing.T) {
	r := scenario.OperatorClone(t, tb, 3)
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
