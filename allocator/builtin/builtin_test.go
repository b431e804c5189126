package builtin

import (
	"errors"
	"slices"
	"testing"

	"github.com/snowflock/snowflock/allocator"
)

func TestStaticIsBuiltIn(t *testing.T) {
	if !slices.Contains(Names(), "static") {
		t.Fatalf("Names() = %v, want static", Names())
	}
	keys := EnvKeys()
	for _, k := range []string{"allocator.static.hosts", "allocator.static.placement", "allocator.static.lease"} {
		if !slices.Contains(keys, k) {
			t.Errorf("EnvKeys() = %v, lacks %s", keys, k)
		}
	}
}

func TestSlurmIsBuiltIn(t *testing.T) {
	keys := EnvKeys()
	for _, k := range []string{"allocator.slurm.slurm_conf", "allocator.slurm.partition", "allocator.slurm.account",
		"allocator.slurm.mode", "allocator.slurm.rest_url", "allocator.slurm.token_file"} {
		if !slices.Contains(keys, k) {
			t.Errorf("EnvKeys() = %v, lacks %s", keys, k)
		}
	}
	for name, sec := range map[string]map[string]any{
		"unknown key":         {"partitions": "x"},
		"bad mode":            {"mode": "soap"},
		"rest without url":    {"mode": "rest"},
		"bad url":             {"mode": "rest", "rest_url": "ftp://x"},
		"bad time limit":      {"time_limit": "soon"},
		"partition with ',':": {"partition": "a,b"},
	} {
		if err := Check("slurm", Env{StateDir: t.TempDir(), Section: sec}); !errors.Is(err, allocator.ErrInvalidArgument) {
			t.Errorf("%s: Check = %v, want ErrInvalidArgument", name, err)
		}
	}
	if err := Check("slurm", Env{Section: map[string]any{"partition": "debug", "time_limit": "2h", "mode": "rest", "rest_url": "http://127.0.0.1:6820"}}); err != nil {
		t.Errorf("Check(valid slurm section) = %v", err)
	}
}

func TestOpenDecodesSection(t *testing.T) {
	a, err := Open(t.Context(), "static", Env{StateDir: t.TempDir(), Section: map[string]any{
		"hosts": []any{map[string]any{"name": "h1", "address": "10.0.0.1", "slots": "3"}}, "lease": "90s",
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	hr := a.(allocator.HostReporter)
	hosts, err := hr.Hosts(t.Context())
	if err != nil || len(hosts) != 1 || hosts[0].Slots != 3 {
		t.Errorf("Hosts = %+v, %v; want h1 with 3 slots", hosts, err)
	}
}

func TestBadSections(t *testing.T) {
	for name, env := range map[string]Env{
		"unknown key":  {Section: map[string]any{"hostz": 1}},
		"bad lease":    {Section: map[string]any{"lease": "soon"}},
		"bad hosts":    {Section: map[string]any{"hosts": 7}},
		"invalid pool": {Section: map[string]any{"placement": "random"}},
	} {
		env.StateDir = t.TempDir()
		if err := Check("static", env); !errors.Is(err, allocator.ErrInvalidArgument) {
			t.Errorf("%s: Check = %v, want ErrInvalidArgument", name, err)
		}
	}
	if _, err := Open(t.Context(), "nope", Env{}); !errors.Is(err, allocator.ErrInvalidArgument) {
		t.Errorf("Open(nope) = %v, want ErrInvalidArgument", err)
	}
}
