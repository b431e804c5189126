package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/snowflock/snowflock/internal/cli"
)

// run runs sfld in-process with a configuration file holding cfg.
func run(t *testing.T, cfg string, args ...string) (int, string, string) {
	t.Helper()
	dir := t.TempDir()
	file := filepath.Join(dir, "snowflock.yaml")
	if err := os.WriteFile(file, []byte(strings.ReplaceAll(cfg, "STATE", dir)), 0o644); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	code := execute(append([]string{"--config", file}, args...), &out, &errb)
	return code, out.String(), errb.String()
}

func TestBadConfigurationIsUsageError(t *testing.T) {
	for _, c := range []struct{ cfg, want string }{
		{"state_dir: STATE\nsfld:\n  listen: nope\n", "sfld.listen"},
		{"state_dir: STATE\nsfld:\n  hypervisor: hyperv\n", "sfld.hypervisor"},
		{"state_dir: STATE\nsfld:\n  hypervisor: xen\n  xen:\n    type: hvm\n", "sfld.xen"},
		{"state_dir: STATE\nsfld:\n  hypervisor: xen\n  xen:\n    bogus: 1\n", "sfld.xen"},
		{"state_dir: STATE\nsfld:\n  lease: 10ms\n", "sfld.lease"},
		{"state_dir: STATE\nsfld:\n  colour: blue\n", "colour"},
		{"state_dir: STATE\nsfld:\n  kvm:\n    accel: hvf\n", "accel"},
	} {
		code, _, stderr := run(t, c.cfg, "serve")
		if code != cli.ExitUsage || !strings.Contains(stderr, c.want) || strings.Count(stderr, "\n") != 1 {
			t.Errorf("config %q: exit %d, stderr %q; want 2 and one line naming %q", c.cfg, code, stderr, c.want)
		}
	}
}

func TestServeWithoutCertificatesSaysWhatToDo(t *testing.T) {
	code, _, stderr := run(t, "state_dir: STATE\n", "serve")
	if code != cli.ExitFailure || !strings.Contains(stderr, "sfld init-ca") {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
}

func TestInitCAOnceThenIssue(t *testing.T) {
	dir := t.TempDir()
	cfg := "state_dir: " + dir + "\nsfld:\n  name: node1\n"
	file := filepath.Join(dir, "c.yaml")
	os.WriteFile(file, []byte(cfg), 0o644)
	sfld := func(args ...string) (int, string) {
		var out, errb bytes.Buffer
		code := execute(append([]string{"--config", file}, args...), &out, &errb)
		return code, out.String() + errb.String()
	}
	if code, out := sfld("init-ca"); code != 0 {
		t.Fatalf("init-ca: %d %s", code, out)
	}
	for _, f := range []string{"ca.crt", "ca.key", "node1.crt", "node1.key", "admin.crt", "admin.key"} {
		fi, err := os.Stat(filepath.Join(dir, "tls", f))
		if err != nil {
			t.Fatalf("init-ca did not write %s: %v", f, err)
		}
		if strings.HasSuffix(f, ".key") && fi.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v, want 0600", f, fi.Mode().Perm())
		}
	}
	before, _ := os.ReadFile(filepath.Join(dir, "tls", "ca.key"))
	if code, out := sfld("init-ca"); code == 0 || !strings.Contains(out, "exist") {
		t.Fatalf("a second init-ca: %d %s", code, out)
	}
	after, _ := os.ReadFile(filepath.Join(dir, "tls", "ca.key"))
	if !bytes.Equal(before, after) {
		t.Fatal("a second init-ca changed the CA key")
	}
	out := filepath.Join(dir, "node2")
	if code, msg := sfld("issue-cert", "node2", "--host", "10.0.0.2", "--out", out); code != 0 {
		t.Fatalf("issue-cert: %d %s", code, msg)
	}
	for _, f := range []string{"ca.crt", "node2.crt", "node2.key"} {
		if _, err := os.Stat(filepath.Join(out, f)); err != nil {
			t.Errorf("issue-cert did not write %s", f)
		}
	}
	if _, err := os.Stat(filepath.Join(out, "ca.key")); err == nil {
		t.Error("issue-cert copied the CA key")
	}
	if code, _ := sfld("issue-cert"); code != cli.ExitUsage {
		t.Errorf("issue-cert without a name: exit %d, want 2", code)
	}
	if code, _ := sfld("issue-cert", "x", "--role", "king"); code != cli.ExitUsage {
		t.Errorf("issue-cert --role king: exit %d, want 2", code)
	}
}
