package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func write(t *testing.T, dir, name, text string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestSearchOrder(t *testing.T) {
	dir := t.TempDir()
	flag := write(t, dir, "flag.yaml", "state_dir: /from/flag\n")
	env := write(t, dir, "env.yaml", "state_dir: /from/env\n")
	sys := write(t, dir, "sys.yaml", "state_dir: /from/system\n")
	missing := filepath.Join(dir, "missing.yaml")

	for _, tc := range []struct {
		name, flag, env, sys string
		want, source         string
	}{
		{"flag wins", flag, env, sys, "/from/flag", flag},
		{"env next", "", env, sys, "/from/env", env},
		{"system file next", "", "", sys, "/from/system", sys},
		{"built-in last", "", "", missing, DefaultStateDir(), BuiltinSource},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv(EnvConfig, tc.env)
			c, err := Load(Options{File: tc.flag, SystemFile: tc.sys})
			if err != nil {
				t.Fatal(err)
			}
			if c.StateDir != tc.want || c.Source != tc.source {
				t.Errorf("state_dir %q from %q, want %q from %q", c.StateDir, c.Source, tc.want, tc.source)
			}
			if c.Allocator.Backend != "static" {
				t.Errorf("default backend %q, want static", c.Allocator.Backend)
			}
		})
	}
}

func TestNamedFileMustExist(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "missing.yaml")
	if _, err := Load(Options{File: missing}); err == nil || !strings.Contains(err.Error(), "missing.yaml") {
		t.Errorf("--config missing file = %v, want an error naming it", err)
	}
	t.Setenv(EnvConfig, missing)
	if _, err := Load(Options{}); err == nil {
		t.Errorf("$SNOWFLOCK_CONFIG naming a missing file was accepted")
	}
}

func TestUnreadableFile(t *testing.T) {
	if os.Geteuid() == 0 {
		// root reads any file; a directory is unreadable as a file for all.
		dir := t.TempDir()
		if _, err := Load(Options{File: dir}); err == nil {
			t.Errorf("a directory as config file was accepted")
		}
		return
	}
	p := write(t, t.TempDir(), "c.yaml", "state_dir: /x\n")
	os.Chmod(p, 0)
	if _, err := Load(Options{File: p}); err == nil {
		t.Errorf("unreadable config accepted")
	}
}

func TestEnvOverrides(t *testing.T) {
	p := write(t, t.TempDir(), "c.yaml", `
state_dir: /from/file
allocator:
  backend: static
  static:
    placement: spread
    hosts:
      - {name: h1, address: 10.0.0.1, slots: 4}
`)
	t.Setenv("SNOWFLOCK_STATE_DIR", "/from/env")
	t.Setenv("SNOWFLOCK_ALLOCATOR_STATIC_PLACEMENT", "pack")
	c, err := Load(Options{File: p, EnvKeys: []string{"allocator.static.placement", "allocator.static.hosts"}})
	if err != nil {
		t.Fatal(err)
	}
	if c.StateDir != "/from/env" {
		t.Errorf("state_dir %q, want the environment's", c.StateDir)
	}
	sec := c.Allocator.Section("static")
	if sec["placement"] != "pack" {
		t.Errorf("placement %v, want pack from the environment", sec["placement"])
	}
	if hosts, ok := sec["hosts"].([]any); !ok || len(hosts) != 1 {
		t.Errorf("hosts %#v, want the file's list untouched", sec["hosts"])
	}
}

func TestRejects(t *testing.T) {
	for name, text := range map[string]string{
		"yaml syntax":       "allocator: [1, 2\n",
		"unknown key":       "state_dirr: /x\n",
		"empty state_dir":   "state_dir: ''\n",
		"empty backend":     "allocator: {backend: ''}\n",
		"section not a map": "allocator: {static: 3}\n",
		"allocator scalar":  "allocator: 7\n",
		"state_dir a list":  "state_dir: [a, b]\n",
	} {
		if _, err := Parse([]byte(text), name, Options{}); err == nil {
			t.Errorf("%s: %q accepted", name, text)
		} else if strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: error spans lines: %q", name, err)
		}
	}
}

func TestTooLarge(t *testing.T) {
	p := write(t, t.TempDir(), "big.yaml", "# "+strings.Repeat("x", maxFileSize)+"\n")
	if _, err := Load(Options{File: p}); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("oversized config = %v, want a size error", err)
	}
}

func TestDecode(t *testing.T) {
	type section struct {
		N     int           `mapstructure:"n"`
		On    bool          `mapstructure:"on"`
		Tags  []string      `mapstructure:"tags"`
		Lease time.Duration `mapstructure:"lease"`
	}
	var out section
	if err := Decode(map[string]any{"n": "3", "on": "true", "tags": "a, b", "lease": 90}, &out); err != nil || out.N != 3 || !out.On || len(out.Tags) != 2 || out.Lease != 90*time.Second {
		t.Fatalf("Decode of text = %v, %+v", err, out)
	}
	for in, want := range map[any]time.Duration{"90": 90 * time.Second, "2m": 2 * time.Minute, 5: 5 * time.Second} {
		var s section
		if err := Decode(map[string]any{"lease": in}, &s); err != nil || s.Lease != want {
			t.Errorf("lease %v = %s, %v; want %s", in, s.Lease, err, want)
		}
	}
	for name, in := range map[string]map[string]any{
		"float slots":    {"n": 1.5},
		"bool slots":     {"n": true},
		"huge slots":     {"n": 1e20},
		"text not int":   {"n": "four"},
		"bad duration":   {"lease": "soon"},
		"huge duration":  {"lease": "99999999999"},
		"negative lease": {"lease": -5},
	} {
		var s section
		if err := Decode(in, &s); err == nil {
			t.Errorf("%s: Decode(%v) accepted: %+v", name, in, s)
		}
	}
	err := Decode(map[string]any{"m": 1}, &out)
	if err == nil || err.Error() != "unknown key(s): m" {
		t.Errorf("Decode with an unknown key = %v, want \"unknown key(s): m\"", err)
	}
}
