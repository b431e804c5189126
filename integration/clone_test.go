package integration

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/snowflock/snowflock/integration/scenario"
)

// The scenarios shared with the Xen bed (integration/scenario), on this
// bed; and shorthands for this package's own tests.

func guest(t *testing.T, v any, args ...string) { t.Helper(); scenario.Guest(t, tb, v, args...) }

func settled(t *testing.T) { t.Helper(); scenario.Settled(t, tb) }

func listJSON(t *testing.T, args ...string) []map[string]any {
	t.Helper()
	return scenario.ListJSON(t, tb, args...)
}

func TestCloneIDsEachOnce(t *testing.T) { scenario.CloneIDsEachOnce(t, tb, 4) }

func TestParentWritesInvisibleToClones(t *testing.T) { scenario.ParentWritesInvisibleToClones(t, tb) }

func TestJoinWaitsForEveryClone(t *testing.T) { scenario.JoinWaitsForEveryClone(t, tb) }

func TestKillRemovesAllClones(t *testing.T) { scenario.KillRemovesAllClones(t, tb) }

func TestCheckpointThenCreateClones(t *testing.T) { scenario.CheckpointThenCreateClones(t, tb) }

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

// TestOperatorClone: sfctl clone needs no guest cooperation; the clones
// run with their own host names until their ticket is killed.
func TestOperatorClone(t *testing.T) {
	r := scenario.OperatorClone(t, tb, 3)
	if r.Timing.DescriptorBytes <= 0 || r.Timing.PauseMS <= 0 {
		t.Fatalf("clone timing: %+v", r.Timing)
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
	out, err := tb.sfctl("vm", "exec", r.Clones[0].ID, "--", "sfguest", "kill", r.Ticket)
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
	underWay := func() bool {
		ents, _ := os.ReadDir(vmsDir)
		return len(ents) > 1 // a clone's directory exists
	}
	scenario.SfldKilledMidClone(t, tb, 8, underWay, tb.killSfld, tb.startSfld)
}
