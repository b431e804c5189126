package plugin_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/snowflock/snowflock/allocator"
	"github.com/snowflock/snowflock/allocator/allocatortest"
	"github.com/snowflock/snowflock/allocator/plugin"
	pb "github.com/snowflock/snowflock/allocator/plugin/proto"
	"github.com/snowflock/snowflock/allocator/plugin/sdk"
	"github.com/snowflock/snowflock/allocator/static"
)

// The test binary doubles as the plugins under test: started with
// SF_PLUGIN_TEST_MODE set, it serves instead of testing. Each mode is a
// real plugin process, driven through go-plugin like any other.
const modeEnv = "SF_PLUGIN_TEST_MODE"

func TestMain(m *testing.M) {
	if mode := os.Getenv(modeEnv); mode != "" {
		servePlugin(mode)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// staticBackend is the static pool served as a plugin; wrap changes its
// behaviour per mode.
func staticBackend(wrap func(allocator.Allocator) allocator.Allocator) sdk.Backend[static.Config] {
	return sdk.Backend[static.Config]{
		Name: "static", Description: "static pool through go-plugin (test)", Version: "test",
		Open: func(_ context.Context, cfg *static.Config, env sdk.Env) (allocator.Allocator, error) {
			cfg.StateDir = env.StateDir
			a, err := static.New(*cfg, static.WithPollInterval(20*time.Millisecond))
			if err != nil {
				return nil, err
			}
			return wrap(a), nil
		},
	}
}

func servePlugin(mode string) {
	same := func(a allocator.Allocator) allocator.Allocator { return a }
	switch mode {
	case "static":
		sdk.Serve(staticBackend(same))
	case "wrongversion":
		plugin.ServeVersions(staticBackend(same).Server(), 99)
	case "crash":
		sdk.Serve(staticBackend(func(a allocator.Allocator) allocator.Allocator { return crashing{a} }))
	case "slow":
		sdk.Serve(staticBackend(func(a allocator.Allocator) allocator.Allocator { return slow{a} }))
	case "hang":
		sdk.Serve(staticBackend(func(a allocator.Allocator) allocator.Allocator { return hanging{a} }))
	default:
		fmt.Fprintln(os.Stderr, "unknown test plugin mode", mode)
		os.Exit(2)
	}
}

// crashing dies in the middle of every request.
type crashing struct{ allocator.Allocator }

func (crashing) Request(context.Context, allocator.Request) (*allocator.Allocation, error) {
	os.Exit(3)
	return nil, nil
}

// slow grants, then takes a second to answer whatever the deadline.
type slow struct{ allocator.Allocator }

func (s slow) Request(ctx context.Context, r allocator.Request) (*allocator.Allocation, error) {
	a, err := s.Allocator.Request(ctx, r)
	time.Sleep(time.Second)
	return a, err
}

// hanging never answers Request nor List, whatever the deadline.
type hanging struct{ allocator.Allocator }

func (hanging) Request(context.Context, allocator.Request) (*allocator.Allocation, error) {
	select {}
}

func (hanging) List(context.Context) ([]allocator.Allocation, error) {
	select {}
}

// pluginDir makes a plugin directory holding sfalloc-plugin-NAME, a script
// that starts this test binary in the given mode.
func pluginDir(t *testing.T, name, mode string) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	script := fmt.Sprintf("#!/bin/sh\n%s=%s exec %q \"$@\"\n", modeEnv, mode, exe)
	if err := os.WriteFile(filepath.Join(dir, plugin.BinaryPrefix+name), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

var pool = map[string]any{
	"placement": "pack",
	"hosts": []any{
		map[string]any{"name": "h1", "address": "10.0.0.1", "slots": 3},
		map[string]any{"name": "h2", "address": "10.0.0.2", "slots": 2},
	},
}

func launch(t *testing.T, mode, stateDir string) allocator.Allocator {
	t.Helper()
	dir := pluginDir(t, "static", mode)
	path, err := plugin.Find("static", []string{dir})
	if err != nil {
		t.Fatal(err)
	}
	a, err := plugin.Launch(t.Context(), "static", path, pool, stateDir, plugin.Options{})
	if err != nil {
		t.Fatalf("Launch: %v", err)
	}
	t.Cleanup(func() { a.Close() })
	return a
}

func pid(t *testing.T, a allocator.Allocator) int {
	t.Helper()
	p, ok := a.(interface{ PID() int })
	if !ok || p.PID() == 0 {
		t.Fatalf("%T has no running plugin process", a)
	}
	return p.PID()
}

func TestConformanceThroughPlugin(t *testing.T) {
	allocatortest.Run(t, allocatortest.Harness{
		New:      func(t *testing.T) allocator.Allocator { return launch(t, "static", t.TempDir()) },
		Capacity: 5,
	})
}

func TestProxyLooksLocal(t *testing.T) {
	a := launch(t, "static", t.TempDir())
	if a.Info().Name != "static" || !strings.Contains(a.Info().Description, "go-plugin") {
		t.Errorf("Info = %+v", a.Info())
	}
	hr, ok := a.(allocator.HostReporter)
	if !ok {
		t.Fatalf("the static plugin's proxy is no HostReporter")
	}
	hosts, err := hr.Hosts(t.Context())
	if err != nil || len(hosts) != 2 || hosts[0].Slots+hosts[1].Slots != 5 {
		t.Errorf("Hosts = %+v, %v", hosts, err)
	}
	info := a.(interface{ PluginInfo() plugin.Info }).PluginInfo()
	if info.Version != "test" || len(info.APIVersions) == 0 || info.APIVersions[0] != plugin.APIVersion1 {
		t.Errorf("PluginInfo = %+v", info)
	}
}

func TestEventsThroughPlugin(t *testing.T) {
	a := launch(t, "static", t.TempDir())
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	ch, err := a.Events(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got, err := a.Request(ctx, allocator.Request{Min: 2, Max: 2, Immediate: true, Lease: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case ev := <-ch:
		if ev.Kind != allocator.EventExpired || ev.AllocationID != got.ID || allocator.Total(ev.Slots) != 2 {
			t.Errorf("event %+v, want expiry of %s's 2 slots", ev, got.ID)
		}
	case <-ctx.Done():
		t.Fatal("no expiry event through the plugin")
	}
	cancel()
	for range ch {
	}
}

func TestMissingAndUnusableBinaries(t *testing.T) {
	dir := t.TempDir()
	_, err := plugin.Find("nope", []string{dir})
	if !errors.Is(err, allocator.ErrInvalidArgument) || !strings.Contains(err.Error(), "sfalloc-plugin-nope") || !strings.Contains(err.Error(), dir) {
		t.Errorf("Find(missing) = %v; want the binary and directory named", err)
	}
	p := filepath.Join(dir, plugin.BinaryPrefix+"noexec")
	os.WriteFile(p, []byte("#!/bin/sh\n"), 0o644)
	if _, err := plugin.Find("noexec", []string{dir}); err == nil || !strings.Contains(err.Error(), "not executable") {
		t.Errorf("Find(not executable) = %v", err)
	}
	if _, err := plugin.Find("../x", []string{dir}); !errors.Is(err, allocator.ErrInvalidArgument) {
		t.Errorf("Find(../x) = %v", err)
	}
	found := plugin.Discover([]string{dir, "/no/such/dir"})
	if len(found) != 1 || found[0].Name != "noexec" || found[0].Err == nil {
		t.Errorf("Discover = %+v; want noexec listed with its fault", found)
	}
	// A binary that is no plugin at all.
	garbage := filepath.Join(dir, plugin.BinaryPrefix+"garbage")
	os.WriteFile(garbage, []byte("#!/bin/sh\necho hello, I am not a plugin\nexit 1\n"), 0o755)
	start := time.Now()
	_, err = plugin.Launch(t.Context(), "garbage", garbage, nil, t.TempDir(), plugin.Options{})
	if !errors.Is(err, allocator.ErrBackendDown) || !strings.Contains(err.Error(), garbage) {
		t.Errorf("Launch(garbage) = %v; want ErrBackendDown naming the binary", err)
	}
	if time.Since(start) > 5*time.Second {
		t.Errorf("Launch(garbage) took %s", time.Since(start))
	}
}

func TestWrongProtocolVersion(t *testing.T) {
	dir := pluginDir(t, "static", "wrongversion")
	_, err := plugin.Launch(t.Context(), "static", filepath.Join(dir, plugin.BinaryPrefix+"static"), pool, t.TempDir(), plugin.Options{})
	if !errors.Is(err, allocator.ErrBackendDown) || !strings.Contains(err.Error(), "version") {
		t.Fatalf("Launch(plugin of version 99) = %v; want ErrBackendDown naming the version", err)
	}
	t.Logf("as the user sees it: %v", err)
}

// held counts the slots held in the pool at stateDir, through a fresh plugin.
func held(t *testing.T, stateDir string) int {
	t.Helper()
	list, err := launch(t, "static", stateDir).List(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, a := range list {
		n += a.Granted
	}
	return n
}

func TestCrashMidRequest(t *testing.T) {
	state := t.TempDir()
	a := launch(t, "crash", state)
	first := pid(t, a)
	_, err := a.Request(t.Context(), allocator.Request{Min: 1, Max: 1, Immediate: true})
	if !errors.Is(err, allocator.ErrBackendDown) || !strings.Contains(err.Error(), "exited during Request") {
		t.Fatalf("Request on a crashing plugin = %v", err)
	}
	t.Logf("as the user sees it: %v", err)
	// The proxy started the plugin again: other calls work.
	if _, err := a.List(t.Context()); err != nil {
		t.Errorf("List after the crash: %v", err)
	}
	if pid(t, a) == first {
		t.Errorf("plugin pid %d unchanged after its crash", first)
	}
	if n := held(t, state); n != 0 {
		t.Errorf("%d slots held after a crash mid-request", n)
	}
}

func TestKilledWhileWaiting(t *testing.T) {
	state := t.TempDir()
	a := launch(t, "static", state)
	full, err := a.Request(t.Context(), allocator.Request{Min: 5, Max: 5, Immediate: true})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := a.Request(t.Context(), allocator.Request{Min: 2, Max: 2})
		done <- err
	}()
	time.Sleep(300 * time.Millisecond)
	if err := syscall.Kill(pid(t, a), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, allocator.ErrBackendDown) || !strings.Contains(err.Error(), "pid") {
			t.Errorf("waiting request whose plugin was killed = %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("waiting request did not return after its plugin was killed")
	}
	if _, err := a.Release(t.Context(), full.ID, nil); err != nil {
		t.Fatalf("Release through the restarted plugin: %v", err)
	}
	if n := held(t, state); n != 0 {
		t.Errorf("%d slots held after the killed request", n)
	}
}

func TestDeadlinePassedWhileGrantingIsReleased(t *testing.T) {
	state := t.TempDir()
	a := launch(t, "slow", state)
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	_, err := a.Request(ctx, allocator.Request{Min: 2, Max: 2, Immediate: true})
	if !errors.Is(err, allocator.ErrTimeout) {
		t.Fatalf("Request past its deadline = %v, want ErrTimeout", err)
	}
	if n := held(t, state); n != 0 {
		t.Errorf("%d slots held after a grant the host gave up on", n)
	}
}

// A grant whose answer was lost (the plugin died before the host heard it)
// is released when the host hands the token to the next Open.
func TestAbandonedTokenSettledOnOpen(t *testing.T) {
	state := t.TempDir()
	cfg := []byte(`{"hosts": [{"name": "h1", "address": "10.0.0.1", "slots": 4}]}`)
	s1 := staticBackend(func(a allocator.Allocator) allocator.Allocator { return a }).Server()
	if _, err := s1.Open(t.Context(), &pb.OpenRequest{ConfigJson: cfg, StateDir: state}); err != nil {
		t.Fatal(err)
	}
	if _, err := s1.Request(t.Context(), &pb.RequestRequest{Min: 3, Max: 3, Immediate: true, Token: "tok-1"}); err != nil {
		t.Fatal(err)
	}
	s2 := staticBackend(func(a allocator.Allocator) allocator.Allocator { return a }).Server()
	resp, err := s2.Open(t.Context(), &pb.OpenRequest{ConfigJson: cfg, StateDir: state, AbandonedTokens: []string{"tok-1", "never-granted"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.GetSettledTokens()) != 2 {
		t.Errorf("settled %v, want both tokens", resp.GetSettledTokens())
	}
	list, err := s2.List(t.Context(), &pb.ListRequest{})
	if err != nil || len(list.GetAllocations()) != 0 {
		t.Errorf("after settling: %v, %v; want nothing held", list.GetAllocations(), err)
	}
	if _, err := s2.Request(t.Context(), &pb.RequestRequest{Min: 1, Max: 1, Token: "../../etc"}); !errors.Is(plugin.FromStatus(err), allocator.ErrInvalidArgument) {
		t.Errorf("Request with a path as token = %v", err)
	}
}

func TestBadConfigurationNamesTheKey(t *testing.T) {
	dir := pluginDir(t, "static", "static")
	_, err := plugin.Launch(t.Context(), "static", filepath.Join(dir, plugin.BinaryPrefix+"static"), map[string]any{"hostz": 1}, t.TempDir(), plugin.Options{})
	if !errors.Is(err, allocator.ErrInvalidArgument) || !strings.Contains(err.Error(), "hostz") {
		t.Errorf("Launch with an unknown key = %v", err)
	}
}

func TestHungPluginIsStopped(t *testing.T) {
	dir := pluginDir(t, "static", "hang")
	opts := plugin.Options{CallTimeout: 500 * time.Millisecond, AbandonTimeout: 500 * time.Millisecond}
	state := t.TempDir()
	a, err := plugin.Launch(t.Context(), "static", filepath.Join(dir, plugin.BinaryPrefix+"static"), pool, state, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	first := pid(t, a)
	start := time.Now()
	if _, err := a.List(t.Context()); !errors.Is(err, allocator.ErrBackendDown) || !strings.Contains(err.Error(), "no answer") {
		t.Errorf("List on a hung plugin = %v", err)
	}
	if time.Since(start) > 5*time.Second {
		t.Errorf("List on a hung plugin took %s", time.Since(start))
	}
	// The hung process was stopped (go-plugin reaps it).
	for start := time.Now(); syscall.Kill(first, 0) == nil; time.Sleep(20 * time.Millisecond) {
		if time.Since(start) > 5*time.Second {
			t.Fatalf("hung plugin pid %d still running", first)
		}
	}
	// The next call starts the plugin again.
	if _, err := a.Get(t.Context(), "none"); !errors.Is(err, allocator.ErrUnknownAllocation) {
		t.Fatalf("Get after the restart = %v", err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Second)
	defer cancel()
	if _, err := a.Request(ctx, allocator.Request{Min: 1, Max: 1}); !errors.Is(err, allocator.ErrTimeout) {
		t.Errorf("Request on a hung plugin = %v, want ErrTimeout", err)
	}
	// The request the plugin never answered is recorded for release.
	if ents, _ := os.ReadDir(filepath.Join(state, "static.abandoned")); len(ents) != 1 {
		t.Errorf("%d abandoned requests recorded, want 1", len(ents))
	}
}
