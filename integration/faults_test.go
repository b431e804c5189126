package integration

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/snowflock/snowflock/integration/scenario"
)

// TestCorruptDescriptor: clones from a checkpoint whose descriptor was
// damaged are refused with a clear error; nothing is started or held.
func TestCorruptDescriptor(t *testing.T) {
	out, err := tb.sfctl("checkpoint", tb.parent, "--json")
	if err != nil {
		t.Fatal(err)
	}
	var cp struct {
		Checkpoint string `json:"checkpoint"`
	}
	if err := json.Unmarshal(out, &cp); err != nil || cp.Checkpoint == "" {
		t.Fatalf("checkpoint --json: %q: %v", out, err)
	}
	path := filepath.Join(tb.state, "sfld", "checkpoints", cp.Checkpoint, "descriptor.sfd")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	data[len(data)/2] ^= 0x40
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err = tb.sfctl("clone", "--checkpoint", cp.Checkpoint, "-n", "3")
	if err == nil {
		t.Fatalf("clones started from a corrupt descriptor: %s", out)
	}
	if !strings.Contains(err.Error(), "checksum") {
		t.Errorf("error does not name the cause: %v", err)
	}
	settled(t)
}

// TestCloneDiesBeforeJoin: a clone whose QEMU dies behind sfld's back is
// removed and recorded in its ticket as ended (sf_join reports it killed,
// with the reason); the other clone runs on, and killing the ticket
// releases every slot.
func TestCloneDiesBeforeJoin(t *testing.T) {
	r := scenario.OperatorClone(t, tb, 3)
	// Kill one clone's QEMU behind sfld's back, by its pid file.
	pidfile := filepath.Join(tb.state, "sfld", "vms", r.Clones[0].ID, "qemu.pid")
	data, err := os.ReadFile(pidfile)
	if err != nil {
		t.Fatal(err)
	}
	var pid int
	if _, err := fmtSscan(strings.TrimSpace(string(data)), &pid); err != nil || pid <= 1 {
		t.Fatalf("pid file %q: %v", data, err)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	// The dead clone leaves the VM list; the other lives until kill.
	waitFor(t, func() bool {
		for _, v := range listJSON(t, "vm", "list") {
			if v["id"] == r.Clones[0].ID {
				return false
			}
		}
		return true
	})
	tickets := listJSON(t, "tickets")
	if len(tickets) != 1 || tickets[0]["exited"].(float64) != 1 {
		t.Fatalf("tickets after a clone died: %v", tickets)
	}
	if _, err := tb.sfctl("kill", r.Ticket); err != nil {
		t.Fatal(err)
	}
	settled(t)
}
