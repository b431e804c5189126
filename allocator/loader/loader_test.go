package loader

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/snowflock/snowflock/allocator"
)

func TestBuiltinOpensInProcess(t *testing.T) {
	a, err := Open(t.Context(), "static", Env{StateDir: t.TempDir(), PluginPath: []string{t.TempDir()}})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if a.Info().Name != "static" {
		t.Errorf("Info = %+v", a.Info())
	}
	if _, ok := a.(interface{ PID() int }); ok {
		t.Errorf("the built-in static backend was opened as a plugin")
	}
}

func TestUnknownBackendNamesWhereItLooked(t *testing.T) {
	dir := t.TempDir()
	_, err := Open(t.Context(), "nosuch", Env{StateDir: t.TempDir(), PluginPath: []string{dir}})
	if !errors.Is(err, allocator.ErrInvalidArgument) {
		t.Fatalf("Open(nosuch) = %v, want ErrInvalidArgument", err)
	}
	for _, want := range []string{`"nosuch"`, "static", "sfalloc-plugin-nosuch", dir} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %s", err, want)
		}
	}
	if Exists("nosuch", []string{dir}) || !Exists("static", []string{dir}) {
		t.Errorf("Exists is wrong")
	}
}

func TestListShowsBuiltinsAndUnusablePlugins(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "sfalloc-plugin-static"), []byte("#!/bin/sh\n"), 0o755)
	os.WriteFile(filepath.Join(dir, "sfalloc-plugin-broken"), []byte("#!/bin/sh\nexit 1\n"), 0o755)
	os.WriteFile(filepath.Join(dir, "sfalloc-plugin-noexec"), []byte("#!/bin/sh\n"), 0o600)
	os.WriteFile(filepath.Join(dir, "unrelated"), []byte("#!/bin/sh\n"), 0o755)
	got := map[string]Entry{}
	kinds := map[string]int{}
	for _, e := range List(t.Context(), Env{PluginPath: []string{dir}}) {
		got[e.Kind+"/"+e.Name] = e
		kinds[e.Kind]++
	}
	if e, ok := got["built-in/static"]; !ok || e.Error != "" {
		t.Errorf("static not listed as a usable built-in: %+v", got)
	}
	for name, want := range map[string]string{"static": "shadowed", "broken": "start", "noexec": "not executable"} {
		if e := got["plugin/"+name]; !strings.Contains(e.Error, want) {
			t.Errorf("plugin %s listed as %+v, want an error saying %q", name, e, want)
		}
	}
	if kinds["plugin"] != 3 {
		t.Errorf("listed %d plugins, want 3: %+v", kinds["plugin"], got)
	}
}
