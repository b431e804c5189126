package plugin

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"
)

// tokenPattern is what a request token may look like: it names a file.
var tokenPattern = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// validToken checks a token from the other side of the boundary.
func validToken(tok string) error {
	if !tokenPattern.MatchString(tok) {
		return fmt.Errorf("request token %q: want 1-64 letters, digits, '-' or '_'", tok)
	}
	return nil
}

// tokenDir is a directory of small files named by request token: the
// plugin's journal of grants (token -> allocation ID) and the host's list of
// abandoned tokens. Each file is written whole (temporary file, fsync,
// rename), so a crash leaves either the old state or the new.
type tokenDir struct{ dir string }

func (d tokenDir) put(tok, content string) error {
	if err := validToken(tok); err != nil {
		return err
	}
	if err := os.MkdirAll(d.dir, 0o700); err != nil {
		return err
	}
	f, err := os.CreateTemp(d.dir, ".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := f.WriteString(content); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), filepath.Join(d.dir, tok))
}

// get returns a token's content; ok is false when there is none.
func (d tokenDir) get(tok string) (content string, ok bool, err error) {
	if err := validToken(tok); err != nil {
		return "", false, err
	}
	b, err := os.ReadFile(filepath.Join(d.dir, tok))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return "", false, nil
	case err != nil:
		return "", false, err
	}
	return strings.TrimSpace(string(b)), true, nil
}

func (d tokenDir) remove(tok string) error {
	if err := validToken(tok); err != nil {
		return err
	}
	err := os.Remove(filepath.Join(d.dir, tok))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}

// list returns the tokens recorded.
func (d tokenDir) list() ([]string, error) {
	ents, err := os.ReadDir(d.dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var toks []string
	for _, e := range ents {
		if validToken(e.Name()) == nil && e.Type().IsRegular() {
			toks = append(toks, e.Name())
		}
	}
	return toks, nil
}

// prune removes entries older than age.
func (d tokenDir) prune(age time.Duration) {
	ents, _ := os.ReadDir(d.dir)
	for _, e := range ents {
		if info, err := e.Info(); err == nil && time.Since(info.ModTime()) > age {
			os.Remove(filepath.Join(d.dir, e.Name()))
		}
	}
}
