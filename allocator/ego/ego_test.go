package ego_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/snowflock/snowflock/allocator"
	"github.com/snowflock/snowflock/allocator/allocatortest"
	"github.com/snowflock/snowflock/allocator/ego"
	"github.com/snowflock/snowflock/allocator/ego/wire"
	"github.com/snowflock/snowflock/allocator/plugin"
	"github.com/snowflock/snowflock/contrib/egosim/sim"
)

// Every test drives the EGO backend through a real plugin process (this
// test binary, started in plugin mode, serving exactly what
// cmd/sfalloc-plugin-ego serves) against the EGO simulator.
const modeEnv = "SF_EGO_TEST_PLUGIN"

func TestMain(m *testing.M) {
	if os.Getenv(modeEnv) != "" {
		ego.Plugin("test").Serve()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

const group = "rg"

// cluster is a simulated EGO of hosts h1 (3 slots) and h2 (2 slots).
func cluster(t *testing.T) (*sim.Sim, string) {
	t.Helper()
	s, err := sim.New(sim.Config{
		Users:     map[string]string{"alice": "secret-pw"},
		Tokens:    []string{"tok-123"},
		Consumers: map[string][]string{"/SnowFlock": {group}, "/Other": {"elsewhere"}},
		ResourceGroups: map[string][]wire.Host{
			group:       {{Name: "h1", Address: "10.0.0.1", Slots: 3}, {Name: "h2", Address: "10.0.0.2", Slots: 2}},
			"elsewhere": {{Name: "x1", Slots: 1}},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(func() { srv.Close(); s.Close() })
	return s, srv.URL
}

func pluginPath(t *testing.T) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), plugin.BinaryPrefix+"ego")
	if err := os.WriteFile(p, fmt.Appendf(nil, "#!/bin/sh\n%s=1 exec %q \"$@\"\n", modeEnv, exe), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func section(url string, kv ...string) map[string]any {
	s := map[string]any{"url": url, "user": "alice", "password": "secret-pw", "resource_group": group, "immediate_wait": "300ms"}
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] == "" {
			delete(s, kv[i])
		} else {
			s[kv[i]] = kv[i+1]
		}
	}
	return s
}

func launchErr(t *testing.T, sec map[string]any, state string) (allocator.Allocator, error) {
	t.Helper()
	a, err := plugin.Launch(t.Context(), "ego", pluginPath(t), sec, state, plugin.Options{})
	if err == nil {
		t.Cleanup(func() { a.Close() })
	}
	return a, err
}

func launch(t *testing.T, url string, kv ...string) allocator.Allocator {
	t.Helper()
	a, err := launchErr(t, section(url, kv...), t.TempDir())
	if err != nil {
		t.Fatalf("Launch: %v", err)
	}
	return a
}

func TestConformanceThroughPlugin(t *testing.T) {
	allocatortest.Run(t, allocatortest.Harness{
		New: func(t *testing.T) allocator.Allocator {
			_, url := cluster(t)
			return launch(t, url)
		},
		Capacity: 5,
	})
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	t.Cleanup(cancel)
	return c
}

// eventually polls cond until it holds or 10 s pass.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for start := time.Now(); time.Since(start) < 10*time.Second; time.Sleep(20 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("after 10s: %s", what)
}

func TestPartialGrantAndRelease(t *testing.T) {
	s, url := cluster(t)
	a := launch(t, url)
	first, err := a.Request(ctx(t), allocator.Request{Min: 2, Max: 2, Name: "first", Immediate: true})
	if err != nil {
		t.Fatal(err)
	}
	got, err := a.Request(ctx(t), allocator.Request{Min: 1, Max: 8, Name: "partial", Immediate: true})
	if err != nil {
		t.Fatal(err)
	}
	if got.Granted != 3 || got.Name != "partial" || got.Backend != "ego" {
		t.Fatalf("partial grant %+v, want the 3 free slots", got)
	}
	if s.Used() != 5 {
		t.Errorf("simulator holds %d slots, want 5", s.Used())
	}
	left, err := a.Release(ctx(t), got.ID, []allocator.Slot{{Host: got.Slots[0].Host, Count: 1}})
	if err != nil || left == nil || left.Granted != 2 {
		t.Fatalf("partial release: %+v, %v", left, err)
	}
	// Released slots are not given back to the allocation (AUTOADJ).
	time.Sleep(200 * time.Millisecond)
	if g, err := a.Get(ctx(t), got.ID); err != nil || g.Granted != 2 {
		t.Errorf("after partial release Get = %+v, %v; want 2 slots", g, err)
	}
	for _, id := range []string{first.ID, got.ID} {
		if left, err := a.Release(ctx(t), id, nil); err != nil || left != nil {
			t.Errorf("Release(%s) = %+v, %v", id, left, err)
		}
	}
	if s.Used() != 0 || len(s.Allocations()) != 0 {
		t.Errorf("after releasing everything the simulator holds %d slots in %d allocations", s.Used(), len(s.Allocations()))
	}
}

func TestSlotsAddedAfterFirstGrant(t *testing.T) {
	s, url := cluster(t)
	a := launch(t, url)
	got, err := a.Request(ctx(t), allocator.Request{Min: 2, Max: 8})
	if err != nil {
		t.Fatal(err)
	}
	if got.Granted != 5 {
		t.Fatalf("granted %d, want the 5 slots there are", got.Granted)
	}
	if err := s.AddHost(group, wire.Host{Name: "h3", Address: "10.0.0.3", Slots: 4}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the allocation gets 3 slots of the new host", func() bool {
		g, err := a.Get(ctx(t), got.ID)
		return err == nil && g.Granted == 8 && strings.Contains(allocator.FormatSlots(g.Slots), "h3:3")
	})
}

