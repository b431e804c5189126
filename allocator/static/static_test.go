package static

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.etcd.io/bbolt"

	"github.com/snowflock/snowflock/allocator"
	"github.com/snowflock/snowflock/allocator/allocatortest"
)

func twoHosts(slots1, slots2 int) HostList {
	return HostList{
		{Name: "h1", Address: "10.0.0.1", Slots: slots1, Tags: []string{"big"}},
		{Name: "h2", Address: "10.0.0.2", Slots: slots2},
	}
}

func newPool(t *testing.T, cfg Config) *Allocator {
	t.Helper()
	if cfg.StateDir == "" {
		cfg.StateDir = t.TempDir()
	}
	a, err := New(cfg, WithPollInterval(20*time.Millisecond))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return a
}

func TestConformance(t *testing.T) {
	for _, p := range []Placement{Pack, Spread} {
		t.Run(string(p), func(t *testing.T) {
			allocatortest.Run(t, allocatortest.Harness{
				New: func(t *testing.T) allocator.Allocator {
					return newPool(t, Config{Hosts: twoHosts(3, 2), Placement: p})
				},
				Capacity: 5,
			})
		})
	}
}

func slotsOf(al *allocator.Allocation) map[string]int {
	m := map[string]int{}
	for _, s := range al.Slots {
		m[s.Host] += s.Count
	}
	return m
}

func mustRequest(t *testing.T, a *Allocator, req allocator.Request) *allocator.Allocation {
	t.Helper()
	req.Immediate = true
	al, err := a.Request(t.Context(), req)
	if err != nil {
		t.Fatalf("Request(%+v): %v", req, err)
	}
	return al
}

func TestPlacement(t *testing.T) {
	for _, tc := range []struct {
		placement Placement
		n         int
		want      map[string]int
	}{
		{Pack, 6, map[string]int{"h1": 4, "h2": 2}},
		{Pack, 3, map[string]int{"h1": 3}},
		{Spread, 6, map[string]int{"h1": 3, "h2": 3}},
		{Spread, 3, map[string]int{"h1": 2, "h2": 1}},
		{Spread, 8, map[string]int{"h1": 4, "h2": 4}},
	} {
		a := newPool(t, Config{Hosts: twoHosts(4, 4), Placement: tc.placement})
		got := slotsOf(mustRequest(t, a, allocator.Request{Min: tc.n, Max: tc.n}))
		if len(got) != len(tc.want) || got["h1"] != tc.want["h1"] || got["h2"] != tc.want["h2"] {
			t.Errorf("%s -n %d: got %v, want %v", tc.placement, tc.n, got, tc.want)
		}
	}
}

func TestSpreadFillsAroundBusyHost(t *testing.T) {
	a := newPool(t, Config{Hosts: twoHosts(4, 4), Placement: Spread})
	mustRequest(t, a, allocator.Request{Min: 3, Max: 3, ResReq: "big"}) // h1: 3 held
	got := slotsOf(mustRequest(t, a, allocator.Request{Min: 5, Max: 5}))
	if got["h1"] != 1 || got["h2"] != 4 {
		t.Errorf("spread around a busy host: got %v, want h1:1 h2:4", got)
	}
}

func TestResReqTags(t *testing.T) {
	a := newPool(t, Config{Hosts: twoHosts(2, 4)})
	got := slotsOf(mustRequest(t, a, allocator.Request{Min: 1, Max: 4, ResReq: "big"}))
	if got["h1"] != 2 || got["h2"] != 0 {
		t.Errorf("resreq big: got %v, want only h1's 2 slots", got)
	}
	_, err := a.Request(t.Context(), allocator.Request{Min: 3, Max: 3, ResReq: "big"})
	if !errors.Is(err, allocator.ErrNoneAvailable) || !strings.Contains(err.Error(), "tags big") {
		t.Errorf("resreq beyond tagged capacity = %v, want ErrNoneAvailable naming the tags", err)
	}
}

