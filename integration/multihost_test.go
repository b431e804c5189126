package integration

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/snowflock/snowflock/integration/hostbed"
	"github.com/snowflock/snowflock/integration/scenario"
)

// multiHost starts a bed of n hosts (2 slots each, one shared pool) and
// boots a parent VM on h1.
func multiHost(t testing.TB, n int, opts ...func(*hostbed.Options)) (*hostbed.Bed, string) {
	t.Helper()
	o := hostbed.Options{
		Hosts: n, Bin: tb.bin, Slots: 2,
		Kernel: filepath.Join(tb.root, "build/guest/vmlinuz"), Initrd: filepath.Join(tb.root, "build/guest/initrd.img"),
	}
	for _, f := range opts {
		f(&o)
	}
	b := hostbed.Up(t, o)
	out, err := b.Sfctl("h1", "vm", "start", "--name", "mh", "--wait", "--json")
	if err != nil {
		t.Fatalf("boot the parent on h1: %v\n%s", err, b.Log("h1"))
	}
	var vm struct{ ID string }
	if err := json.Unmarshal(out, &vm); err != nil || vm.ID == "" {
		t.Fatalf("vm start --json printed %q: %v", out, err)
	}
	return b, vm.ID
}

// vmsOn lists the VMs of host h.
func vmsOn(t testing.TB, b *hostbed.Bed, h string) []map[string]any {
	t.Helper()
	out, err := b.Sfctl(h, "vm", "list", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var v []map[string]any
	if err := json.Unmarshal(out, &v); err != nil {
		t.Fatalf("%s vm list: %q: %v", h, out, err)
	}
	return v
}

// primes runs sfprimes in the parent and returns VMs and primes counted.
func primes(t *testing.T, b *hostbed.Bed, parent string, args ...string) (vms, count int) {
	t.Helper()
	out, err := b.Sfctl("h1", append([]string{"vm", "exec", parent, "--", "sfprimes", "--json"}, args...)...)
	if err != nil {
		t.Fatalf("sfprimes %v: %v\n%s\nh1:\n%s\nh2:\n%s", args, err, out, b.Log("h1"), b.Log("h2"))
	}
	var r struct {
		VMs    int `json:"vms"`
		Primes int `json:"primes"`
	}
	if err := json.Unmarshal(scenario.LastJSONLine(out), &r); err != nil {
		t.Fatalf("sfprimes printed %q: %v", out, err)
	}
	return r.VMs, r.Primes
}

// TestClonesOnThreeHosts: a parent on h1 forks 5 clones over 3 hosts (2
// slots each: 2 clones stay on h1, the others go to h2 and h3, their memory
// fetched on demand through mcdist); the job's answer equals the single-VM
// one; operator clones land on the other hosts and answer there; killing
// the ticket removes them everywhere.
func TestClonesOnThreeHosts(t *testing.T) {
	b, parent := multiHost(t, 3)
	_, want := primes(t, b, parent, "-single", "-upto", "2000000")
	vms, got := primes(t, b, parent, "-n", "6", "-upto", "2000000")
	if vms != 6 || got != want {
		t.Fatalf("%d VMs counted %d primes; a single VM counted %d", vms, got, want)
	}

	out, err := b.Sfctl("h1", "clone", parent, "-n", "6", "--json")
	if err != nil {
		t.Fatalf("clone: %v\n%s", err, b.Log("h2"))
	}
	var r struct {
		Ticket string `json:"ticket"`
	}
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Sfctl("h1", "kill", r.Ticket) })
	for _, h := range []string{"h2", "h3"} {
		vms := vmsOn(t, b, h)
		if len(vms) == 0 {
			t.Fatalf("no clone on %s", h)
		}
		id := vms[0]["id"].(string)
		host, err := b.Sfctl(h, "vm", "exec", id, "--", "hostname")
		if err != nil || strings.TrimSpace(string(host)) != vms[0]["hostname"] {
			t.Errorf("clone %s on %s: hostname %q, %v; want %v", id, h, host, err, vms[0]["hostname"])
		}
	}
	if _, err := b.Sfctl("h1", "kill", r.Ticket); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return len(vmsOn(t, b, "h2")) == 0 && len(vmsOn(t, b, "h3")) == 0 })
}