func TestReclaimHonouredBeforeDeadline(t *testing.T) {
	s, url := cluster(t)
	a := launch(t, url, "reclaim_margin", "300ms")
	ectx, cancel := context.WithCancel(ctx(t))
	defer cancel()
	events, err := a.Events(ectx)
	if err != nil {
		t.Fatal(err)
	}
	got, err := a.Request(ctx(t), allocator.Request{Min: 5, Max: 5})
	if err != nil {
		t.Fatal(err)
	}
	rc, err := s.Reclaim(got.ID, "h1", 2, 1500*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case ev := <-events:
		if ev.Kind != allocator.EventReclaimed || ev.AllocationID != got.ID || allocator.FormatSlots(ev.Slots) != "h1:2" || !ev.Deadline.Equal(rc.Deadline) {
			t.Errorf("event %+v; want the reclaim of h1:2 by %s", ev, rc.Deadline)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no reclaim event")
	}
	eventually(t, "the reclaim is settled", func() bool {
		r := s.Reclaims()[0]
		return !r.Released.IsZero() || r.Forced
	})
	r := s.Reclaims()[0]
	if r.Forced || !r.Released.Before(r.Deadline) {
		t.Fatalf("reclaim %+v: want released before its deadline, not forced", r)
	}
	g, err := a.Get(ctx(t), got.ID)
	if err != nil || g.Granted != 3 {
		t.Errorf("after the reclaim: %+v, %v; want 3 slots left", g, err)
	}
}

func TestCredentialsRefused(t *testing.T) {
	_, url := cluster(t)
	for name, sec := range map[string]map[string]any{
		"password": section(url, "password", "wrong-pw-xyz"),
		"user":     section(url, "user", "mallory"),
		"token":    section(url, "user", "", "password", "", "token", "wrong-pw-xyz"),
	} {
		_, err := launchErr(t, sec, t.TempDir())
		if !errors.Is(err, allocator.ErrInvalidArgument) || !strings.Contains(err.Error(), "refused") {
			t.Errorf("%s: Launch = %v; want the credentials refused", name, err)
		}
		if err != nil && strings.Contains(err.Error(), "wrong-pw-xyz") {
			t.Errorf("%s: the error shows the secret: %v", name, err)
		}
	}
	// The right token works.
	if _, err := launchErr(t, section(url, "user", "", "password", "", "token", "tok-123"), t.TempDir()); err != nil {
		t.Errorf("PlatformToken logon: %v", err)
	}
}

func TestUnknownConsumerOrResourceGroup(t *testing.T) {
	_, url := cluster(t)
	for name, tc := range map[string]struct{ sec map[string]any }{
		"/Nobody":   {section(url, "consumer", "/Nobody")},
		"nogroup":   {section(url, "resource_group", "nogroup")},
		"elsewhere": {section(url, "consumer", "/Other")},
	} {
		_, err := launchErr(t, tc.sec, t.TempDir())
		if !errors.Is(err, allocator.ErrInvalidArgument) || !strings.Contains(err.Error(), strings.TrimPrefix(name, "/")) {
			t.Errorf("%s: Launch = %v; want ErrInvalidArgument naming it", name, err)
		}
	}
	a := launch(t, url)
	if _, err := a.Request(ctx(t), allocator.Request{Min: 1, Max: 1, Consumer: "/Ghost"}); !errors.Is(err, allocator.ErrInvalidArgument) || !strings.Contains(err.Error(), "/Ghost") {
		t.Errorf("Request for consumer /Ghost = %v", err)
	}
}

func TestEndpointDownOrGarbage(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := "http://" + ln.Addr().String()
	ln.Close()
	garbage := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Write([]byte("<html>this is not EGO</html>"))
	}))
	defer garbage.Close()
	broken := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "boom", http.StatusInternalServerError)
	}))
	defer broken.Close()
	for url, want := range map[string]string{down: "unreachable", garbage.URL: "garbage", broken.URL: "500"} {
		start := time.Now()
		_, err := launchErr(t, section(url), t.TempDir())
		if !errors.Is(err, allocator.ErrBackendDown) || !strings.Contains(err.Error(), want) {
			t.Errorf("EGO at %s: Launch = %v; want ErrBackendDown saying %q", url, err, want)
		}
		if time.Since(start) > 10*time.Second {
			t.Errorf("EGO at %s: took %s to fail", url, time.Since(start))
		}
	}
}