func TestExclusive(t *testing.T) {
	a := newPool(t, Config{Hosts: twoHosts(4, 4), Placement: Pack})
	mustRequest(t, a, allocator.Request{Min: 1, Max: 1}) // h1 now shared
	ex := mustRequest(t, a, allocator.Request{Min: 2, Max: 2, Exclusive: true})
	if got := slotsOf(ex); got["h2"] != 2 || len(got) != 1 {
		t.Fatalf("exclusive request got %v, want 2 slots on the unused h2", got)
	}
	// h2 has 2 free slots, but they belong to the exclusive allocation's host.
	_, err := a.Request(t.Context(), allocator.Request{Min: 4, Max: 4, Immediate: true})
	if !errors.Is(err, allocator.ErrNoneAvailable) {
		t.Fatalf("request needing the exclusive host's slots = %v, want ErrNoneAvailable", err)
	}
	got := slotsOf(mustRequest(t, a, allocator.Request{Min: 3, Max: 3}))
	if got["h1"] != 3 {
		t.Errorf("got %v, want the 3 free slots of h1", got)
	}
}

func TestLeaseExpiry(t *testing.T) {
	a := newPool(t, Config{Hosts: twoHosts(2, 2)})
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	events, err := a.Events(ctx)
	if err != nil {
		t.Fatalf("Events: %v", err)
	}
	short := mustRequest(t, a, allocator.Request{Min: 2, Max: 2, Lease: time.Second})
	long := mustRequest(t, a, allocator.Request{Min: 2, Max: 2, Lease: time.Hour})
	select {
	case ev := <-events:
		if ev.Kind != allocator.EventExpired || ev.AllocationID != short.ID || allocator.Total(ev.Slots) != 2 {
			t.Errorf("event %+v, want expiry of %s with its 2 slots", ev, short.ID)
		}
	case <-ctx.Done():
		t.Fatalf("no expiry event for %s", short.ID)
	}
	if _, err := a.Get(t.Context(), short.ID); !errors.Is(err, allocator.ErrUnknownAllocation) {
		t.Errorf("Get(expired) = %v, want ErrUnknownAllocation", err)
	}
	if _, err := a.Renew(t.Context(), short.ID, time.Hour); !errors.Is(err, allocator.ErrUnknownAllocation) {
		t.Errorf("Renew(expired) = %v, want ErrUnknownAllocation", err)
	}
	if _, err := a.Get(t.Context(), long.ID); err != nil {
		t.Errorf("Get(unexpired): %v", err)
	}
	// The expired slots are free again.
	mustRequest(t, a, allocator.Request{Min: 2, Max: 2})
}

func TestRenewKeepsAllocation(t *testing.T) {
	a := newPool(t, Config{Hosts: twoHosts(2, 2)})
	al := mustRequest(t, a, allocator.Request{Min: 1, Max: 1, Lease: time.Second})
	for range 4 {
		time.Sleep(500 * time.Millisecond)
		if _, err := a.Renew(t.Context(), al.ID, time.Second); err != nil {
			t.Fatalf("Renew: %v", err)
		}
	}
	if _, err := a.Get(t.Context(), al.ID); err != nil {
		t.Fatalf("renewed allocation gone after 2s with a 1s lease: %v", err)
	}
	if _, err := a.Renew(t.Context(), al.ID, 10*time.Millisecond); !errors.Is(err, allocator.ErrInvalidArgument) {
		t.Errorf("Renew with a lease under the minimum = %v, want ErrInvalidArgument", err)
	}
}

