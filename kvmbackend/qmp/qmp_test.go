package qmp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// startQEMU runs an empty QEMU (no machine, paused) with a QMP socket and
// returns the socket's path and the process. The process is killed and
// reaped when the test ends.
func startQEMU(t *testing.T) (string, *exec.Cmd) {
	t.Helper()
	bin, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		t.Fatalf("qemu-system-x86_64 not found (%v): install it with `make deps` or `apt-get install --no-install-recommends qemu-system-x86`", err)
	}
	sock := filepath.Join(t.TempDir(), "qmp.sock")
	cmd := exec.Command(bin, "-machine", "none", "-nodefaults", "-no-user-config", "-display", "none", "-S",
		"-qmp", "unix:"+sock+",server=on,wait=off")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start qemu: %v", err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := os.Stat(sock); err == nil {
			return sock, cmd
		}
		select {
		case <-exited:
			t.Fatalf("qemu exited before its QMP socket appeared: %s", stderr.String())
		case <-time.After(5 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("QMP socket %s did not appear in 30s", sock)
		}
	}
}

func dial(t *testing.T) (*Monitor, *exec.Cmd) {
	t.Helper()
	sock, cmd := startQEMU(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// QEMU creates the socket file (bind) a moment before it listens.
	for {
		m, err := Dial(ctx, sock)
		if err == nil {
			t.Cleanup(func() { m.Close() })
			return m, cmd
		}
		if !errors.Is(err, syscall.ECONNREFUSED) || ctx.Err() != nil {
			t.Fatal(err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestExecute(t *testing.T) {
	m, _ := dial(t)
	ctx := context.Background()

	var status struct {
		Status  string `json:"status"`
		Running bool   `json:"running"`
	}
	if err := m.Execute(ctx, "query-status", nil, &status); err != nil {
		t.Fatal(err)
	}
	if status.Status != "prelaunch" || status.Running {
		t.Errorf("query-status of a -S QEMU = %+v, want prelaunch, not running", status)
	}

	// Arguments are passed: qom-get of a property of the machine.
	var typ string
	if err := m.Execute(ctx, "qom-get", map[string]string{"path": "/machine", "property": "type"}, &typ); err != nil {
		t.Fatal(err)
	}
	if typ != "none-machine" {
		t.Errorf("machine type %q, want none-machine", typ)
	}

	// A reply far larger than 64 KiB.
	var schema json.RawMessage
	if err := m.Execute(ctx, "query-qmp-schema", nil, &schema); err != nil {
		t.Fatal(err)
	}
	if len(schema) < 64<<10 {
		t.Errorf("query-qmp-schema reply is %d bytes; the test wants one over 64 KiB", len(schema))
	}
	var entries []map[string]any
	if err := json.Unmarshal(schema, &entries); err != nil || len(entries) < 100 {
		t.Errorf("schema: %d entries, %v", len(entries), err)
	}
}

func TestErrorReply(t *testing.T) {
	m, _ := dial(t)
	err := m.Execute(context.Background(), "no-such-command", nil, nil)
	var qe *Error
	if !errors.As(err, &qe) {
		t.Fatalf("unknown command: %v, want *qmp.Error", err)
	}
	if qe.Class != "CommandNotFound" || qe.Desc == "" {
		t.Errorf("error %+v, want class CommandNotFound and a description", qe)
	}
	// The connection still works after an error.
	if err := m.Execute(context.Background(), "query-status", nil, nil); err != nil {
		t.Fatal(err)
	}
}

func TestConcurrentRepliesMatch(t *testing.T) {
	m, _ := dial(t)
	var wg sync.WaitGroup
	errs := make(chan error, 8*25)
	for g := range 8 {
		wg.Go(func() {
			for i := range 25 {
				n := g*1000 + i + 1
				var out string
				err := m.Execute(context.Background(), "human-monitor-command",
					map[string]string{"command-line": fmt.Sprintf("print %d", n)}, &out)
				if err != nil {
					errs <- err
					return
				}
				if got := strings.TrimSpace(out); got != fmt.Sprintf("%#x", n) {
					errs <- fmt.Errorf("print %d answered %q", n, got)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestEvents(t *testing.T) {
	m, _ := dial(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	all := m.Subscribe(1) // tiny buffer: must drop, never block the reader
	defer all.Close()
	resume := m.Subscribe(4, "RESUME")
	defer resume.Close()
	if err := m.Execute(ctx, "cont", nil, nil); err != nil {
		t.Fatal(err)
	}
	ev, err := resume.Next(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if ev.Name != "RESUME" || ev.Time.IsZero() {
		t.Errorf("event %+v, want RESUME with a timestamp", ev)
	}

	// WaitEvent sees an event caused after it started waiting; the reader
	// keeps serving commands while nobody drains `all`.
	got := make(chan error, 1)
	go func() {
		ev, err := m.WaitEvent(ctx, "STOP")
		if err == nil && ev.Name != "STOP" {
			err = fmt.Errorf("got %s", ev.Name)
		}
		got <- err
	}()
	for i := 0; ; i++ {
		if err := m.Execute(ctx, "stop", nil, nil); err != nil {
			t.Fatal(err)
		}
		if err := m.Execute(ctx, "cont", nil, nil); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-got:
			if err != nil {
				t.Fatal(err)
			}
			if all.Dropped() == 0 {
				t.Errorf("a full subscription dropped no events")
			}
			return
		case <-time.After(10 * time.Millisecond):
		}
		if i > 1000 {
			t.Fatal("WaitEvent never saw STOP")
		}
	}
}

func TestDoneWhenQEMUDies(t *testing.T) {
	m, cmd := dial(t)
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-m.Done():
	case <-time.After(30 * time.Second):
		t.Fatal("Done not closed 30s after QEMU was killed")
	}
	err := m.Execute(context.Background(), "query-status", nil, nil)
	if !errors.Is(err, ErrClosed) {
		t.Errorf("Execute after QEMU died: %v, want ErrClosed", err)
	}
	if _, err := m.WaitEvent(context.Background(), "STOP"); !errors.Is(err, ErrClosed) {
		t.Errorf("WaitEvent after QEMU died: %v, want ErrClosed", err)
	}
}

func TestContextCancel(t *testing.T) {
	m, _ := dial(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := m.Execute(ctx, "query-status", nil, nil); !errors.Is(err, context.Canceled) {
		// The reply may win the race with the cancelled context only if it
		// arrived first; a cancelled context must then still not hang.
		if err != nil {
			t.Errorf("Execute with cancelled context: %v", err)
		}
	}
	if _, err := m.WaitEvent(ctx, "STOP"); !errors.Is(err, context.Canceled) {
		t.Errorf("WaitEvent with cancelled context: %v, want context.Canceled", err)
	}
	// The monitor still works.
	if err := m.Execute(context.Background(), "query-status", nil, nil); err != nil {
		t.Fatal(err)
	}
}

func TestDialNotQMP(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := Dial(ctx, filepath.Join(t.TempDir(), "absent.sock")); err == nil {
		t.Fatal("Dial of a missing socket succeeded")
	}
}
