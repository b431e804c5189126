package plugin

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/snowflock/snowflock/allocator"
)

// Found is a plugin binary on the plugin path.
type Found struct {
	Name string `json:"name"`
	Path string `json:"path"`
	// Err says why the binary cannot be used (not executable, writable by
	// anyone); nil when it can.
	Err error `json:"-"`
}

// Discover lists the plugins in dirs (sfalloc-plugin-NAME files), sorted
// by name; when two directories hold the same name, the first wins, as on
// PATH. Directories that do not exist are skipped.
func Discover(dirs []string) []Found {
	seen := map[string]bool{}
	var out []Found
	for _, dir := range dirs {
		ents, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		for _, e := range ents {
			name, ok := strings.CutPrefix(e.Name(), BinaryPrefix)
			if !ok || name == "" || seen[name] || strings.HasPrefix(name, ".") {
				continue
			}
			seen[name] = true
			p := filepath.Join(dir, e.Name())
			out = append(out, Found{Name: name, Path: p, Err: checkBinary(p)})
		}
	}
	slices.SortFunc(out, func(a, b Found) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// Find returns the path of plugin name's binary on dirs. The error names
// the directories searched, or what is wrong with the binary found.
func Find(name string, dirs []string) (string, error) {
	if name == "" || strings.ContainsAny(name, `/\`) || strings.HasPrefix(name, ".") {
		return "", fmt.Errorf("allocator backend name %q is not a plugin name: %w", name, allocator.ErrInvalidArgument)
	}
	for _, dir := range dirs {
		p := filepath.Join(dir, BinaryPrefix+name)
		if _, err := os.Lstat(p); errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err := checkBinary(p); err != nil {
			return "", fmt.Errorf("allocator plugin %s: %w", p, err)
		}
		return p, nil
	}
	return "", fmt.Errorf("no allocator plugin %s%s in the plugin path %s: %w", BinaryPrefix, name, describeDirs(dirs), allocator.ErrInvalidArgument)
}

func describeDirs(dirs []string) string {
	if len(dirs) == 0 {
		return "(empty)"
	}
	return strings.Join(dirs, ":")
}

// checkBinary says whether path can be run as a plugin: a regular file
// (after symbolic links), executable, and not writable by other users.
func checkBinary(path string) error {
	st, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("%v: %w", err, allocator.ErrInvalidArgument)
	}
	switch mode := st.Mode(); {
	case !mode.IsRegular():
		return fmt.Errorf("not a regular file (%s): %w", mode.Type(), allocator.ErrInvalidArgument)
	case mode.Perm()&0o111 == 0:
		return fmt.Errorf("not executable (mode %04o): %w", mode.Perm(), allocator.ErrInvalidArgument)
	case mode.Perm()&0o002 != 0:
		return fmt.Errorf("writable by every user (mode %04o): refusing to run it: %w", mode.Perm(), allocator.ErrInvalidArgument)
	}
	return nil
}
