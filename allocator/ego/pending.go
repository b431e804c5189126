package ego

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// pendingDir records the requests in progress, one file per request token,
// each locked (flock) by the process waiting for it. A file that nobody
// locks belongs to a process that died mid-request: its allocation, if EGO
// made one, was never handed to anyone and is cancelled on the next start.
type pendingDir struct{ dir string }

// pending is a request in progress.
type pending struct {
	f    *os.File
	path string
}

// create records request tok, locked by this process.
func (d pendingDir) create(tok string) (*pending, error) {
	if err := os.MkdirAll(d.dir, 0o700); err != nil {
		return nil, err
	}
	// Lock a temporary file, then rename it into place, so that no other
	// process ever sees the record unlocked.
	f, err := os.CreateTemp(d.dir, ".new-*")
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		os.Remove(f.Name())
		return nil, err
	}
	path := filepath.Join(d.dir, tok)
	if err := os.Rename(f.Name(), path); err != nil {
		f.Close()
		os.Remove(f.Name())
		return nil, err
	}
	return &pending{f: f, path: path}, nil
}

// done forgets the request.
func (p *pending) done() {
	os.Remove(p.path)
	p.f.Close()
}

// abandoned returns the tokens of requests whose process died, each with a
// function that forgets it.
func (d pendingDir) abandoned() (map[string]func(), error) {
	ents, err := os.ReadDir(d.dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", d.dir, err)
	}
	out := map[string]func(){}
	for _, e := range ents {
		path := filepath.Join(d.dir, e.Name())
		f, err := os.Open(path)
		if err != nil {
			continue
		}
		if syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) != nil {
			f.Close() // its process is alive
			continue
		}
		if e.Name()[0] == '.' {
			os.Remove(path) // a record never put in place
			f.Close()
			continue
		}
		out[e.Name()] = func() { os.Remove(path); f.Close() }
	}
	return out, nil
}
