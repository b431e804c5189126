//go:build xenbed

package xen

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/snowflock/snowflock/integration/scenario"
)

// dom0Config is dom0's sfld configuration (contrib/testbed/xen/testbed).
const dom0Config = "/etc/snowflock/sfld.yaml"

// restartSfld stops dom0's sfld (SIGTERM: its VMs run on), waits for the
// init's restart loop to start it again and for it to answer.
func restartSfld(t *testing.T) {
	t.Helper()
	old := strings.TrimSpace(tb.dom0(t, "cat /run/sfld.pid"))
	tb.dom0(t, "kill "+old)
	deadline := time.Now().Add(time.Minute)
	for strings.TrimSpace(tb.dom0(t, "cat /run/sfld.pid")) == old {
		if time.Now().After(deadline) {
			t.Fatalf("dom0's sfld was not restarted within a minute:\n%s", tb.tail())
		}
		time.Sleep(500 * time.Millisecond)
	}
	if err := tb.waitSfld(2 * time.Minute); err != nil {
		t.Fatal(err)
	}
}

// TestPVHDomain: with sfld.xen.type pvh, new VMs are PVH domains (the same
// guest kernel and image); the agent answers over xenstore, and an
// operator clone of a PVH VM (an HVM-type save image split and joined)
// runs with its own identity. The parent PV VM stays attached across the
// two sfld restarts.
func TestPVHDomain(t *testing.T) {
	tb.dom0(t, "cp "+dom0Config+" /run/sfld.yaml.pv && sed -i 's/^  xen:$/  xen:\\n    type: pvh/' "+dom0Config)
	t.Cleanup(func() {
		tb.dom0(t, "cp /run/sfld.yaml.pv "+dom0Config)
		restartSfld(t)
		settled(t)
	})
	if cfg := tb.dom0(t, "cat "+dom0Config); !strings.Contains(cfg, "type: pvh") {
		t.Fatalf("dom0's config was not switched to pvh:\n%s", cfg)
	}
	restartSfld(t)

	id, err := tb.startVM("pvh")
	if err != nil {
		t.Fatal(err)
	}
	defer tb.sfctl("vm", "stop", id)
	name := "sf-" + id
	if info := tb.dom0(t, "xl list -l "+name); !strings.Contains(info, `"type": "pvh"`) {
		t.Fatalf("domain %s is not a PVH domain:\n%.2000s", name, info)
	}
	out, err := tb.sfctl("vm", "exec", id, "--", "sh", "-c", "echo pvh-$(hostname)")
	if err != nil || !strings.Contains(string(out), "pvh-pvh") {
		t.Fatalf("exec in the PVH domain: %q %v\n%s", out, err, tb.tail())
	}

	// An operator clone of the PVH VM.
	out, err = tb.sfctl("clone", id, "-n", "2", "--json")
	if err != nil {
		t.Fatalf("clone a PVH VM: %v\n%s", err, tb.tail())
	}
	var f scenario.Family
	if err := json.Unmarshal(out, &f); err != nil || len(f.Clones) != 1 {
		t.Fatalf("sfctl clone --json printed %q: %v", out, err)
	}
	defer tb.sfctl("kill", f.Ticket)
	c := f.Clones[0]
	if info := tb.dom0(t, "xl list -l sf-"+c.ID); !strings.Contains(info, `"type": "pvh"`) {
		t.Errorf("clone %s is not a PVH domain:\n%.2000s", c.ID, info)
	}
	host, err := tb.sfctl("vm", "exec", c.ID, "--", "hostname")
	if err != nil || strings.TrimSpace(string(host)) != c.Hostname {
		t.Errorf("clone %s: hostname %q (%v), want %q", c.ID, host, err, c.Hostname)
	}
	if _, err := tb.sfctl("kill", f.Ticket); err != nil {
		t.Fatal(err)
	}
	if _, err := tb.sfctl("vm", "stop", id); err != nil {
		t.Fatal(err)
	}
}
