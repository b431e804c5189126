package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/snowflock/snowflock/internal/cli"
)

func sfctl(t *testing.T, args ...string) (int, string) {
	t.Helper()
	dir := t.TempDir()
	file := filepath.Join(dir, "c.yaml")
	os.WriteFile(file, []byte("state_dir: "+dir+"\n"), 0o644)
	var out, errb bytes.Buffer
	code := execute(append([]string{"--config", file}, args...), &out, &errb)
	return code, out.String() + errb.String()
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{"clone"},
		{"clone", "vm1"},
		{"clone", "vm1", "-n", "0"},
		{"clone", "vm1", "--checkpoint", "cp", "-n", "2"},
		{"vm", "exec", "vm1"},
		{"vm", "stop"},
		{"kill"},
		{"vm", "start", "--cpus", "-1"},
		{"bogus"},
	} {
		code, out := sfctl(t, args...)
		if code != cli.ExitUsage || strings.Count(out, "\n") != 1 {
			t.Errorf("sfctl %v: exit %d, output %q; want 2 and one line", args, code, out)
		}
	}
}

// TestNoCertificate: without the operator certificate sfctl says how to
// get one, and fails before dialling.
func TestNoCertificate(t *testing.T) {
	code, out := sfctl(t, "vm", "list")
	if code != cli.ExitFailure || !strings.Contains(out, "sfld init-ca") {
		t.Fatalf("exit %d, output %q", code, out)
	}
}