func TestPluginKilledMidAllocation(t *testing.T) {
	s, url := cluster(t)
	state := t.TempDir()
	a, err := launchErr(t, section(url), state)
	if err != nil {
		t.Fatal(err)
	}
	full, err := a.Request(ctx(t), allocator.Request{Min: 5, Max: 5})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := a.Request(ctx(t), allocator.Request{Min: 2, Max: 2, Name: "doomed"})
		done <- err
	}()
	eventually(t, "the waiting request reaches EGO", func() bool { return len(s.Allocations()) == 2 })
	pid := a.(interface{ PID() int }).PID()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, allocator.ErrBackendDown) || !strings.Contains(err.Error(), "exited") {
			t.Errorf("request whose plugin was killed = %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("request did not return after its plugin was killed")
	}
	// The restarted plugin cancelled the allocation its dead predecessor
	// was waiting for; the delivered one is still held.
	eventually(t, "the unfinished allocation is cancelled", func() bool { return len(s.Allocations()) == 1 })
	if got := s.Allocations()[0]; got.ID != full.ID {
		t.Errorf("left with %s, want %s", got.ID, full.ID)
	}
	if _, err := a.Release(ctx(t), full.ID, nil); err != nil {
		t.Fatal(err)
	}
	if s.Used() != 0 {
		t.Errorf("%d slots still held", s.Used())
	}
}

// A restarted client finds its allocations again (registration returns
// them), and a silent client's allocations end after its time-to-live.
func TestClientRecoveryAndTimeToLive(t *testing.T) {
	s, url := cluster(t)
	a := launch(t, url, "client_name", "snowflock-test")
	got, err := a.Request(ctx(t), allocator.Request{Min: 2, Max: 2, Lease: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	a.Close()
	b := launch(t, url, "client_name", "snowflock-test", "client_ttl", "2s")
	if g, err := b.Get(ctx(t), got.ID); err != nil || g.Granted != 2 {
		t.Fatalf("restarted client: Get = %+v, %v", g, err)
	}
	b.Close()
	eventually(t, "EGO frees the silent client's allocation", func() bool { return s.Used() == 0 })
}
