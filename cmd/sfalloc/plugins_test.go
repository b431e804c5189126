package main

import (
	"encoding/json"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/snowflock/snowflock/allocator"
	"github.com/snowflock/snowflock/contrib/egosim/sim"
)

// The plugin binaries are built once, beside the sfalloc under test, where
// its default plugin path finds them, as make build puts them in bin/.
var (
	pluginsOnce sync.Once
	pluginsErr  error
)

func buildPlugins(t *testing.T) {
	t.Helper()
	pluginsOnce.Do(func() {
		out, err := exec.Command("go", "build", "-o", filepath.Dir(sfalloc)+"/",
			"../sfalloc-plugin-ego", "../../contrib/sfalloc-plugin-hostfile").CombinedOutput()
		if err != nil {
			pluginsErr = err
			t.Logf("%s", out)
		}
	})
	if pluginsErr != nil {
		t.Fatalf("building the plugins: %v", pluginsErr)
	}
}

// configFile writes a configuration with a fresh state_dir and the given
// allocator lines.
func configFile(t *testing.T, allocatorYAML string) string {
	t.Helper()
	dir := t.TempDir()
	p := filepath.Join(dir, "snowflock.yaml")
	text := "state_dir: " + filepath.Join(dir, "state") + "\nallocator:\n" + allocatorYAML
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func decodeAllocation(t *testing.T, r result) allocator.Allocation {
	t.Helper()
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	var a allocator.Allocation
	if err := json.Unmarshal([]byte(r.stdout), &a); err != nil {
		t.Fatalf("output %q: %v", r.stdout, err)
	}
	return a
}

// The acceptance sequence of the EGO backend: request and release through
// sfalloc and the sfalloc-plugin-ego binary against the simulator.
func TestEGOThroughSfalloc(t *testing.T) {
	buildPlugins(t)
	s, err := sim.New(sim.Default())
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(func() { srv.Close(); s.Close() })
	cfg := configFile(t, "  backend: static\n")
	env := []string{"SNOWFLOCK_ALLOCATOR_EGO_URL=" + srv.URL, "SNOWFLOCK_ALLOCATOR_EGO_USER=Admin", "SNOWFLOCK_ALLOCATOR_EGO_PASSWORD=Admin"}

	a := decodeAllocation(t, runEnv(t, env, cfg, "--backend", "ego", "request", "-n", "4", "--json"))
	if a.Backend != "ego" || a.Granted != 4 || s.Used() != 4 {
		t.Fatalf("granted %+v; the simulator holds %d slots", a, s.Used())
	}
	for _, sl := range a.Slots {
		if !strings.HasPrefix(sl.Host, "simhost") {
			t.Errorf("slot on %s, not a simulator host", sl.Host)
		}
	}
	r := runEnv(t, env, cfg, "--backend", "ego", "list", "--json")
	if r.code != 0 || !strings.Contains(r.stdout, a.ID) {
		t.Errorf("list: exit %d, %s %s", r.code, r.stdout, r.stderr)
	}
	if r := runEnv(t, env, cfg, "--backend", "ego", "release", a.ID); r.code != 0 {
		t.Fatalf("release: exit %d: %s", r.code, r.stderr)
	}
	if s.Used() != 0 {
		t.Errorf("the simulator still holds %d slots after release", s.Used())
	}

	// Wrong credentials: one line naming the cause, exit 2, the password
	// nowhere.
	bad := []string{"SNOWFLOCK_ALLOCATOR_EGO_URL=" + srv.URL, "SNOWFLOCK_ALLOCATOR_EGO_USER=Admin", "SNOWFLOCK_ALLOCATOR_EGO_PASSWORD=not-the-pw"}
	r = runEnv(t, bad, cfg, "--backend", "ego", "request", "-n", "1")
	if r.code != exitUsage || strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 || !strings.Contains(r.stderr, "refused the credentials") || strings.Contains(r.stderr+r.stdout, "not-the-pw") {
		t.Errorf("wrong password: exit %d, stderr %q", r.code, r.stderr)
	}
	if s.Used() != 0 {
		t.Errorf("%d slots held after refused requests", s.Used())
	}
}

func TestExamplePluginWithSfalloc(t *testing.T) {
	buildPlugins(t)
	hostfile := filepath.Join(t.TempDir(), "hosts")
	os.WriteFile(hostfile, []byte("n1 slots=2\nn2 slots=2\n"), 0o644)
	cfg := configFile(t, "  backend: hostfile\n  hostfile:\n    path: "+hostfile+"\n")
	a := decodeAllocation(t, run(t, cfg, "request", "-n", "3", "--json"))
	if a.Backend != "hostfile" || a.Granted != 3 {
		t.Fatalf("granted %+v", a)
	}
	if r := run(t, cfg, "request", "-n", "2", "--immediate"); r.code != exitNotGranted {
		t.Errorf("request beyond the hostfile's free slots: exit %d, %s", r.code, r.stderr)
	}
	if r := run(t, cfg, "release", a.ID); r.code != 0 {
		t.Fatalf("release: %s", r.stderr)
	}
	if got := list(t, cfg); len(got) != 0 {
		t.Errorf("held after release: %+v", got)
	}
	// A bad section is refused by the plugin, naming the key.
	bad := configFile(t, "  backend: hostfile\n  hostfile:\n    pth: x\n")
	if r := run(t, bad, "list"); r.code != exitUsage || !strings.Contains(r.stderr, "pth") {
		t.Errorf("unknown key: exit %d, %s", r.code, r.stderr)
	}
}

func TestBackendsListsBuiltinsAndPlugins(t *testing.T) {
	buildPlugins(t)
	cfg := configFile(t, "  backend: static\n")
	r := run(t, cfg, "backends", "--json")
	if r.code != 0 {
		t.Fatalf("backends: %s", r.stderr)
	}
	var rows []struct {
		Name, Kind, Version, Error string
		Selected                   bool
	}
	if err := json.Unmarshal([]byte(r.stdout), &rows); err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, row := range rows {
		got[row.Name] = row.Kind
		if row.Error != "" {
			t.Errorf("backend %s unusable: %s", row.Name, row.Error)
		}
		if row.Selected != (row.Name == "static") {
			t.Errorf("backend %s selected=%v", row.Name, row.Selected)
		}
	}
	for name, kind := range map[string]string{"static": "built-in", "ego": "plugin", "hostfile": "plugin"} {
		if got[name] != kind {
			t.Errorf("backends: %s is %q, want %s (all: %v)", name, got[name], kind, got)
		}
	}
	// A backend that is neither built in nor on the plugin path.
	r = run(t, cfg, "--backend", "nosuch", "list")
	if r.code != exitUsage || !strings.Contains(r.stderr, "sfalloc-plugin-nosuch") || !strings.Contains(r.stderr, filepath.Dir(sfalloc)) {
		t.Errorf("unknown backend: exit %d, %q", r.code, r.stderr)
	}
}

func TestConfigHidesSecrets(t *testing.T) {
	buildPlugins(t)
	cfg := configFile(t, "  backend: ego\n  ego:\n    url: http://127.0.0.1:9\n    user: u\n    password: hunter2-secret\n")
	for _, args := range [][]string{{"config"}, {"config", "--json"}} {
		r := run(t, cfg, args...)
		if r.code != 0 || strings.Contains(r.stdout+r.stderr, "hunter2-secret") || !strings.Contains(r.stdout, "(hidden)") {
			t.Errorf("sfalloc %v: exit %d, shows %q %q", args, r.code, r.stdout, r.stderr)
		}
	}
}