// TestClonesSurvivePacketLoss: with 10% of h3's packets lost, every clone
// still finishes with the right answer (mcdist retries).
func TestClonesSurvivePacketLoss(t *testing.T) {
	b, parent := multiHost(t, 3)
	_, want := primes(t, b, parent, "-single", "-upto", "1000000")
	if err := b.Netem("h3", "loss 10%"); err != nil {
		t.Fatal(err)
	}
	defer b.Netem("h3", "clear")
	vms, got := primes(t, b, parent, "-n", "6", "-upto", "1000000")
	if vms != 6 || got != want {
		t.Fatalf("with loss on h3: %d VMs counted %d primes; a single VM counted %d", vms, got, want)
	}
}

// TestMemoryServerLost: when the parent host's sfld (and with it the
// memory server) dies, a clone on another host that needs a page fails
// within the fetch bound and is stopped; nothing of it is left.
func TestMemoryServerLost(t *testing.T) {
	b, parent := multiHost(t, 2)
	if _, err := b.Sfctl("h1", "clone", parent, "-n", "4", "--json"); err != nil {
		t.Fatal(err)
	}
	remote := vmsOn(t, b, "h2")
	if len(remote) == 0 {
		t.Fatal("no clone on h2")
	}
	if err := syscall.Kill(b.Host("h1").PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	// Make the clone touch memory it never had: its faults go unanswered.
	go b.Sfctl("h2", "vm", "exec", remote[0]["id"].(string), "--", "sfprimes", "-single", "-upto", "20000000")
	deadline := time.Now().Add(2 * time.Minute)
	for len(vmsOn(t, b, "h2")) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the clones on h2 still run 2 minutes after the memory server died:\n%s", b.Log("h2"))
		}
		time.Sleep(500 * time.Millisecond)
	}
	if mounts := mountsUnder(t, b.Dir); len(mounts) > 0 {
		t.Errorf("mounts left: %v", mounts)
	}
}

// mountsUnder lists the mount points below dir.
func mountsUnder(t *testing.T, dir string) []string {
	t.Helper()
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && strings.HasPrefix(f[4], dir+"/") {
			out = append(out, f[4])
		}
	}
	return out
}

