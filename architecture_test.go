package snowflock_test

// The project's import boundaries (docs/ARCHITECTURE.md, "Boundaries"),
// checked on every test run.

import (
	"bytes"
	"encoding/json"
	"go/ast"
	"go/parser"
	"go/token"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

const module = "github.com/snowflock/snowflock"

type pkg struct {
	ImportPath   string
	Name         string
	Dir          string
	Imports      []string
	TestImports  []string
	XTestImports []string
	GoFiles      []string
	CgoFiles     []string
	TestGoFiles  []string
	XTestGoFiles []string
}

func packages(t *testing.T) []pkg {
	t.Helper()
	out, err := exec.Command("go", "list", "-json", "./...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	var pkgs []pkg
	dec := json.NewDecoder(bytes.NewReader(out))
	for dec.More() {
		var p pkg
		if err := dec.Decode(&p); err != nil {
			t.Fatal(err)
		}
		pkgs = append(pkgs, p)
	}
	if len(pkgs) == 0 {
		t.Fatal("go list found no packages")
	}
	return pkgs
}

// rel is a package's path inside the module ("allocator/static").
func rel(importPath string) string {
	return strings.TrimPrefix(strings.TrimPrefix(importPath, module), "/")
}

// allocatorBackend returns the backend an allocator package belongs to, or
// "" for the shared allocator packages.
func allocatorBackend(p string) string {
	parts := strings.Split(rel(p), "/")
	if len(parts) < 2 || parts[0] != "allocator" {
		return ""
	}
	switch parts[1] {
	case "builtin", "allocatortest", "plugin":
		return ""
	}
	return parts[1]
}

func TestImportBoundaries(t *testing.T) {
	for _, p := range packages(t) {
		me := rel(p.ImportPath)
		for _, imp := range slices.Concat(p.Imports, p.TestImports, p.XTestImports) {
			if !strings.HasPrefix(imp, module+"/") {
				continue
			}
			dep := rel(imp)
			top, depTop := strings.Split(me, "/")[0], strings.Split(dep, "/")[0]
			switch {
			case depTop == "cmd":
				t.Errorf("%s imports %s: nothing imports a command", me, dep)
			case allocatorBackend(imp) != "" && allocatorBackend(p.ImportPath) != "" && allocatorBackend(imp) != allocatorBackend(p.ImportPath):
				t.Errorf("%s imports %s: a backend never imports another backend", me, dep)
			case top == "clonesvc" && (depTop == "xenbackend" || depTop == "kvmbackend"):
				t.Errorf("%s imports %s: clonesvc sees hypervisors only through its Backend interface", me, dep)
			case (top == "xenbackend" && depTop == "kvmbackend") || (top == "kvmbackend" && depTop == "xenbackend"):
				t.Errorf("%s imports %s: a backend never imports another backend", me, dep)
			}
		}
		if len(p.CgoFiles) > 0 && !strings.HasPrefix(me, "bindings/c") && !strings.HasPrefix(me, "xenbackend") {
			t.Errorf("%s uses cgo: only bindings/c (and one build-tagged xenbackend file) may", me)
		}
		switch p.Name {
		case "util", "utils", "common", "helpers", "misc":
			t.Errorf("package %s is named %q: name packages for their one concern", me, p.Name)
		}
	}
}

// Only *_unsafe.go files import unsafe, and they hold only syscall shims.
func TestUnsafeOnlyInShims(t *testing.T) {
	fset := token.NewFileSet()
	for _, p := range packages(t) {
		for _, name := range slices.Concat(p.GoFiles, p.CgoFiles, p.TestGoFiles, p.XTestGoFiles) {
			file := filepath.Join(p.Dir, name)
			f, err := parser.ParseFile(fset, file, nil, parser.ImportsOnly|parser.ParseComments)
			if err != nil {
				t.Fatal(err)
			}
			if generated(f) {
				continue // protoc's output: not ours to shape
			}
			for _, imp := range f.Imports {
				if v, _ := strconv.Unquote(imp.Path.Value); v == "unsafe" && !strings.HasSuffix(name, "_unsafe.go") && !strings.HasPrefix(rel(p.ImportPath), "bindings/c") {
					t.Errorf("%s imports unsafe: move the shim into a *_unsafe.go file", path.Join(rel(p.ImportPath), name))
				}
			}
		}
	}
}

// generated reports whether f carries Go's "Code generated ... DO NOT
// EDIT." marker (https://go.dev/s/generatedcode).
func generated(f *ast.File) bool {
	for _, c := range f.Comments {
		for _, l := range c.List {
			if strings.HasPrefix(l.Text, "// Code generated ") && strings.HasSuffix(l.Text, " DO NOT EDIT.") {
				return true
			}
		}
	}
	return false
}
