//go:build xenbed

// Package xen runs the SnowFlock guest API on a real Xen 4.17 host: Xen and
// a PV dom0 inside QEMU (TCG), booted once for the package (xenbed), sfld
// in dom0 with the Xen backend, and the test guest as PV domUs. sfctl and
// the checks run on this machine; sfctl reaches dom0's sfld through QEMU's
// forwarded port, with the bed's test CA.
package xen

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/snowflock/snowflock/integration/scenario"
	"github.com/snowflock/snowflock/integration/xenbed"
)

// bed is the package's Xen host.
type bed struct {
	root   string
	bin    string // host-side sfctl
	xen    *xenbed.Bed
	parent string // the booted parent VM's ID
}

var tb *bed

func TestMain(m *testing.M) { scenario.Main(m, "xen", run) }

func run(m *testing.M) (int, error) {
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Join(filepath.Dir(file), "..", "..")
	if err := scenario.GuestBuilt(root); err != nil {
		return 1, err
	}
	dir, err := os.MkdirTemp("", "sf-xen-")
	if err != nil {
		return 1, err
	}
	keep := os.Getenv("SF_KEEP") != ""
	if !keep {
		defer os.RemoveAll(dir)
	}
	ctx := context.Background()
	if err := xenbed.BuildImage(ctx); err != nil {
		return 1, err
	}
	b := &bed{root: root, bin: filepath.Join(dir, "bin")}
	tb = b
	overlay := filepath.Join(dir, "overlay")
	if err := b.build(overlay); err != nil {
		return 1, err
	}
	owner := 0 // this process: the bed goes down with it
	if keep {
		owner = -1
	}
	t0 := time.Now()
	xb, err := xenbed.Start(ctx, xenbed.Options{
		Dir: filepath.Join(dir, "bed"), Sfld: filepath.Join(dir, "dom0", "sfld"),
		Guest: filepath.Join(root, "build", "guest"), Overlay: overlay, Owner: owner,
	})
	if err != nil {
		return 1, err
	}
	b.xen = xb
	defer b.teardown()
	if err := b.waitSfld(2 * time.Minute); err != nil {
		return 1, err
	}
	fmt.Fprintf(os.Stderr, "xen test bed: dom0 and its sfld up in %s\n", time.Since(t0).Round(time.Millisecond))
	if b.parent, err = b.startVM("parent"); err != nil {
		return 1, fmt.Errorf("boot the parent VM: %w", err)
	}
	fmt.Fprintf(os.Stderr, "xen test bed: parent PV domain booted (%s after the bed started)\n", time.Since(t0).Round(time.Millisecond))
	return m.Run(), nil
}

// build compiles sfctl for this machine, and sfld and sfalloc statically
// for dom0 (sfalloc into the overlay, to read the pool there).
func (b *bed) build(overlay string) error {
	dom0 := filepath.Join(filepath.Dir(b.bin), "dom0")
	for _, c := range []struct {
		env  []string
		out  string
		pkgs []string
	}{
		{nil, b.bin + "/", []string{"./cmd/sfctl"}},
		{[]string{"CGO_ENABLED=0"}, dom0 + "/", []string{"./cmd/sfld"}},
		{[]string{"CGO_ENABLED=0"}, filepath.Join(overlay, "usr", "bin") + "/", []string{"./cmd/sfalloc"}},
	} {
		cmd := exec.Command("go", append([]string{"build", "-trimpath", "-o", c.out}, c.pkgs...)...)
		cmd.Dir = b.root
		cmd.Env = append(os.Environ(), c.env...)
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go build %v: %v: %s", c.pkgs, err, out)
		}
	}
	return nil
}

// waitSfld waits until dom0's sfld answers.
func (b *bed) waitSfld(limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		_, err := b.sfctl("info")
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("dom0's sfld did not answer within %s: %v\n%s", limit, err, b.tail())
		}
		time.Sleep(500 * time.Millisecond)
	}
}

func (b *bed) teardown() {
	if b.xen == nil {
		return
	}
	if os.Getenv("SF_KEEP") != "" {
		fmt.Fprintf(os.Stderr, "xen test bed kept (SF_KEEP): %s\n", b.xen.Dir)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := b.xen.Stop(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "xen test bed:", err)
	}
}

// sfctl runs sfctl here against dom0's sfld; stdout is returned, stderr
// is in the error.
func (b *bed) sfctl(args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(b.bin, "sfctl"),
		append([]string{"--config", b.xen.HostConfig(), "--addr", b.xen.Addr()}, args...)...)
	return scenario.Output(cmd, "sfctl "+strings.Join(args, " "))
}

// dom0 runs a shell command in dom0.
func (b *bed) dom0(t *testing.T, cmd string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := b.xen.Exec(ctx, cmd)
	if err != nil {
		t.Fatalf("dom0 %q: %v", cmd, err)
	}
	return out
}

// tail is the end of dom0's sfld log and of the console, for failures.
func (b *bed) tail() string {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	log, err := b.xen.Exec(ctx, "tail -c 6000 /var/log/sfld.log")
	if err != nil {
		log = fmt.Sprintf("(sfld log: %v)", err)
	}
	return "--- dom0 sfld log:\n" + log + "\n--- serial:\n" + lastN(b.xen.SerialLog(), 2000)
}

func lastN(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

func contextTimeout(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d)
}

// The scenario.Bed methods (integration/scenario).

func (b *bed) Sfctl(args ...string) ([]byte, error) { return b.sfctl(args...) }

func (b *bed) Parent() string { return b.parent }

func (b *bed) Tail() string { return b.tail() }

// PoolAllocations lists dom0's static pool's allocations.
func (b *bed) PoolAllocations(t *testing.T) []map[string]any {
	t.Helper()
	out := b.dom0(t, "sfalloc --config /etc/snowflock/sfld.yaml list --json 2>&1")
	var v []map[string]any
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("sfalloc list --json in dom0: %q: %v", out, err)
	}
	return v
}

// Leftovers: the domains Xen runs besides dom0 and the parent's.
func (b *bed) Leftovers(t *testing.T) string {
	if doms, want := domains(t), "sf-"+b.parent; len(doms) != 1 || doms[0] != want {
		return fmt.Sprintf("domains %v, want only the parent's %s", doms, want)
	}
	return ""
}

// startVM boots a VM named name (sfctl vm start --wait) and returns its ID.
func (b *bed) startVM(name string) (string, error) {
	out, err := b.sfctl("vm", "start", "--name", name, "--wait", "--json")
	if err != nil {
		return "", fmt.Errorf("%v\n%s", err, b.tail())
	}
	var vm struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal(out, &vm); err != nil || vm.ID == "" {
		return "", fmt.Errorf("vm start --json printed %q: %v", out, err)
	}
	return vm.ID, nil
}
