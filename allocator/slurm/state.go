package slurm

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// releasedLog records the jobs this backend cancelled itself, so that Events
// (in this or another process sharing state_dir) tells them from jobs that
// Slurm or an administrator ended. A job is named by its ID and start time
// (IDs repeat across clusters). Records older than releasedKeep are pruned.
type releasedLog struct {
	dir string // "" keeps the record in memory only
	mu  sync.Mutex
	mem map[string]bool
}

// releasedKeep is how long a record is kept: longer than Slurm keeps an
// ended job in its queue (MinJobAge, 300 s by default).
const releasedKeep = time.Hour

func newReleasedLog(stateDir string) *releasedLog {
	l := &releasedLog{mem: map[string]bool{}}
	if stateDir != "" {
		l.dir = filepath.Join(stateDir, "slurm-released")
	}
	return l
}

// jobKey names a job across clusters: its ID and start time.
type jobKey struct {
	ID    int
	Start time.Time
}

func (k jobKey) String() string { return fmt.Sprintf("%d-%d", k.ID, k.Start.Unix()) }

// mark records jobs as cancelled by us. Failing to write the record only
// costs a spurious reclaim event, so errors are ignored.
func (l *releasedLog) mark(jobs ...jobKey) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, j := range jobs {
		l.mem[j.String()] = true
	}
	if l.dir == "" || len(jobs) == 0 {
		return
	}
	if err := os.MkdirAll(l.dir, 0o700); err != nil {
		return
	}
	for _, j := range jobs {
		_ = os.WriteFile(filepath.Join(l.dir, j.String()), nil, 0o600)
	}
	entries, _ := os.ReadDir(l.dir)
	for _, e := range entries {
		if info, err := e.Info(); err == nil && time.Since(info.ModTime()) > releasedKeep {
			_ = os.Remove(filepath.Join(l.dir, e.Name()))
		}
	}
}

// has says whether job j was cancelled by us.
func (l *releasedLog) has(j jobKey) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.mem[j.String()] {
		return true
	}
	if l.dir == "" {
		return false
	}
	_, err := os.Stat(filepath.Join(l.dir, j.String()))
	return err == nil
}