// TestFreedMemoryNotFetched: memory the parent's guest dirtied and freed
// before the checkpoint (zeroed by init_on_free=1, so in the zero-page
// bitmap) is not fetched by a clone on another host that allocates it
// again, and the clone sees exactly what a program must: zeros, then what
// it writes.
func TestFreedMemoryNotFetched(t *testing.T) {
	b, parent := multiHost(t, 2)
	if out, err := b.Sfctl("h1", "vm", "exec", parent, "--", "sftest", "dirty-free", "96"); err != nil {
		t.Fatalf("dirty-free: %v: %s", err, out)
	}
	out, err := b.Sfctl("h1", "clone", parent, "-n", "4", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var r struct {
		Ticket string `json:"ticket"`
	}
	json.Unmarshal(out, &r)
	t.Cleanup(func() { b.Sfctl("h1", "kill", r.Ticket) })
	remote := vmsOn(t, b, "h2")
	if len(remote) != 1 {
		t.Fatalf("%d clones on h2, want 1", len(remote))
	}
	id := remote[0]["id"].(string)
	fetched := func() int64 {
		for _, v := range vmsOn(t, b, "h2") {
			if v["id"] == id {
				n, _ := strconv.ParseInt(fmt.Sprint(v["fetched_bytes"]), 10, 64)
				return n
			}
		}
		t.Fatalf("clone %s gone from h2", id)
		return 0
	}
	before := fetched()
	out, err = b.Sfctl("h2", "vm", "exec", id, "--", "sftest", "touch-free", "96")
	if err != nil {
		t.Fatalf("touch-free: %v: %s", err, out)
	}
	var tf struct {
		Zero      bool `json:"zero"`
		PatternOK bool `json:"pattern_ok"`
	}
	if err := json.Unmarshal(scenario.LastJSONLine(out), &tf); err != nil || !tf.Zero || !tf.PatternOK {
		t.Fatalf("the clone's fresh memory: %s (%v)", out, err)
	}
	after := fetched()
	t.Logf("clone on h2 fetched %.1f MiB by ready, %.1f MiB more while allocating 96 MiB the parent had freed",
		float64(before)/(1<<20), float64(after-before)/(1<<20))
	if after-before > 16<<20 {
		t.Errorf("allocating 96 MiB that was free at the checkpoint fetched %d MiB", (after-before)>>20)
	}
}

// TestLateHostFetchesLittle: a host whose clone runs a job after another
// host's clone ran the same job fetches almost nothing: it heard the pages
// the other host asked for (mcdist multicast) and kept them.
func TestLateHostFetchesLittle(t *testing.T) {
	b, parent := multiHost(t, 3, func(o *hostbed.Options) { o.SlotsPerHost = []int{0, 1, 1} })
	ticket := cloneAndWait(t, b, parent, 2)
	t.Cleanup(func() { b.Sfctl("h1", "kill", ticket) })
	clones := clonesOf(t, b, ticket)
	if len(clones) != 2 || clones[0].host == clones[1].host {
		t.Fatalf("clones %v: want one on h2 and one on h3", clones)
	}
	first, late := clones[0], clones[1]
	f0, l0 := fetchedOf(t, b, first.host, first.id), fetchedOf(t, b, late.host, late.id)
	jobMS(t, b, first.host, first.id)
	f1, l1 := fetchedOf(t, b, first.host, first.id), fetchedOf(t, b, late.host, late.id)
	jobMS(t, b, late.host, late.id)
	l2 := fetchedOf(t, b, late.host, late.id)
	t.Logf("%s fetched %.1f MiB for the job; %s then fetched %.1f MiB for the same job (%.1f MiB while the first ran)",
		first.host, mib(f1-f0), late.host, mib(l2-l1), mib(l1-l0))
	if f1-f0 < 1<<20 {
		t.Fatalf("the first host fetched only %d bytes for the job: nothing to compare", f1-f0)
	}
	if l2-l1 > (f1-f0)/4 {
		t.Errorf("the late host fetched %.1f MiB for a job the first host fetched %.1f MiB for", mib(l2-l1), mib(f1-f0))
	}
}

func mib(n int64) float64 { return float64(n) / (1 << 20) }

// TestParentSfldRestartKeepsRemoteClones: the parent host's sfld is
// SIGKILLed and restarted; it serves the family's memory again at the
// same address, so a clone on another host runs a job that needs new
// pages, and killing the ticket afterwards still reaches it.
func TestParentSfldRestartKeepsRemoteClones(t *testing.T) {
	b, parent := multiHost(t, 2, func(o *hostbed.Options) { o.SlotsPerHost = []int{0, 1} })
	ticket := cloneAndWait(t, b, parent, 1)
	clones := clonesOf(t, b, ticket)
	if len(clones) != 1 {
		t.Fatalf("clones %v", clones)
	}
	h1 := b.Host("h1")
	if err := syscall.Kill(h1.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cmd := b.Command("h1", filepath.Join(tb.bin, "sfld"), "serve", "--config", h1.Config, "--log-level", "debug")
	logf, err := os.Create(filepath.Join(t.TempDir(), "sfld-h1-restarted.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	waitFor(t, func() bool { _, err := b.Sfctl("h1", "info"); return err == nil })
	before := fetchedOf(t, b, clones[0].host, clones[0].id)
	jobMS(t, b, clones[0].host, clones[0].id)
	if after := fetchedOf(t, b, clones[0].host, clones[0].id); after <= before {
		t.Fatalf("the job fetched nothing (%d → %d bytes): it did not exercise the restarted server", before, after)
	}
	if _, err := b.Sfctl("h1", "kill", ticket); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return len(vmsOn(t, b, "h2")) == 0 })
}