func TestPersistsAcrossReopen(t *testing.T) {
	dir := t.TempDir()
	cfg := Config{Hosts: twoHosts(4, 4), StateDir: dir}
	a := newPool(t, cfg)
	al := mustRequest(t, a, allocator.Request{Min: 5, Max: 5, Name: "job"})
	part, err := a.Release(t.Context(), al.ID, []allocator.Slot{{Host: "h1", Count: 1}})
	if err != nil {
		t.Fatal(err)
	}
	_ = a.Close()

	b := newPool(t, cfg) // a restarted holder
	list, err := b.List(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || list[0].ID != al.ID || list[0].Name != "job" || list[0].Granted != 4 {
		t.Fatalf("after reopening: %+v, want %s with 4 slots", list, al.ID)
	}
	if got, want := slotsOf(&list[0]), slotsOf(part); got["h1"] != want["h1"] || got["h2"] != want["h2"] {
		t.Errorf("after reopening slots %v, want %v", got, want)
	}
	// The reopened pool counts what is held: only 4 of 8 are free.
	if _, err := b.Request(t.Context(), allocator.Request{Min: 5, Max: 5, Immediate: true}); !errors.Is(err, allocator.ErrNoneAvailable) {
		t.Errorf("request for 5 with 4 free = %v, want ErrNoneAvailable", err)
	}
}

func TestFirstComeFirstServed(t *testing.T) {
	a := newPool(t, Config{Hosts: twoHosts(2, 2)})
	hog := mustRequest(t, a, allocator.Request{Min: 3, Max: 3})
	done := make(chan error, 1)
	go func() {
		_, err := a.Request(t.Context(), allocator.Request{Min: 4, Max: 4})
		done <- err
	}()
	// Wait until the big request is queued, then check that a small one
	// cannot jump ahead of it into the one free slot.
	deadline := time.Now().Add(10 * time.Second)
	for queued(t, a) == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("big request never queued")
		}
		time.Sleep(5 * time.Millisecond)
	}
	_, err := a.Request(t.Context(), allocator.Request{Min: 1, Max: 1, Immediate: true})
	if !errors.Is(err, allocator.ErrNoneAvailable) || !strings.Contains(err.Error(), "earlier request(s) waiting") {
		t.Fatalf("small request with a bigger one queued = %v, want ErrNoneAvailable naming the queue", err)
	}
	if _, err := a.Release(t.Context(), hog.ID, nil); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("queued request: %v", err)
	}
}

func TestWaiterForOtherHostsDoesNotBlock(t *testing.T) {
	a := newPool(t, Config{Hosts: twoHosts(2, 2)})
	mustRequest(t, a, allocator.Request{Min: 2, Max: 2, ResReq: "big"}) // h1 full
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = a.Request(ctx, allocator.Request{Min: 1, Max: 1, ResReq: "big"}) // waits for h1
	}()
	deadline := time.Now().Add(10 * time.Second)
	for queued(t, a) == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("request for h1 never queued")
		}
		time.Sleep(5 * time.Millisecond)
	}
	// A request that could also use h1 queues behind the waiter (no
	// backfill), even though h2 is free...
	if _, err := a.Request(t.Context(), allocator.Request{Min: 1, Max: 1, Immediate: true}); !errors.Is(err, allocator.ErrNoneAvailable) {
		t.Errorf("request that could use the waiter's host jumped the queue: %v", err)
	}
	// ...but one that can only use hosts the waiter cannot is served.
	b := newPool(t, Config{Hosts: HostList{{Name: "h1", Address: "10.0.0.1", Slots: 2, Tags: []string{"big"}}, {Name: "h2", Address: "10.0.0.2", Slots: 2, Tags: []string{"small"}}}})
	mustRequest(t, b, allocator.Request{Min: 2, Max: 2, ResReq: "big"})
	doneB := make(chan struct{})
	go func() {
		defer close(doneB)
		_, _ = b.Request(ctx, allocator.Request{Min: 1, Max: 1, ResReq: "big"})
	}()
	for queued(t, b) == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("request for h1 never queued")
		}
		time.Sleep(5 * time.Millisecond)
	}
	got := mustRequest(t, b, allocator.Request{Min: 1, Max: 1, ResReq: "small"})
	if got.Slots[0].Host != "h2" {
		t.Errorf("got %+v, want h2", got.Slots)
	}
	cancel()
	<-done
	<-doneB
}

func TestPoolDefinitionShared(t *testing.T) {
	dir := t.TempDir()
	a := newPool(t, Config{Hosts: twoHosts(2, 2), StateDir: dir})
	al := mustRequest(t, a, allocator.Request{Min: 1, Max: 1})
	// Another configuration cannot take over a pool with slots held: its
	// requests fail, naming both pools...
	b := newPool(t, Config{Hosts: twoHosts(4, 4), StateDir: dir})
	_, err := b.Request(t.Context(), allocator.Request{Min: 1, Max: 1, Immediate: true})
	if !errors.Is(err, allocator.ErrInvalidArgument) || !strings.Contains(err.Error(), "h1:2,h2:2") || !strings.Contains(err.Error(), "h1:4,h2:4") {
		t.Fatalf("request under another pool definition while slots are held = %v, want ErrInvalidArgument naming both", err)
	}
	// ...but it may list, report the recorded pool, and release.
	if list, err := b.List(t.Context()); err != nil || len(list) != 1 {
		t.Fatalf("List under another definition = %+v, %v", list, err)
	}
	if hosts, err := b.Hosts(t.Context()); err != nil || len(hosts) != 2 || hosts[0].Slots != 2 {
		t.Errorf("Hosts under another definition = %+v, %v; want the recorded pool (2 slots each)", hosts, err)
	}
	if _, err := b.Release(t.Context(), al.ID, nil); err != nil {
		t.Fatal(err)
	}
	// Once nothing is held, the next process adopts its configuration, and
	// the old one is refused.
	c := newPool(t, Config{Hosts: twoHosts(4, 4), StateDir: dir})
	mustRequest(t, c, allocator.Request{Min: 8, Max: 8})
	if _, err := a.Request(t.Context(), allocator.Request{Min: 1, Max: 1, Immediate: true}); !errors.Is(err, allocator.ErrInvalidArgument) {
		t.Errorf("request under a stale pool definition = %v, want ErrInvalidArgument", err)
	}
}

