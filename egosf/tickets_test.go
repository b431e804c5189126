package egosf

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/snowflock/snowflock/allocator"
	"github.com/snowflock/snowflock/egosf/config"
)

func openPool(t *testing.T) *Client {
	t.Helper()
	dir := t.TempDir()
	p := filepath.Join(dir, "pool.yaml")
	text := "state_dir: " + dir + "/state\nallocator:\n  static:\n    hosts:\n      - {name: h1, address: 10.0.0.1, slots: 2}\n      - {name: h2, address: 10.0.0.2, slots: 2}\n"
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := LoadConfig(config.Options{File: p})
	if err != nil {
		t.Fatal(err)
	}
	c, err := Open(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestTicketLifecycle(t *testing.T) {
	c := openPool(t)
	tk, err := c.RequestTicket(t.Context(), allocator.Request{Min: 3, Max: 3, Immediate: true})
	if err != nil {
		t.Fatal(err)
	}
	if tk.HostsString() != "h1:2,h2:1" {
		t.Errorf("hosts %q, want h1:2,h2:1", tk.HostsString())
	}
	if got := tk.Hostfile(); got != "h1 slots=2\nh2 slots=1\n" {
		t.Errorf("hostfile %q", got)
	}
	env := tk.Env("/tmp/hf")
	for _, want := range []string{"SF_ALLOC_ID=" + tk.ID, "SF_NSLOTS=3", "SF_HOSTS=h1:2,h2:1", "SF_HOSTFILE=/tmp/hf"} {
		if !slices.Contains(env, want) {
			t.Errorf("env %v lacks %s", env, want)
		}
	}
	list, err := c.List(t.Context())
	if err != nil || len(list) != 1 || list[0].ID != tk.ID {
		t.Fatalf("List = %+v, %v", list, err)
	}
	left, err := c.Release(t.Context(), tk.ID, allocator.Slot{Host: "h1", Count: 1})
	if err != nil || left == nil || left.Granted != 2 {
		t.Fatalf("partial Release = %+v, %v", left, err)
	}
	if left, err := c.Release(t.Context(), tk.ID); err != nil || left != nil {
		t.Fatalf("Release = %+v, %v", left, err)
	}
	if _, err := c.Get(t.Context(), tk.ID); !errors.Is(err, allocator.ErrUnknownAllocation) {
		t.Errorf("Get after release = %v", err)
	}
}

func TestHoldRenewsLease(t *testing.T) {
	c := openPool(t)
	const lease = time.Second
	tk, err := c.RequestTicket(t.Context(), allocator.Request{Min: 1, Max: 1, Immediate: true, Lease: lease})
	if err != nil {
		t.Fatal(err)
	}
	h := c.Hold(t.Context(), tk, lease)
	time.Sleep(3 * lease)
	if _, err := c.Get(t.Context(), tk.ID); err != nil {
		t.Fatalf("held ticket gone after 3 leases: %v", err)
	}
	select {
	case <-h.Lost():
		t.Fatalf("holder reports loss: %v", h.Err())
	default:
	}
	h.Stop()
	time.Sleep(2 * lease)
	if _, err := c.Get(t.Context(), tk.ID); !errors.Is(err, allocator.ErrUnknownAllocation) {
		t.Errorf("ticket still held %s after Stop: %v", 2*lease, err)
	}
}

// A ticket renewed elsewhere (a suspended sfalloc run extends its lease
// before stopping) is kept even though the holder's idea of its expiry has
// passed.
func TestHoldSurvivesStaleExpiry(t *testing.T) {
	c := openPool(t)
	tk, err := c.RequestTicket(t.Context(), allocator.Request{Min: 1, Max: 1, Immediate: true})
	if err != nil {
		t.Fatal(err)
	}
	stale := *tk
	stale.Expires = time.Now().Add(-time.Minute)
	h := c.Hold(t.Context(), &stale, time.Second)
	defer h.Stop()
	time.Sleep(1500 * time.Millisecond)
	select {
	case <-h.Lost():
		t.Fatalf("holder gave up a live ticket: %v", h.Err())
	default:
	}
	got, err := c.Get(t.Context(), tk.ID)
	if err != nil || time.Until(got.Expires) > 2*time.Second {
		t.Errorf("ticket %+v, %v; want it renewed with the 1s lease", got, err)
	}
}

func TestHoldReportsLoss(t *testing.T) {
	c := openPool(t)
	tk, err := c.RequestTicket(t.Context(), allocator.Request{Min: 1, Max: 1, Immediate: true})
	if err != nil {
		t.Fatal(err)
	}
	h := c.Hold(t.Context(), tk, time.Second)
	defer h.Stop()
	if _, err := c.Release(t.Context(), tk.ID); err != nil {
		t.Fatal(err)
	}
	select {
	case <-h.Lost():
		if !errors.Is(h.Err(), allocator.ErrUnknownAllocation) {
			t.Errorf("Err = %v, want ErrUnknownAllocation", h.Err())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("holder did not notice the ticket was released elsewhere")
	}
}

func TestLoadConfigChecksBackendSection(t *testing.T) {
	p := filepath.Join(t.TempDir(), "c.yaml")
	os.WriteFile(p, []byte("allocator:\n  static:\n    placement: random\n"), 0o600)
	if _, err := LoadConfig(config.Options{File: p}); !errors.Is(err, allocator.ErrInvalidArgument) {
		t.Errorf("bad placement = %v, want ErrInvalidArgument", err)
	}
	os.WriteFile(p, []byte("allocator:\n  statik:\n    hosts: [{name: a, slots: 1}]\n"), 0o600)
	if _, err := LoadConfig(config.Options{File: p}); !errors.Is(err, allocator.ErrInvalidArgument) || !strings.Contains(err.Error(), "allocator.statik") {
		t.Errorf("misspelt backend section = %v, want ErrInvalidArgument naming it", err)
	}
	t.Setenv("SNOWFLOCK_ALLOCATOR_BACKEND", "nope")
	os.WriteFile(p, []byte("state_dir: /tmp/x\n"), 0o600)
	if _, err := LoadConfig(config.Options{File: p}); !errors.Is(err, allocator.ErrInvalidArgument) {
		t.Errorf("unknown backend = %v, want ErrInvalidArgument", err)
	}
}