func TestDamagedDatabaseIsAnError(t *testing.T) {
	dir := t.TempDir()
	a := newPool(t, Config{Hosts: twoHosts(2, 2), StateDir: dir})
	mustRequest(t, a, allocator.Request{Min: 1, Max: 1})
	if err := os.Truncate(filepath.Join(dir, "static.db"), 8192); err != nil {
		t.Fatal(err)
	}
	for name, op := range map[string]func() error{
		"List": func() error { _, err := a.List(t.Context()); return err },
		"Request": func() error {
			_, err := a.Request(t.Context(), allocator.Request{Min: 1, Max: 1, Immediate: true})
			return err
		},
		"New": func() error { _, err := New(Config{Hosts: twoHosts(2, 2), StateDir: dir}); return err },
	} {
		if err := op(); !errors.Is(err, allocator.ErrBackendDown) {
			t.Errorf("%s on a truncated database = %v, want ErrBackendDown", name, err)
		}
	}
}

func TestSpreadMatchesRoundRobin(t *testing.T) {
	roundRobin := func(cands []candidate, n int) []int {
		take := make([]int, len(cands))
		for n > 0 {
			progress := false
			for i, c := range cands {
				if n > 0 && take[i] < c.free {
					take[i]++
					n--
					progress = true
				}
			}
			if !progress {
				break
			}
		}
		return take
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 2000 {
		cands := make([]candidate, 1+rng.IntN(6))
		for i := range cands {
			cands[i] = candidate{host: Host{Name: fmt.Sprint("h", i)}, free: rng.IntN(7)}
		}
		n := rng.IntN(30)
		want := roundRobin(cands, n)
		got := map[string]int{}
		for _, s := range place(cands, n, Spread) {
			got[s.Host] = s.Count
		}
		for i, c := range cands {
			if got[c.host.Name] != want[i] {
				t.Fatalf("spread of %d over %+v: got %v, want %v", n, cands, got, want)
			}
		}
	}
	// Huge requests cost no more than small ones.
	big := []candidate{{host: Host{Name: "a"}, free: 1 << 40}, {host: Host{Name: "b"}, free: 3}}
	if s := place(big, 1<<41, Spread); len(s) != 2 || s[0].Count != 1<<40 || s[1].Count != 3 {
		t.Errorf("huge spread: %+v", s)
	}
}

func TestAbandonedWaiterDoesNotBlock(t *testing.T) {
	a := newPool(t, Config{Hosts: twoHosts(2, 2)})
	mustRequest(t, a, allocator.Request{Min: 3, Max: 3})
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	if _, err := a.Request(ctx, allocator.Request{Min: 4, Max: 4}); !errors.Is(err, allocator.ErrTimeout) {
		t.Fatalf("want ErrTimeout, got %v", err)
	}
	// The timed-out waiter left the queue: the free slot is grantable now.
	mustRequest(t, a, allocator.Request{Min: 1, Max: 1})
}

func TestRefusesOtherFormat(t *testing.T) {
	dir := t.TempDir()
	newPool(t, Config{Hosts: twoHosts(1, 1), StateDir: dir})
	db, err := bbolt.Open(filepath.Join(dir, "static.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bbolt.Tx) error { return tx.Bucket(bucketMeta).Put(keyFormat, []byte("2")) }); err != nil {
		t.Fatal(err)
	}
	db.Close()
	if _, err := New(Config{Hosts: twoHosts(1, 1), StateDir: dir}); !errors.Is(err, allocator.ErrBackendDown) || !strings.Contains(err.Error(), "format 2") {
		t.Fatalf("New on a format-2 database = %v, want ErrBackendDown naming the format", err)
	}
}

func TestCorruptRecordIsAnError(t *testing.T) {
	dir := t.TempDir()
	a := newPool(t, Config{Hosts: twoHosts(1, 1), StateDir: dir})
	db, err := bbolt.Open(filepath.Join(dir, "static.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bbolt.Tx) error { return tx.Bucket(bucketAllocations).Put([]byte("x"), []byte("{not json")) }); err != nil {
		t.Fatal(err)
	}
	db.Close()
	if _, err := a.List(t.Context()); !errors.Is(err, allocator.ErrBackendDown) {
		t.Errorf("List over a corrupt record = %v, want ErrBackendDown", err)
	}
	if _, err := a.Request(t.Context(), allocator.Request{Min: 1, Max: 1, Immediate: true}); !errors.Is(err, allocator.ErrBackendDown) {
		t.Errorf("Request over a corrupt record = %v, want ErrBackendDown", err)
	}
}

func TestUnwritableStateDir(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := New(Config{Hosts: twoHosts(1, 1), StateDir: filepath.Join(file, "sub")}); !errors.Is(err, allocator.ErrBackendDown) {
		t.Errorf("New under a file = %v, want ErrBackendDown", err)
	}
}

func TestConfigValidate(t *testing.T) {
	good := Config{Hosts: twoHosts(1, 1)}
	if err := good.Validate(); err != nil {
		t.Fatalf("valid config: %v", err)
	}
	for name, c := range map[string]Config{
		"placement":      {Hosts: twoHosts(1, 1), Placement: "random"},
		"short lease":    {Hosts: twoHosts(1, 1), Lease: time.Millisecond},
		"duplicate host": {Hosts: HostList{{Name: "a", Slots: 1}, {Name: "a", Slots: 1}}},
		"empty name":     {Hosts: HostList{{Name: "", Slots: 1}}},
		"negative slots": {Hosts: HostList{{Name: "a", Slots: -1}}},
		"comma in name":  {Hosts: HostList{{Name: "a,b", Slots: 1}}},
		"NUL in name":    {Hosts: HostList{{Name: "a\x00b", Slots: 1}}},
		"escape in name": {Hosts: HostList{{Name: "a\x1b[31m", Slots: 1}}},
		"comment name":   {Hosts: HostList{{Name: "#c", Slots: 1}}},
		"space address":  {Hosts: HostList{{Name: "a", Address: "1.2.3.4 x", Slots: 1}}},
		"empty tag":      {Hosts: HostList{{Name: "a", Slots: 1, Tags: []string{""}}}},
	} {
		if err := c.Validate(); err == nil {
			t.Errorf("%s: Validate accepted %+v", name, c)
		}
	}
}

func TestHostListText(t *testing.T) {
	var l HostList
	if err := l.UnmarshalText([]byte("h1=10.0.0.1:4, h2:2,")); err != nil {
		t.Fatal(err)
	}
	if len(l) != 2 || l[0].Name != "h1" || l[0].Address != "10.0.0.1" || l[0].Slots != 4 || l[1].Name != "h2" || l[1].Slots != 2 || l[1].Address != "" {
		t.Errorf("parsed %+v", l)
	}
	for _, bad := range []string{"h1", "h1:x", "h1=1.2.3.4"} {
		if err := l.UnmarshalText([]byte(bad)); err == nil {
			t.Errorf("UnmarshalText(%q) accepted", bad)
		}
	}
}

func TestDefaultPoolIsThisHost(t *testing.T) {
	a := newPool(t, Config{})
	hosts, err := a.Hosts(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(hosts) != 1 || hosts[0].Slots < 1 || hosts[0].Host == "" {
		t.Errorf("default pool %+v, want this host with one slot per CPU", hosts)
	}
}

// queued counts the requests waiting in a's queue.
func queued(t *testing.T, a *Allocator) int {
	t.Helper()
	n := 0
	if err := a.view(t.Context(), func(tx *bbolt.Tx) error {
		n = tx.Bucket(bucketWaiters).Stats().KeyN
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return n
}
